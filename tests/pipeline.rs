//! The pipeline end to end: the CVP simulator (a real gRPC server) -> the
//! `cvp-stream` binary with real WebAssembly components -> tansu (a real
//! Kafka-protocol broker), read back with an rdkafka consumer. Each test
//! asserts the exact records on the topic.

mod support;

use cvp_simulator::SimOptions;
use serde_json::Value;
use support::{
    config, expect_exactly, finish, offline_config, run_config, run_to_end, sample_live,
    sample_simulator, sample_updated, simulator, transform, wasm, Broker, Host, Record,
};

const PLAIN_TOKEN: &str = "    token: tok-123\n    tls: { enabled: false }";

/// `cvp-stream run` with the stock transform, reading `cvp`, producing to `topic`.
fn stock_host(cvp: &str, cvp_extra: &str, broker: &Broker, topic: &str) -> Host {
    Host::run(
        &config(
            cvp,
            cvp_extra,
            &transform("t", "title_to_key", ""),
            broker,
            topic,
        ),
        &[],
    )
}

/// What title-to-key writes to `topic` for each sample UPDATED event that
/// passes `keep`: key = title, value = description ("" for a missing one).
fn title_to_key_records(topic: &str, keep: impl Fn(&Value) -> bool) -> Vec<Record> {
    sample_updated()
        .iter()
        .filter(|v| keep(v))
        .map(|v| title_to_key_record(topic, v))
        .collect()
}

fn title_to_key_record(topic: &str, event: &Value) -> Record {
    let text = |f: &str| event[f].as_str().unwrap_or("");
    Record::text(topic, text("title"), text("description"))
}

/// The stock transform: key = title, value = description, byte for byte as
/// the Go seed wrote them, for every UPDATED event (the default operations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_transform_writes_title_and_description() {
    let broker = Broker::start();
    broker.create_topic("cvp-events", 1);
    let (_sim, addr) = sample_simulator("tok-123").await;
    let host = Host::run(
        &config(
            &addr,
            PLAIN_TOKEN,
            &transform("title-to-key", "title_to_key", ""),
            &broker,
            "cvp-events",
        ),
        &[],
    );

    let expected = title_to_key_records("cvp-events", |_| true);
    // Spelled out once, so the expectation above cannot drift from the seed.
    assert_eq!(
        expected[0],
        Record::text(
            "cvp-events",
            "Interface Exceeded Outbound Utilization Threshold",
            "Interface outOctets bandwidth utilization (98.80548%) exceeded threshold of 98%"
        )
    );
    assert_eq!(expected.len(), 6);

    let log = expect_exactly(&broker, host, &[("cvp-events", &expected)]);
    assert!(
        !log.contains("tok-123"),
        "the token leaked into the log:\n{log}"
    );
}

/// No transform: key = the CVP event key, value = the merged event as
/// protobuf JSON (here the recording's own JSON, as nothing was merged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transform_writes_event_json() {
    let broker = Broker::start();
    broker.create_topic("raw", 1);
    let (_sim, addr) = sample_simulator("tok-123").await;
    let extra = format!("{PLAIN_TOKEN}\n    operations: [updated, deleted]");
    let host = Host::run(&config(&addr, &extra, "", &broker, "raw"), &[]);

    let live = sample_live();
    let got = broker.consume(&host, "raw", 7);
    assert_eq!(got.len(), live.len());
    for (rec, entry) in got.iter().zip(&live) {
        assert_eq!(rec.topic, "raw");
        assert!(rec.headers.is_empty());
        assert_eq!(
            rec.key_text(),
            entry["value"]["key"]["key"].as_str().unwrap()
        );
        if entry["type"] == "DELETED" {
            // DELETED carries the last known state (the INITIAL entry).
            assert_eq!(rec.value_json()["title"], "BGP Peer Session Down");
        } else {
            assert_eq!(
                rec.value_json(),
                entry["value"],
                "record for {}",
                rec.key_text()
            );
        }
    }
    finish(&broker, host, &[("raw", &got)]);
}

/// A transform that drops by severity: only ERROR and CRITICAL get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn severity_filter_drops_below_minimum() {
    let broker = Broker::start();
    broker.create_topic("errors", 1);
    let (_sim, addr) = sample_simulator("tok-123").await;
    let transforms = [
        transform(
            "errors-only",
            "severity_filter",
            "    config: { min_severity: error }\n",
        ),
        transform("title-to-key", "title_to_key", ""),
    ]
    .join("");
    let host = Host::run(
        &config(&addr, PLAIN_TOKEN, &transforms, &broker, "errors"),
        &[],
    );

    let expected = title_to_key_records("errors", |v| v["severity"] == "EVENT_SEVERITY_ERROR");
    assert_eq!(expected.len(), 2);
    expect_exactly(&broker, host, &[("errors", &expected)]);
}

