//! Transforms in several languages: the Python and JavaScript examples and
//! the Rust ones, through `cvp-stream transform test` and through the real
//! pipeline (simulator -> cvp-stream -> tansu).

mod support;

use cvp_simulator::SimOptions;
use std::path::{Path, PathBuf};
use support::{
    config, expect_exactly, finish, run_config, run_to_end, sample_simulator, sample_updated,
    simulator, transform_at, wasm, Broker, Host, Record,
};

/// The source keys of a plaintext simulator that wants the token `tok`.
const PLAIN_TOK: &str = "    token: tok\n    tls: { enabled: false }";

/// A component built by an example's build.sh (scripts/test-all runs them).
fn example(file: &str, build: &str) -> PathBuf {
    let path = support::repo_root().join("target/examples").join(file);
    assert!(
        path.exists(),
        "{} is missing: run {build} (scripts/test-all does)",
        path.display()
    );
    path
}

fn site_enrich() -> PathBuf {
    example("site_enrich.wasm", "transforms/python/site-enrich/build.sh")
}

fn json_subset() -> PathBuf {
    example("json_subset.wasm", "transforms/js/json-subset/build.sh")
}

fn site_route() -> PathBuf {
    example("site_route.wasm", "transforms/python/site-route/build.sh")
}

/// What `cvp-stream transform test` did: its exit code, the lines it
/// printed (one per sample event) and its stderr.
struct TransformTest {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

/// `cvp-stream transform test COMPONENT ARGS...`, run to the end.
fn transform_test(component: impl AsRef<Path>, args: &[&str]) -> TransformTest {
    let mut all = vec![
        "transform",
        "test",
        component.as_ref().to_str().expect("a UTF-8 path"),
    ];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_to_end(&all);
    TransformTest {
        code: status.code().unwrap_or(-1),
        lines: stdout.lines().map(String::from).collect(),
        stderr,
    }
}

impl TransformTest {
    /// Asserts exit code 0 (showing stderr if not).
    #[track_caller]
    fn assert_success(self) -> TransformTest {
        assert_eq!(self.code, 0, "{}", self.stderr);
        self
    }

    /// Asserts exit code 1 with `message` in stderr.
    #[track_caller]
    fn assert_failure_with(self, message: &str) -> TransformTest {
        assert_eq!(self.code, 1, "{}", self.stderr);
        assert!(self.stderr.contains(message), "{}", self.stderr);
        self
    }
}

#[test]
fn transform_test_prints_what_the_stock_transform_produces() {
    let lines = transform_test("builtin:title-to-key", &[])
        .assert_success()
        .lines;
    // Every operation of the built-in sample set, merged as `run` merges.
    assert_eq!(lines.len(), 9, "{lines:#?}");
    assert_eq!(
        lines[0],
        "a1f3c2e0d9b84e11 UPDATED: cvp-events  key=\"Interface Exceeded Outbound Utilization Threshold\"  value=\"Interface outOctets bandwidth utilization (98.80548%) exceeded threshold of 98%\""
    );
    assert_eq!(lines[6], "e91c0a7b3d664f28 DELETED: cvp-events  key=\"BGP Peer Session Down\"  value=\"BGP session to peer 10.255.0.12 (AS 65012) in VRF default is down\"");
}

#[test]
fn transform_test_shows_drops_config_and_failures() {
    let lines = transform_test(
        wasm("severity_filter"),
        &["--config", "min_severity=critical"],
    )
    .assert_success()
    .lines;
    let kept: Vec<&String> = lines.iter().filter(|l| !l.ends_with(": dropped")).collect();
    assert_eq!(kept.len(), 2, "{lines:#?}"); // the BGP event, INITIAL and DELETED
    assert!(
        kept.iter().all(|l| l.starts_with("e91c0a7b3d664f28 ")),
        "{kept:#?}"
    );

    let lines = transform_test(
        wasm("misbehave"),
        &["--config", "mode=trap", "--config", "trigger=1300"],
    )
    .assert_failure_with("error: the transform failed on 2 of 9 events")
    .lines;
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(": error in misbehave: trapped: panic: misbehave: triggered by"))
        .collect();
    assert_eq!(failed.len(), 2, "{lines:#?}");
}

