//! Operations: the admin endpoint's metrics checked against what the
//! simulator sent, `/ready` following the broker and CVP, JSON logs, and
//! the deployment files under `deploy/` exercised as far as this machine
//! allows (no systemd, Docker or Kubernetes here).

mod support;

use std::path::Path;
use support::{
    config, eventually, free_port, http_get, metric, repo_root, run_to_end, run_to_end_with_env,
    sample_simulator, transform, Broker, Host, Record,
};

/// The config of the metrics test: severity-filter (error and up), then
/// the stock transform, UPDATED and DELETED forwarded, admin endpoint on.
fn ops_config(cvp: &str, broker: &Broker, topic: &str, admin: &str) -> String {
    let transforms = format!(
        "{}{}",
        transform(
            "filter",
            "severity_filter",
            "    config: { min_severity: error }\n"
        ),
        transform("title-to-key", "title_to_key", "")
    );
    let extra =
        "    token: tok-ops\n    tls: { enabled: false }\n    operations: [updated, deleted]";
    format!(
        "{}admin:\n  listen: \"{admin}\"\n",
        config(cvp, extra, &transforms, broker, topic)
    )
}

/// GNU `timeout` sends SIGTERM to the process and to its group: the two
/// arrive together and are one request to stop, which drains, flushes and
/// exits 0 (not the "second signal" exit 130 that skips the flush and the
/// final checkpoint). The broker is frozen with records in flight, so the
/// drain lasts (up to `flush_timeout`) and the second signal finds the
/// process still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sigterms_together_are_one_clean_stop() {
    let broker = Broker::start();
    broker.create_topic("twice", 1);
    let (_sim, addr) = support::simulator(cvp_simulator::SimOptions {
        token: Some("tok-ops".into()),
        initial: 5,
        updates: 100_000,
        rate: 200.0,
        ..cvp_simulator::SimOptions::default()
    })
    .await;
    let admin = format!("127.0.0.1:{}", free_port());
    let yaml = ops_config(&addr, &broker, "twice", &admin).replace(
        "    topic: twice\n",
        "    topic: twice\n    flush_timeout: 3s\n",
    );
    let host = Host::run(&yaml, &[]);
    host.wait_for_log("CVP initial sync complete");
    broker.freeze();
    // Live updates keep coming at 200/s: records are now in flight.
    eventually(&host, "records waiting for the frozen broker", || {
        let (_, body) = http_get(&admin, "/metrics");
        metric(&body, "cvp_stream_kafka_queue_depth").filter(|d| *d > 0.0)
    });
    host.signal(libc::SIGTERM);
    // The second as soon as the first is being handled, while the sink
    // drains: without the fix it counts as "exit now".
    host.wait_for_log("shutting down");
    host.signal(libc::SIGTERM);
    let (status, log) = host.wait_exit();
    broker.thaw();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(!log.contains("second signal"), "{log}");
    assert!(log.contains("stopped"), "no final summary: {log}");
}

/// Clients that connect to the admin endpoint and send nothing (a slow
/// loris; 2,000 of them once held every descriptor of the process): each
/// is closed when it has not sent its headers within the header timeout,
/// and at most the connection cap (64) is held at once; the rest wait in
/// the kernel's queue, not among the service's descriptors. Probes answer
/// once the idle clients are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_cannot_exhaust_the_admin_endpoint() {
    use std::io::Read;
    let broker = Broker::start();
    broker.create_topic("loris", 1);
    let (_sim, addr) = sample_simulator("tok-ops").await;
    let admin = format!("127.0.0.1:{}", free_port());
    let host = Host::run(&ops_config(&addr, &broker, "loris", &admin), &[]);
    eventually(&host, "/ready 200", || {
        (http_get(&admin, "/ready").0 == 200).then_some(())
    });
    let before = host.open_files();
    let mut idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&admin).unwrap())
        .collect();
    // Most of the cap's worth accepted (`before` may have counted a
    // connection librdkafka or a probe has closed since).
    eventually(&host, "connections accepted", || {
        (host.open_files() >= before + 48).then_some(())
    });
    // The first client is among those accepted; the server closes it
    // after the header timeout (5 s).
    idle[0]
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = idle[0].read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "an idle client was not closed: {read:?}"
    );
    let held = host.open_files();
    assert!(
        held <= before + 64 + 16,
        "{held} descriptors open with 200 idle clients, {before} before"
    );
    idle.clear();
    eventually(&host, "/health after the idle clients left", || {
        (http_get(&admin, "/health").0 == 200).then_some(())
    });
    host.stop_cleanly();
}