/// A two-transform chain: route-by-type picks the topic and adds headers,
/// then title-to-key rewrites key and value; headers survive the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_routes_then_rewrites() {
    let broker = Broker::start();
    for t in ["cvp-events", "intf-util"] {
        broker.create_topic(t, 1);
    }
    let (_sim, addr) = sample_simulator("tok-123").await;
    let transforms = [
        transform(
            "route",
            "route_by_type",
            "    config:\n      routes: { HIGH_INTF_OUT_UTIL: intf-util, HIGH_INTF_IN_UTIL: intf-util }\n",
        ),
        transform("title-to-key", "title_to_key", ""),
    ]
    .join("");
    let host = Host::run(
        &config(&addr, PLAIN_TOKEN, &transforms, &broker, "cvp-events"),
        &[],
    );

    let expected = |topic: &str, want_intf: bool| -> Vec<Record> {
        sample_updated()
            .iter()
            .filter(|v| v["eventType"].as_str().unwrap().starts_with("HIGH_INTF") == want_intf)
            .map(|v| {
                let severity = match v["severity"].as_str() {
                    Some(s) => s.trim_start_matches("EVENT_SEVERITY_").to_lowercase(),
                    None => "unspecified".into(),
                };
                let mut r = title_to_key_record(topic, v);
                r.headers = vec![
                    (
                        "cvp-event-type".into(),
                        v["eventType"].as_str().unwrap().into(),
                    ),
                    ("cvp-severity".into(), severity.into_bytes()),
                    (
                        "cvp-event-key".into(),
                        v["key"]["key"].as_str().unwrap().into(),
                    ),
                ];
                r
            })
            .collect()
    };
    let (want_intf, want_rest) = (expected("intf-util", true), expected("cvp-events", false));
    assert_eq!((want_intf.len(), want_rest.len()), (4, 2));
    expect_exactly(
        &broker,
        host,
        &[("intf-util", &want_intf), ("cvp-events", &want_rest)],
    );
}

/// TLS to CVP with a private CA given as `tls.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_custom_ca() {
    let broker = Broker::start();
    broker.create_topic("tls", 1);
    let pki = cvp_simulator::test_pki(&["localhost", "127.0.0.1"]).unwrap();
    let (_sim, addr) = simulator(SimOptions {
        token: Some("tok-tls".into()),
        tls: Some(pki.identity.clone()),
        script: cvp_simulator::load_jsonl(&support::sample_events()).unwrap(),
        rate: 0.0,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let extra = format!(
        "    token: tok-tls\n    tls: {{ ca_file: {:?} }}",
        ca.display().to_string()
    );
    let host = stock_host(&addr, &extra, &broker, "tls");
    let got = broker.consume(&host, "tls", 6);
    assert_eq!(
        got[0].key_text(),
        "Interface Exceeded Outbound Utilization Threshold"
    );
    finish(&broker, host, &[("tls", &got)]);
}

/// TLS against a CVP whose certificate we do not trust fails with a clear
/// line (and keeps retrying rather than dying).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_untrusted_certificate_is_a_clear_error() {
    let broker = Broker::start();
    let pki = cvp_simulator::test_pki(&["localhost", "127.0.0.1"]).unwrap();
    let (_sim, addr) = simulator(SimOptions {
        tls: Some(pki.identity),
        ..SimOptions::default()
    })
    .await;
    let host = Host::run(&config(&addr, "    token: x", "", &broker, "t"), &[]);
    let line = host.wait_for_log("cannot connect to CVP");
    assert!(
        line.contains("is not signed by a CA this machine trusts")
            && line.contains("source.cvp.tls.ca_file"),
        "{line}"
    );
    host.stop_cleanly();
}