#[test]
fn transform_test_refuses_what_is_not_our_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    transform_test(&core, &[]).assert_failure_with("is a core WebAssembly module, not a component");
}

#[test]
fn python_example_through_transform_test() {
    let lines = transform_test(
        site_enrich(),
        &[
            "--config",
            "sites={JPE19181520: dc1, SSJ17371234: dc2}",
            "--config",
            "default=elsewhere",
        ],
    )
    .assert_success()
    .lines;
    // `... key="..."  headers=[site=dc1]  value="..."`: the headers.
    let sites: Vec<&str> = lines
        .iter()
        .map(|l| {
            let headers = l.split("  headers=").nth(1).unwrap_or("");
            headers.split("  value=").next().unwrap()
        })
        .collect();
    assert_eq!(
        sites,
        [
            "[site=dc1]",
            "[site=dc2]",
            "[site=dc1]",
            "[site=dc2]",
            "[site=elsewhere]",
            "[site=elsewhere]",
            "[site=elsewhere]",
            "[site=elsewhere]",
            "[site=elsewhere]"
        ],
        "{lines:#?}"
    );
    // Without the mapping the transform refuses to start, naming the key.
    transform_test(site_enrich(), &[])
        .assert_failure_with("init failed: config key `sites` is missing");
}

#[test]
fn javascript_example_through_transform_test() {
    let lines = transform_test(
        json_subset(),
        &["--config", "fields=[key, severity, title]"],
    )
    .assert_success()
    .lines;
    assert_eq!(
        lines[0],
        r#"a1f3c2e0d9b84e11 UPDATED: cvp-events  key="a1f3c2e0d9b84e11"  value="{\"key\":\"a1f3c2e0d9b84e11\",\"severity\":\"warning\",\"title\":\"Interface Exceeded Outbound Utilization Threshold\"}""#
    );
    transform_test(json_subset(), &["--config", "fields=[sevrity]"])
        .assert_failure_with("unknown field \"sevrity\"");
}