/// A checkpoint directory that goes away mid-run (an unmounted volume, a
/// cleaned-up /var/lib): /ready says so rather than 200, the failures are
/// counted, and the run's exit status is not success (before, each write
/// logged an error, /ready stayed 200 and the exit was 0 with nothing
/// saved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_be_written_shows_in_ready_and_the_exit_status() {
    let broker = Broker::start();
    broker.create_topic("cpfail", 1);
    let (_sim, addr) = support::simulator(cvp_simulator::SimOptions {
        token: Some("tok-ops".into()),
        initial: 5,
        updates: 100_000,
        rate: 200.0,
        ..cvp_simulator::SimOptions::default()
    })
    .await;
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cp = state.join("checkpoint.json");
    let yaml = format!(
        "{}checkpoint:\n  path: {:?}\n  interval: 100ms\n",
        ops_config(&addr, &broker, "cpfail", &admin),
        cp.display().to_string()
    );
    let host = Host::run(&yaml, &[]);
    eventually(&host, "a first checkpoint", || cp.exists().then_some(()));
    eventually(&host, "/ready 200", || {
        (http_get(&admin, "/ready").0 == 200).then_some(())
    });
    std::fs::remove_dir_all(&state).unwrap();
    let body = eventually(&host, "/ready 503", || {
        let (status, body) = http_get(&admin, "/ready");
        (status == 503).then_some(body)
    });
    assert_eq!(
        body,
        "not ready: the checkpoint cannot be written (see the log)\n"
    );
    let (_, text) = http_get(&admin, "/metrics");
    assert!(metric(&text, "cvp_stream_checkpoint_write_failures_total") >= Some(1.0));
    let (status, log) = host.stop();
    assert!(!status.success(), "exit 0 with nothing saved:\n{log}");
    assert!(
        log.contains("the last checkpoint could not be written to"),
        "{log}"
    );
}

/// Every counter against what the sample recording holds: 2 INITIAL, 6
/// UPDATED, 1 DELETED; of the 7 forwarded, the filter drops the 4 below
/// error and 3 records reach Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_simulator_sent() {
    let broker = Broker::start();
    broker.create_topic("ops", 1);
    let (_sim, addr) = sample_simulator("tok-ops").await;
    let admin = format!("127.0.0.1:{}", free_port());
    let host = Host::run(&ops_config(&addr, &broker, "ops", &admin), &[]);

    let got = broker.consume(&host, "ops", 3);
    let titles: Vec<String> = got.iter().map(Record::key_text).collect();
    assert_eq!(
        titles,
        [
            "Interface Exceeded Outbound Utilization Threshold",
            "Interface Exceeded Inbound Utilization Threshold",
            "BGP Peer Session Down",
        ]
    );

    // The consumer saw the records; the host counts them when Kafka's
    // acknowledgement reaches it, a moment later, and publishes its
    // progress gauges on a timer.
    let text = eventually(&host, "3 acknowledged records in /metrics", || {
        let (status, body) = http_get(&admin, "/metrics");
        (status == 200
            && metric(&body, "cvp_stream_records_produced_total{topic=\"ops\"}") == Some(3.0)
            && metric(&body, "cvp_stream_kafka_queue_depth") == Some(0.0)
            && metric(&body, "cvp_stream_last_delivered_event_timestamp_seconds") > Some(1.7e9))
        .then_some(body)
    });
    let m = |series: &str| metric(&text, series);
    for (op, sev, n) in [
        ("initial", "critical", 1.0),
        ("initial", "warning", 1.0),
        ("updated", "warning", 2.0),
        ("updated", "error", 2.0),
        ("updated", "info", 1.0),
        ("updated", "unspecified", 1.0),
        ("deleted", "critical", 1.0),
    ] {
        let series =
            format!("cvp_stream_events_received_total{{operation=\"{op}\",severity=\"{sev}\"}}");
        assert_eq!(m(&series), Some(n), "{series}\n{text}");
    }
    let received: usize = text
        .lines()
        .filter(|l| l.starts_with("cvp_stream_events_received_total{"))
        .count();
    assert_eq!(received, 7, "no other series: {text}");
    assert_eq!(
        m("cvp_stream_events_dropped_total{transform=\"filter\",reason=\"filtered\"}"),
        Some(4.0)
    );
    assert_eq!(
        m("cvp_stream_events_dropped_total{transform=\"title-to-key\",reason=\"filtered\"}"),
        Some(0.0)
    );
    assert!(
        m("cvp_stream_transform_call_duration_seconds_count{transform=\"filter\"}") >= Some(1.0)
    );
    assert!(
        m("cvp_stream_transform_call_duration_seconds_count{transform=\"title-to-key\"}")
            >= Some(1.0)
    );
    assert_eq!(
        m("cvp_stream_kafka_delivery_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(m("cvp_stream_kafka_queue_depth"), Some(0.0));
    assert_eq!(m("cvp_stream_cvp_stream_state{state=\"live\"}"), Some(1.0));
    assert_eq!(m("cvp_stream_cvp_reconnects_total"), Some(0.0));
    assert!(m("cvp_stream_last_delivered_event_timestamp_seconds") > Some(1.7e9));
    assert!(m("cvp_stream_checkpoint_lag_seconds") >= Some(0.0));
    assert!(text.contains("cvp_stream_build_info{version=\""), "{text}");

    assert_eq!(http_get(&admin, "/health").0, 200);
    assert_eq!(http_get(&admin, "/ready"), (200, "ready\n".to_string()));
    host.stop_cleanly();
}

/// The systemd unit's own command line (`ExecStart`, JSON logs), then
/// `/ready` through a broker outage and a CVP that goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_broker_and_cvp_with_the_units_command_line() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/cvp-stream.service"))
        .expect("the systemd unit");
    let exec_start = unit_line(&unit, "ExecStart");

    let port = free_port();
    let broker = Broker::start_on(port);
    broker.create_topic("ready", 1);
    let (sim, addr) = sample_simulator("tok-ops").await;
    let admin = format!("127.0.0.1:{}", free_port());
    let yaml = ops_config(&addr, &broker, "ready", &admin);
    let host = Host::run_with(&yaml, &[], |config| unit_args(&exec_start, config));

    let ready = |want: u16| {
        eventually(&host, &format!("/ready answering {want}"), || {
            let (status, body) = http_get(&admin, "/ready");
            (status == want).then_some(body)
        })
    };
    ready(200);
    broker.consume(&host, "ready", 3);

    drop(broker);
    assert_eq!(ready(503), "not ready: Kafka not reachable\n");
    let (_, text) = http_get(&admin, "/metrics");
    assert_eq!(metric(&text, "cvp_stream_kafka_broker_up"), Some(0.0));
    assert_eq!(metric(&text, "cvp_stream_ready"), Some(0.0));

    let _broker = Broker::start_on(port);
    ready(200);

    sim.shutdown().await;
    assert_eq!(ready(503), "not ready: not connected to CVP\n");
    let text = eventually(&host, "a reconnect attempt counted", || {
        let (_, text) = http_get(&admin, "/metrics");
        (metric(&text, "cvp_stream_cvp_reconnects_total") >= Some(1.0)).then_some(text)
    });
    assert_eq!(
        metric(&text, "cvp_stream_cvp_stream_state{state=\"disconnected\"}"),
        Some(1.0)
    );

    let log = host.stop_cleanly();
    // `--log-format json`: every line is one JSON object with a level and
    // a message, and none carries the token.
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(!log.contains("tok-ops"), "the token leaked:\n{log}");
}