/// A CVP serving one self-signed certificate made as `openssl req -x509`
/// makes it (a CA, basicConstraints CA:TRUE): given as `tls.ca_file`, it
/// is trusted as itself, as grpc-go and grpcio do (WebPKI alone refused it
/// with `CaUsedAsEndEntity`). Its name is still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_self_signed_certificate_as_ca_file() {
    let broker = Broker::start();
    broker.create_topic("selfsigned", 1);
    let pki = cvp_simulator::self_signed_ca_as_server(&["localhost", "127.0.0.1"]).unwrap();
    let (_sim, addr) = simulator(SimOptions {
        token: Some("tok-ss".into()),
        tls: Some(pki.identity.clone()),
        script: cvp_simulator::load_jsonl(&support::sample_events()).unwrap(),
        rate: 0.0,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("cvp.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let tls = |extra: &str| {
        format!(
            "    token: tok-ss\n    tls: {{ ca_file: {:?}{extra} }}",
            ca.display().to_string()
        )
    };
    let host = stock_host(&addr, &tls(""), &broker, "selfsigned");
    let got = broker.consume(&host, "selfsigned", 6);
    assert_eq!(
        got[0].key_text(),
        "Interface Exceeded Outbound Utilization Threshold"
    );
    finish(&broker, host, &[("selfsigned", &got)]);

    // The same certificate for a name it does not carry: refused, saying
    // which setting to change.
    let wrong = Host::run(
        &config(
            &addr,
            &tls(", server_name: cvp.example.com"),
            "",
            &broker,
            "t",
        ),
        &[],
    );
    let line = wrong.wait_for_log("cannot connect to CVP");
    assert!(line.contains("source.cvp.tls.server_name"), "{line}");
    wrong.stop_cleanly();
}

/// Username/password: the REST login's session token is used for gRPC;
/// neither the password nor the session token shows in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_password_login() {
    let broker = Broker::start();
    broker.create_topic("login", 1);
    let (_sim, addr) = simulator(SimOptions {
        credentials: Some(("ansible".into(), "pw-S3CRET-42".into())),
        script: cvp_simulator::load_jsonl(&support::sample_events()).unwrap(),
        rate: 0.0,
        ..SimOptions::default()
    })
    .await;
    let extra = "    username: ansible\n    tls: { enabled: false }";
    let host = Host::run(
        &config(
            &addr,
            extra,
            &transform("t", "title_to_key", ""),
            &broker,
            "login",
        ),
        &[("CVP_PASSWORD", "pw-S3CRET-42")],
    );
    let got = broker.consume(&host, "login", 6);
    assert_eq!(got.len(), 6);
    let log = finish(&broker, host, &[("login", &got)]);
    assert!(log.contains("logged in to CVP"), "{log}");
    assert!(!log.contains("pw-S3CRET-42"), "password leaked:\n{log}");
}

/// A wrong token: one clear line that says what to fix, without the token,
/// and the service keeps running (it retries at the slow end of the backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_a_clear_error() {
    let broker = Broker::start();
    let (_sim, addr) = sample_simulator("the-right-one").await;
    let extra = "    token: tok-WRONG-9f8e\n    tls: { enabled: false }";
    let host = Host::run(&config(&addr, extra, "", &broker, "t"), &[]);
    let line = host.wait_for_log("CVP refused the token");
    assert!(line.contains("check source.cvp.token"), "{line}");
    let log = host.stop_cleanly();
    assert!(!log.contains("tok-WRONG-9f8e"), "token leaked:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Partial UPDATED diffs are merged into the full event, so title-to-key
/// always has a title (the seed read fields a partial update left empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_updates_are_merged() {
    let broker = Broker::start();
    broker.create_topic("merged", 1);
    let (_sim, addr) = simulator(SimOptions {
        token: Some("tok-123".into()),
        initial: 20,
        updates: 300,
        rate: 0.0,
        partial_updates: true,
        seed: 7,
        ..SimOptions::default()
    })
    .await;
    // Deleted events carry the last known state too.
    let extra = format!("{PLAIN_TOKEN}\n    operations: [updated, deleted]");
    let host = stock_host(&addr, &extra, &broker, "merged");
    let got = broker.consume(&host, "merged", 300);
    let untitled: Vec<_> = got.iter().filter(|r| r.key_text().is_empty()).collect();
    assert!(
        untitled.is_empty(),
        "{} of 300 records have no title: {untitled:?}",
        untitled.len()
    );
    finish(&broker, host, &[("merged", &got)]);
}