/// site-route (Python) in the host's own chain, over the sample events with
/// the inventory a CVP source joins onto each (`SourceEvent.enrichment`:
/// the devices it names that the inventory knows, with their tags). Each
/// record goes to its device's `site` topic, keyed `hostname:interface`; a
/// device the inventory does not know and an event naming no device go to
/// the fallback topic. The value and headers are not touched.
#[test]
fn python_site_route_routes_by_device_tags() {
    use cvp_stream::commands::transform_test::{load_events, EventsArg};
    use cvp_stream::enrichment::{Creator, Device, Enrichment, Tag};
    use cvp_stream::transforms::{PipelineConfig, TransformConfig, TransformStage};
    use cvp_transform_engine::Outcome;
    use std::sync::Arc;

    let tag = |label: &str, value: &str| Tag {
        label: label.into(),
        value: value.into(),
        creator: Creator::User,
    };
    let device = |id: &str, hostname: Option<&str>, tags: Vec<Tag>| Device {
        id: id.into(),
        hostname: hostname.map(String::from),
        tags,
        ..Device::default()
    };
    // HSH14415002 (the DEVICE_STOPPED_STREAMING event's) is not in it.
    let inventory = [
        device(
            "JPE19181520",
            Some("leaf1"),
            vec![tag("role", "leaf"), tag("site", "dc1")],
        ),
        device("SSJ17371234", Some("leaf2"), vec![tag("site", "New York")]),
        // No hostname: the key falls back to the serial number.
        device("JPE20224411", None, vec![tag("site", "dc2")]),
    ];
    let mut events = load_events(&EventsArg { events: None }).unwrap();
    for ev in &mut events {
        let named = ev
            .event
            .data
            .as_ref()
            .and_then(|d| d.data.get("deviceId").cloned());
        ev.enrichment = Some(Arc::new(Enrichment {
            devices: inventory
                .iter()
                .filter(|d| Some(&d.id) == named.as_ref())
                .map(|d| Arc::new(d.clone()))
                .collect(),
            ..Enrichment::default()
        }));
    }

    let mut transform = TransformConfig::new("site-route", site_route());
    for (k, v) in [("topic", "events.{site}"), ("fallback", "events.unrouted")] {
        transform
            .config
            .insert(k.into(), serde_yaml::Value::String(v.into()));
    }
    let mut stage =
        TransformStage::load(&[transform], &PipelineConfig::default(), "cvp-events").unwrap();
    let got: Vec<String> = events
        .iter()
        .zip(stage.process(&events))
        .map(|(ev, outcome)| match outcome {
            Outcome::Produce(records) => {
                assert_eq!(records.len(), 1, "{records:?}");
                let r = &records[0];
                assert!(r.headers.is_empty(), "{r:?}");
                // The value is the default one, the event as JSON.
                let value: serde_json::Value =
                    serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                assert_eq!(value["key"]["key"], ev.key());
                format!(
                    "{} {} {}",
                    ev.key(),
                    r.topic,
                    String::from_utf8_lossy(r.key.as_deref().unwrap())
                )
            }
            Outcome::Failed(f) => panic!("{}: {f:?}", ev.key()),
        })
        .collect();
    assert_eq!(
        got,
        [
            "a1f3c2e0d9b84e11 events.dc1 leaf1:Ethernet49/1",
            "b7e29d4410aa4c07 events.New_York leaf2:Management1",
            "c03f1b9e77e24a55 events.dc1 leaf1:Ethernet50/1",
            "d5a8e61f0c3b4b9a events.New_York leaf2:Management1",
            "e91c0a7b3d664f28 events.dc2 JPE20224411",
            "f2d7b5c1a8e94d30 events.dc2 JPE20224411",
            "e91c0a7b3d664f28 events.dc2 JPE20224411",
            "0aa1bb2cc3dd4ee5 events.unrouted HSH14415002",
            "1bb2cc3dd4ee5ff6 events.unrouted 1bb2cc3dd4ee5ff6",
        ]
    );
}

/// Python then JavaScript then nothing else: headers from the first, the
/// value from the second, into a real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_in_one_pipeline() {
    let broker = Broker::start();
    broker.create_topic("polyglot", 1);
    let (_sim, addr) = sample_simulator("tok").await;
    let transforms = transform_at(
        "site-enrich",
        &site_enrich(),
        "    config: { sites: { JPE19181520: dc1, SSJ17371234: dc2 } }\n",
    ) + &transform_at(
        "json-subset",
        &json_subset(),
        "    config: { fields: [key, title] }\n",
    );
    let host = Host::run(
        &config(&addr, PLAIN_TOK, &transforms, &broker, "polyglot"),
        &[],
    );
    let expected: Vec<Record> = sample_updated()
        .iter()
        .map(|v| {
            let key = v["key"]["key"].as_str().unwrap();
            let value = match v["title"].as_str() {
                Some(t) => serde_json::json!({ "key": key, "title": t }),
                None => serde_json::json!({ "key": key, "title": "" }),
            };
            let mut r = Record::text("polyglot", key, &value.to_string());
            let device = v["data"]["data"]["deviceId"].as_str().unwrap_or("");
            r.headers = match device {
                "JPE19181520" => vec![("site".into(), b"dc1".to_vec())],
                "SSJ17371234" => vec![("site".into(), b"dc2".to_vec())],
                _ => vec![],
            };
            r
        })
        .collect();
    expect_exactly(&broker, host, &[("polyglot", &expected)]);
}