/// `Key=/usr/local/bin/cvp-stream ...` from a unit file.
fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_string()
}

/// A unit's command line, run here: the installed paths replaced by the
/// built binary's arguments and a test config.
fn unit_args(command: &str, config: &Path) -> Vec<String> {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/cvp-stream"));
    words
        .map(|w| match w {
            "/etc/cvp-stream/config.yaml" => config.display().to_string(),
            w => w.to_string(),
        })
        .collect()
}

/// The unit's pre-start check and the example config shipped beside it:
/// `validate` accepts it (the token comes from the environment file).
#[test]
fn systemd_unit_validates_its_config_before_start() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/cvp-stream.service"))
        .expect("the systemd unit");
    let pre = unit_line(&unit, "ExecStartPre");
    let example = repo_root().join("deploy/systemd/config.yaml");
    let args = unit_args(&pre, &example);
    assert_eq!(args[0], "validate");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) =
        run_to_end_with_env(&args, &[("CVP_TOKEN", "from-the-environment-file")]);
    assert!(status.success(), "{stderr}");
    // Stopping is SIGTERM with room for the Kafka flush (30 s default).
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

/// The Kubernetes ConfigMap's config validates; the Deployment runs it
/// with the arguments `run` takes and probes the port it listens on.
#[test]
fn kubernetes_example_is_consistent() {
    let dir = repo_root().join("deploy/kubernetes");
    let cm: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("configmap.yaml")).unwrap())
            .expect("configmap.yaml is YAML");
    let cfg = cm["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.yaml");
    std::fs::write(&path, cfg).unwrap();
    let (status, stdout, stderr) = run_to_end_with_env(
        &["validate", "--config", path.to_str().unwrap()],
        &[
            ("CVP_TOKEN", "from-the-secret"),
            ("KAFKA_PASSWORD", "from-the-secret"),
        ],
    );
    assert!(status.success(), "{stdout}{stderr}");

    let admin_port: u16 = serde_yaml::from_str::<serde_yaml::Value>(cfg).unwrap()["admin"]
        ["listen"]
        .as_str()
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .expect("admin.listen in the config");
    let deploy: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("deployment.yaml")).unwrap())
            .unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[..3],
        ["run", "--config", "/etc/cvp-stream/config.yaml"]
    );
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(port, u64::from(admin_port));
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/ready")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/health")
    );
    // The binary accepts the Deployment's arguments (clap would exit 2).
    let mut check: Vec<&str> = args.clone();
    check.push("--help");
    let (status, _, stderr) = run_to_end(&check);
    assert!(status.success(), "{stderr}");
}