/// A broken, wrong-kind or missing `.wasm`: `run` and `validate` fail at
/// start-up with one line naming the transform and what to fix.
#[test]
fn broken_wasm_is_a_clear_error_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let good = std::fs::read(wasm("title_to_key")).unwrap();
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let missing = dir.path().join("missing.wasm");

    let cases = [
        (&garbage, "is not a WebAssembly file"),
        (&core, "is a core WebAssembly module, not a component"),
        (&truncated, "is not a valid component"),
        (&missing, "cannot read"),
    ];
    for (path, message) in cases {
        let yaml = offline_config(&support::transform_at("broken", path, ""));
        let config = dir.path().join("c.yaml");
        std::fs::write(&config, yaml).unwrap();
        for cmd in ["run", "validate"] {
            let (status, _, stderr) = run_config(cmd, &config);
            assert_eq!(status.code(), Some(1), "{cmd} {}: {stderr}", path.display());
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with("error: "))
                .collect();
            assert_eq!(errors.len(), 1, "{cmd}: {stderr}");
            assert!(
                errors[0].contains("transform broken") && errors[0].contains(message),
                "{cmd}: {stderr}"
            );
            assert!(
                !stderr.contains("panicked") && !stderr.contains("backtrace"),
                "{stderr}"
            );
        }
    }
}

/// A component of another world: it type-checks against nothing we offer.
#[test]
fn component_of_another_world_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    // A valid component that exports nothing of ours: the smallest one.
    let empty_component = b"\0asm\x0d\0\x01\0";
    let path = dir.path().join("empty.wasm");
    std::fs::write(&path, empty_component).unwrap();
    std::fs::write(
        &config,
        offline_config(&support::transform_at("other", &path, "")),
    )
    .unwrap();
    let (status, _, stderr) = run_config("validate", &config);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a cvp-stream transform"), "{stderr}");
}

/// Bad YAML and unknown keys: the error names the key and the line.
#[test]
fn bad_config_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "source:\n  cvp:\n    address: cvp:443\n    tokne: abc\nsink: { kafka: { brokers: b, topic: t } }\n",
    )
    .unwrap();
    let (status, _, stderr) = run_config("validate", &config);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("unknown field `tokne`") && stderr.contains("line 4"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    std::fs::write(&config, "source: [\n").unwrap();
    let (status, _, stderr) = run_config("run", &config);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.starts_with("error: config ") && stderr.contains("line"),
        "{stderr}"
    );
}

/// `validate` on a good config loads and initialises every transform.
#[test]
fn validate_accepts_the_example_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    let yaml = offline_config(&format!(
        "{}{}",
        transform(
            "errors-only",
            "severity_filter",
            "    config: { min_severity: error }\n"
        ),
        transform("title-to-key", "title_to_key", ""),
    ));
    std::fs::write(&config, yaml).unwrap();
    let (status, stdout, stderr) = run_config("validate", &config);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("OK (2 transforms: errors-only -> title-to-key)"),
        "{stdout}"
    );
    // It connects nowhere: librdkafka did not try the (absent) brokers.
    assert!(
        !stderr.contains("librdkafka") && !stderr.contains("ERROR"),
        "validate touched Kafka: {stderr}"
    );

    // A transform whose init refuses its config fails validation, naming it.
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("min_severity: error", "min_severity: loud");
    std::fs::write(&config, yaml).unwrap();
    let (status, _, stderr) = run_config("validate", &config);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("transform errors-only: init failed: min_severity: invalid value \"loud\""),
        "{stderr}"
    );
}

/// The embedded default: `demo` runs the built-in simulator through the
/// stock transform and prints each record, then stops by itself.
#[test]
fn demo_prints_records() {
    let (status, stdout, stderr) = run_to_end(&["demo", "--updates", "8", "--rate", "0"]);
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Some generated live changes are deletions, which `demo` (like the
    // seed) does not forward; the summary line counts what was printed.
    let summary = stderr
        .lines()
        .find(|l| l.contains(" records="))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains(&format!("records={}", lines.len())),
        "{summary}\n{stdout}"
    );
    assert!((5..=8).contains(&lines.len()), "{stdout}\n{stderr}");
    for line in lines {
        assert!(
            line.starts_with("cvp-events  key=\"") && line.contains("  value=\""),
            "{line}"
        );
        assert!(!line.contains("key=\"\""), "an untitled record: {line}");
    }
}