/// Replaces `path` the way deploy tools should: write aside, then rename.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A `.wasm` changed on disk is loaded while events stream; a broken one
/// is refused and the running version kept; SIGHUP reloads everything. No
/// event is lost or doubled across the swaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_without_losing_events() {
    const UPDATES: usize = 400;
    let broker = Broker::start();
    broker.create_topic("reload", 1);
    let (_sim, addr) = simulator(SimOptions {
        token: Some("tok".into()),
        initial: 5,
        updates: UPDATES as u64,
        rate: 40.0,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("t.wasm");
    std::fs::copy(wasm("title_to_key"), &live).unwrap();
    let transforms = transform_at("t", &live, "");
    let extra = format!("{PLAIN_TOK}\n    operations: [updated, deleted]");
    let host = Host::run(&config(&addr, &extra, &transforms, &broker, "reload"), &[]);

    broker.consume(&host, "reload", 10);
    replace_file(&live, b"not a component");
    let line = host.wait_for_log("cannot reload transform t");
    assert!(
        line.contains("keeping the running version") && line.contains("is not a WebAssembly file"),
        "{line}"
    );
    replace_file(&live, &std::fs::read(wasm("route_by_type")).unwrap());
    host.wait_for_log("reloaded transform t");

    let got = broker.consume(&host, "reload", UPDATES);
    // Before the swap: title-to-key (no headers); after it: route-by-type
    // (its headers, key = the CVP event key). One switch, both sides seen.
    let switch = got
        .iter()
        .position(|r| !r.headers.is_empty())
        .expect("records from the new version");
    assert!(switch >= 10, "switched at {switch}");
    assert!(
        got[switch..]
            .iter()
            .all(|r| r.header("cvp-event-type").is_some()),
        "a record of the old version after the swap"
    );
    assert!(got[..switch].iter().all(|r| r.headers.is_empty()));

    host.signal(libc::SIGHUP);
    host.wait_for_log("SIGHUP: reloading every transform");
    host.wait_for_log("reloaded transform t");
    // Every event exactly once: the topic holds what was consumed, no more.
    finish(&broker, host, &[("reload", &got)]);
}

/// `cvp-stream test`: the example's cases pass; a wrong expectation fails
/// with what differs, and the exit code says so.
#[test]
fn declarative_pipeline_tests() {
    let example = support::repo_root().join("config/pipeline-tests.yaml");
    let (status, stdout, stderr) = run_config("test", &example);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.ends_with("3 passed, 0 failed\n"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace(
            "../target/wasm",
            &support::repo_root()
                .join("target/wasm")
                .display()
                .to_string(),
        )
        .replace(
            "      - key: BGP Peer Session Down",
            "      - key: BGP Peer Down",
        );
    std::fs::write(&wrong, text).unwrap();
    let (status, stdout, stderr) = run_config("test", &wrong);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains("FAIL  a deleted critical event still carries its title: record 1: key is \"BGP Peer Session Down\", expected \"BGP Peer Down\""),
        "{stdout}"
    );
    assert!(stdout.ends_with("2 passed, 1 failed\n"), "{stdout}");
    assert!(
        stderr.contains("error: 1 of 3 pipeline tests failed"),
        "{stderr}"
    );
}

/// A component built for contract 0.1 by the previous release's SDK still
/// runs, with one deprecation line, and produces exactly what the 0.2 build
/// of the same transform produces.
#[test]
fn a_0_1_component_still_runs_and_agrees_with_its_0_2_build() {
    let new = transform_test(wasm("title_to_key"), &[]).assert_success();
    let old = transform_test(wasm("title_to_key_01"), &[]).assert_success();
    assert_eq!(old.lines, new.lines);
    assert_eq!(new.lines.len(), 9);
    assert!(
        old.stderr
            .contains("is built for contract 0.1, which still runs but is deprecated"),
        "{}",
        old.stderr
    );
    assert!(!new.stderr.contains("deprecated"), "{}", new.stderr);
}

/// `transform inspect` shows an event as a component receives it: the
/// fields it declared filled, the others null, every one by its WIT name.
#[test]
fn transform_inspect_shows_what_a_transform_receives() {
    let (status, stdout, stderr) = run_to_end(&[
        "transform",
        "inspect",
        wasm("title_to_key").to_str().unwrap(),
        "--limit",
        "1",
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.starts_with("# reads: title, description."),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout.lines().skip(1).collect::<Vec<_>>().join("\n"))
            .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let event = &json["event"];
    assert_eq!(
        event["title"],
        "Interface Exceeded Outbound Utilization Threshold"
    );
    assert_eq!(event["severity"], "warning");
    assert_eq!(event["event-type"], serde_json::Value::Null);
    assert_eq!(event["components"], serde_json::Value::Null);
    assert_eq!(json["record"]["value"], serde_json::Value::Null);

    let (status, stdout, _) = run_to_end(&[
        "transform",
        "inspect",
        "--reads",
        "data.deviceId,components",
        "--limit",
        "1",
    ]);
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&stdout.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    let event = &json["event"];
    assert_eq!(event["title"], serde_json::Value::Null);
    assert_eq!(
        event["data"],
        serde_json::json!([["deviceId", "JPE19181520"]])
    );
    assert_eq!(
        event["components"][0]["kind"], "COMPONENT_TYPE_INTERFACE",
        "{stdout}"
    );
}

/// `transform test --jsonl` is one JSON object per record, the value as
/// JSON; `--pretty` puts the value, indented, under its record.
#[test]
fn transform_test_jsonl_and_pretty() {
    let out = transform_test("builtin:title-to-key", &["--jsonl"]).assert_success();
    let first: serde_json::Value = serde_json::from_str(&out.lines[0]).unwrap();
    assert_eq!(
        first,
        serde_json::json!({
            "event": "a1f3c2e0d9b84e11",
            "operation": "UPDATED",
            "topic": "cvp-events",
            "key": "Interface Exceeded Outbound Utilization Threshold",
            "headers": {},
            "value": "Interface outOctets bandwidth utilization (98.80548%) exceeded threshold of 98%",
        })
    );
    let out = transform_test(wasm("route_by_type"), &["--pretty"]).assert_success();
    assert!(
        out.lines[0].ends_with("headers=[cvp-event-type=HIGH_INTF_OUT_UTIL, cvp-severity=warning, cvp-event-key=a1f3c2e0d9b84e11]"),
        "{:#?}",
        out.lines
    );
    assert_eq!(out.lines[1], "    value:");
    assert_eq!(out.lines[2], "      {");
}

/// `transform new` makes a project that builds with its own command and
/// works: it tags records with `x-transform` and honours `min_severity`.
fn scaffold_builds_and_works(lang: &str, build: &[&str], wasm_at: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-filter");
    let transform_new = || {
        run_to_end(&[
            "transform",
            "new",
            "--lang",
            lang,
            "my-filter",
            "--dir",
            project.to_str().unwrap(),
        ])
    };
    let (status, stdout, stderr) = transform_new();
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("created {lang} transform my-filter")),
        "{stdout}"
    );

    let mut cmd = std::process::Command::new(build[0]);
    cmd.args(&build[1..]).current_dir(&project);
    // Rust scaffolds share one target dir across runs, so the SDK's
    // dependencies build once.
    cmd.env(
        "CARGO_TARGET_DIR",
        support::repo_root().join("target/scaffold-test"),
    );
    let out = cmd.output().expect("run the scaffold's build");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = if lang == "rust" {
        support::repo_root()
            .join("target/scaffold-test")
            .join(wasm_at)
    } else {
        project.join(wasm_at)
    };

    let lines = transform_test(&wasm, &[]).assert_success().lines;
    assert_eq!(lines.len(), 9, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("  headers=[x-transform=my-filter]  value=")),
        "{lines:#?}"
    );
    let lines = transform_test(&wasm, &["--config", "min_severity=error"])
        .assert_success()
        .lines;
    let kept = lines.iter().filter(|l| !l.ends_with(": dropped")).count();
    assert_eq!(kept, 4, "error and critical events only: {lines:#?}");

    // The same name again is refused, not overwritten.
    let (status, _, stderr) = transform_new();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("already exists and is not empty"),
        "{stderr}"
    );
}