/// The README's recipe: the Go seed's own invocation (`--server
/// --yamlfile --username --password`) against `cvp-stream simulate
/// --tls-self-signed`, trusting the simulator's CA with `--ca-file` (the
/// seed had no way to trust a private CA, and without it the handshake is
/// refused).
#[test]
fn seed_invocation_with_ca_file_reaches_the_tls_simulator() {
    use std::io::BufRead;
    let broker = Broker::start();
    broker.create_topic("seed", 1);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let events = support::sample_events();
    let mut sim = support::host_command()
        .args(["simulate", "--listen", "127.0.0.1:0", "--tls-self-signed"])
        .arg(&ca)
        .args([
            "--username",
            "ansible",
            "--password",
            "pw-seed",
            "--rate",
            "0",
            "--events",
        ])
        .arg(&events)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("cvp-simulator listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let seed_file = format!("kafka_broker: \"{}\"\nkafka_topic: \"seed\"\n", broker.addr);
    let seed_args = |trust: &[&str]| {
        let trust: Vec<String> = trust.iter().map(|s| s.to_string()).collect();
        let addr = addr.clone();
        move |config: &std::path::Path| {
            let mut args: Vec<String> = [
                "run",
                "--yamlfile",
                config.to_str().unwrap(),
                "--server",
                &addr,
            ]
            .iter()
            .chain(&["--username", "ansible", "--password", "pw-seed"])
            .map(|s| s.to_string())
            .collect();
            args.extend(trust);
            args
        }
    };
    // As the seed ran it: the private CA is not trusted.
    let refused = Host::run_with(&seed_file, &[], seed_args(&[]));
    let line = refused.wait_for_log("cannot connect to CVP");
    assert!(line.contains("--ca-file"), "{line}");
    refused.stop_cleanly();

    let ca = ca.to_str().unwrap();
    let host = Host::run_with(&seed_file, &[], seed_args(&["--ca-file", ca]));
    let got = broker.consume(&host, "seed", 6);
    assert_eq!(
        got[0].key_text(),
        "Interface Exceeded Outbound Utilization Threshold"
    );
    let log = finish(&broker, host, &[("seed", &got)]);
    assert!(!log.contains("pw-seed"), "the password leaked:\n{log}");
    let _ = sim.kill();
    let _ = sim.wait();
}

/// `demo --operations`: a recording's INITIAL and DELETED events are
/// forwarded when asked for (by default, as `run`, only UPDATED: the
/// critical "BGP Peer Session Down" deletion was silently left out).
#[test]
fn demo_operations_forwards_every_kind() {
    let events = support::sample_events();
    let events = events.to_str().unwrap();
    let all = ["demo", "--events", events, "--rate", "0"];
    let (status, stdout, stderr) = run_to_end(&all);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(
        stderr.contains("forwarding updated (--operations"),
        "{stderr}"
    );
    assert!(!stdout.contains("BGP Peer Session Down"), "{stdout}");

    let (status, stdout, stderr) =
        run_to_end(&[&all[..], &["--operations", "initial,UPDATED,deleted"]].concat());
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 9, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cvp-events  key=\"BGP Peer Session Down\"")),
        "{stdout}"
    );
    let (status, _, stderr) = run_to_end(&["demo", "--operations", "created"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"created\" is not one of initial, updated, deleted"),
        "{stderr}"
    );
}

/// `demo --config FILE`: a real config tried without CVP or Kafka. Its
/// chain (with each transform's config), operations and topic are used;
/// the simulator stands in for CVP and the printing sink for Kafka, and the
/// variables it names for credentials need not be set.
#[test]
fn demo_runs_a_real_config_against_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.yaml");
    let chain = format!(
        "{}{}",
        transform(
            "critical",
            "severity_filter",
            "    config: { min_severity: critical }\n"
        ),
        transform("title-to-key", "title_to_key", "")
    );
    std::fs::write(
        &path,
        format!(
            "source:\n  cvp:\n    address: cvp.prod.example:443\n    username: svc\n    password: \"${{DEMO_UNSET_CVP_PASSWORD}}\"\n    operations: [initial, updated, deleted]\ntransforms:\n{chain}sink:\n  kafka:\n    brokers: kafka.prod.example:9093\n    topic: noc-alerts\n    properties:\n      sasl.password: \"${{DEMO_UNSET_KAFKA_PASSWORD}}\"\ncheckpoint:\n  path: /nonexistent/dir/cp.json\n"
        ),
    )
    .unwrap();
    let events = support::sample_events();
    let (status, stdout, stderr) = run_to_end(&[
        "demo",
        "--config",
        path.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--rate",
        "0",
    ]);
    assert!(status.success(), "{stderr}");
    // Critical: the INITIAL event and its deletion, both "BGP Peer
    // Session Down", on the file's topic.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}\n{stderr}");
    for line in lines {
        assert!(
            line.starts_with("noc-alerts  key=\"BGP Peer Session Down\""),
            "{line}"
        );
    }
    assert!(
        stderr.contains("transforms [critical, title-to-key]"),
        "{stderr}"
    );
}