#[test]
fn new_rust_transform() {
    scaffold_builds_and_works(
        "rust",
        &["cargo", "build", "--release"],
        "wasm32-wasip2/release/my_filter.wasm",
    );
}

#[test]
fn new_python_transform() {
    scaffold_builds_and_works("python", &["./build.sh"], "my_filter.wasm");
}

#[test]
fn new_javascript_transform() {
    scaffold_builds_and_works("js", &["./build.sh"], "my_filter.wasm");
}

/// A guest writing to stderr (here in `init`) works in every command that
/// runs transforms; wasmtime-wasi's synchronous stderr once panicked the
/// host when called inside the async runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stderr_is_fine_everywhere() {
    let bad = wasm("misbehave");
    let out = transform_test(&bad, &["--config", "mode=error", "--config", "say=hello"]);
    assert_eq!(out.assert_success().lines.len(), 9);

    let broker = Broker::start();
    broker.create_topic("talk", 1);
    let (_sim, addr) = sample_simulator("tok").await;
    let transforms = transform_at("talker", &bad, "    config: { mode: error, say: hello }\n");
    let yaml = config(&addr, PLAIN_TOK, &transforms, &broker, "talk");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let (status, stdout, stderr) = run_config("validate", &path);
    assert!(status.success(), "{stdout}{stderr}");

    let host = Host::run(&yaml, &[]);
    let got = broker.consume(&host, "talk", 6);
    assert_eq!(got.len(), 6);
    let log = host.stop_cleanly();
    assert!(!log.contains("panicked"), "{log}");
}