/// `filter:` becomes CVP's partial_eq_filter: unwanted events never leave
/// CVP (the simulator applies it as CVP does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_filter() {
    let broker = Broker::start();
    broker.create_topic("filtered", 1);
    let (sim, addr) = sample_simulator("tok-123").await;
    let extra = format!("{PLAIN_TOKEN}\n    filter: {{ severity: [error], event_type: [HIGH_INTF_OUT_UTIL, HIGH_INTF_IN_UTIL] }}");
    let host = stock_host(&addr, &extra, &broker, "filtered");
    let got = broker.consume(&host, "filtered", 2);
    assert_eq!(
        got.iter()
            .map(|r| r.value.clone().unwrap())
            .collect::<Vec<_>>(),
        vec![
            b"Interface outOctets bandwidth utilization (1300.97%) exceeded threshold of 95%"
                .to_vec(),
            b"Interface inOctets bandwidth utilization (1300.917%) exceeded threshold of 95%"
                .to_vec(),
        ]
    );
    finish(&broker, host, &[("filtered", &got)]);
    // The filter was applied by the server: it sent nothing else live.
    assert_eq!(sim.stats().sent_updated, 2, "{:?}", sim.stats());
}

/// A transform that misbehaves on the two events whose description holds
/// "1300" costs those two events, logged with their keys and why; the
/// others get through, and the service keeps running.
fn misbehaving_transform_costs_one_event(mode: &str, limits: &str, why: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let broker = Broker::start();
    broker.create_topic("faults", 1);
    let (_sim, addr) = rt.block_on(sample_simulator("tok-123"));
    let transforms = [
        transform(
            "bad",
            "misbehave",
            &format!("    config: {{ mode: {mode}, trigger: \"1300\" }}\n    on_error: drop\n    limits: {limits}\n"),
        ),
        transform("title-to-key", "title_to_key", ""),
    ]
    .join("");
    let host = Host::run(
        &config(&addr, PLAIN_TOKEN, &transforms, &broker, "faults"),
        &[],
    );
    let expected = title_to_key_records("faults", |v| {
        !v["description"].as_str().unwrap_or("").contains("1300")
    });
    assert_eq!(expected.len(), 4);
    broker.expect_records(&host, "faults", &expected);
    for key in ["b7e29d4410aa4c07", "d5a8e61f0c3b4b9a"] {
        let line = host.wait_for_log(&format!("transform failed on event {key}"));
        assert!(line.contains(why), "{line}");
    }
    // The records were checked above; this stops the host and checks that
    // nothing more arrived.
    let log = finish(&broker, host, &[("faults", &expected)]);
    assert!(log.contains("transform_failures=2"), "{log}");
}

#[test]
fn trapping_transform_costs_one_event() {
    misbehaving_transform_costs_one_event("trap", "{}", "misbehave: triggered by");
}

#[test]
fn looping_transform_costs_one_event() {
    misbehaving_transform_costs_one_event("spin", "{ timeout: 200ms }", "timed out after 200ms");
}

#[test]
fn memory_hungry_transform_costs_one_event() {
    misbehaving_transform_costs_one_event(
        "hog",
        "{ memory: 32MiB }",
        "exceeded its memory limit of 32 MiB",
    );
}

/// `on_error: stop`: the service stops with one line naming the transform,
/// the event and the error, after delivering what came before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_stop_stops_cleanly() {
    let broker = Broker::start();
    broker.create_topic("stops", 1);
    let (_sim, addr) = sample_simulator("tok-123").await;
    let transforms = [
        transform(
            "bad",
            "misbehave",
            "    config: { mode: error, trigger: \"1300\" }\n    on_error: stop\n",
        ),
        transform("title-to-key", "title_to_key", ""),
    ]
    .join("");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        config(&addr, PLAIN_TOKEN, &transforms, &broker, "stops"),
    )
    .unwrap();
    let (status, _, stderr) = tokio::task::spawn_blocking(move || run_config("run", &path))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors,
        ["error: transform bad failed on event b7e29d4410aa4c07 and its on_error is stop: returned an error: misbehave: triggered by b7e29d4410aa4c07"],
        "{stderr}"
    );
    // The event before the failing one was delivered; nothing after it.
    let got = broker.all("stops");
    assert_eq!(
        got.iter().map(Record::key_text).collect::<Vec<_>>(),
        ["Interface Exceeded Outbound Utilization Threshold"]
    );
}