/// A component built for another version of the WIT package is refused
/// with a message saying which version it has and which the host takes.
/// (The real stock component with its interface names moved to @0.9.0.)
#[test]
fn component_for_another_wit_version_is_refused() {
    let mut bytes = std::fs::read(wasm("title_to_key")).unwrap();
    let (from, to) = (b"cvp-stream:transform/".as_slice(), b"@0.2.0".as_slice());
    let mut patched = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|w| w == from) {
        let start = i + at + from.len();
        // `cvp-stream:transform/NAME@0.2.0`: move the version to 0.9.0.
        if let Some(v) = bytes[start..].iter().take(32).position(|&b| b == b'@') {
            if bytes[start + v..].starts_with(to) {
                bytes[start + v + 3] = b'9';
                patched += 1;
            }
        }
        i = start;
    }
    assert!(
        patched >= 2,
        "expected import and export names to patch, found {patched}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.wasm");
    std::fs::write(&path, &bytes).unwrap();
    transform_test(&path, &[]).assert_failure_with(
        "was built for cvp-stream:transform@0.9.0; this cvp-stream accepts cvp-stream:transform 0.2.x and 0.1.x",
    );
}

/// A guest's log lines reach the host's log, tagged with the transform.
#[test]
fn guest_logs_reach_the_host_log() {
    let stderr = transform_test(
        site_enrich(),
        &[
            "--config",
            "sites={JPE19181520: dc1}",
            "--log-level",
            "debug",
        ],
    )
    .assert_success()
    .stderr;
    let line = stderr
        .lines()
        .find(|l| l.contains("1 devices mapped") || l.contains("1 device mapped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("transform=\"site_enrich\"") || line.contains("transform=site_enrich"),
        "{line}"
    );
}

/// A guest whose heap only grows reaches its memory cap on some ordinary
/// event; that event gets a second try on a fresh instance instead of being
/// dropped, so all 600 records come out.
#[test]
fn an_instance_worn_out_does_not_cost_an_innocent_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("many.jsonl");
    let line = std::fs::read_to_string(support::sample_events())
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let text: String = (0..600)
        .map(|i| line.replace("a1f3c2e0d9b84e11", &format!("{i:016x}")) + "\n")
        .collect();
    std::fs::write(&events, text).unwrap();
    let out = transform_test(
        wasm("misbehave"),
        &[
            "--config",
            "mode=leak",
            "--events",
            events.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr.contains("exceeded its memory limit"),
        "the cap was never reached: {}",
        out.stderr
    );
    let out = out.assert_success();
    assert_eq!(out.lines.len(), 600);
    assert!(
        out.lines.iter().all(|l| !l.contains(": error in ")),
        "{}",
        out.stderr
    );
}
