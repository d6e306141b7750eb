//! Hostile transforms (the hardening issue): a guest that returns too much,
//! floods the log, loops on some events, or whose compiled code in the
//! cache is swapped. Each test runs the real `misbehave` component (or the
//! stock ones) through the transform stage the service runs, or through the
//! `cvp-stream` binary, and fails without the defence it checks.

mod support;

use cvp_proto::event::{Event, EventKey};
use cvp_stream::delivery::{Delivery, Outcome};
use cvp_stream::event::{Op, SourceEvent};
use cvp_stream::transforms::{PipelineConfig, TransformConfig, TransformStage};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::wasm;

/// `n` events; those for which `bad` holds carry the trigger `BAD` in
/// their description.
fn events(n: usize, bad: impl Fn(usize) -> bool) -> Vec<SourceEvent> {
    (0..n)
        .map(|i| SourceEvent {
            event: Arc::new(Event {
                key: Some(EventKey {
                    key: Some(format!("{i:016x}")),
                    timestamp: None,
                }),
                title: Some(format!("event {i}")),
                description: Some(if bad(i) { "BAD".into() } else { "fine".into() }),
                severity: 4,
                ..Default::default()
            }),
            op: Op::Updated,
            seq: i as u64,
            enrichment: None,
        })
        .collect()
}

/// The misbehave component in `mode` for events marked `BAD`, with more
/// `config` and the given `limits` changed.
fn misbehave(mode: &str, config: &[(&str, &str)]) -> TransformConfig {
    let mut t = TransformConfig::new("bad", wasm("misbehave"));
    t.config.insert("mode".into(), mode.into());
    t.config.insert("trigger".into(), "BAD".into());
    for (k, v) in config {
        t.config.insert((*k).into(), (*v).into());
    }
    t
}

fn stage(t: TransformConfig) -> TransformStage {
    t.validate().expect("valid limits");
    TransformStage::load(&[t], &PipelineConfig::default(), "t").expect("the chain loads")
}

/// Per event: `Ok(records)` or `Err((reason, error))`.
fn outcomes(deliveries: Vec<Delivery>) -> Vec<Result<usize, (&'static str, String)>> {
    deliveries
        .into_iter()
        .map(|d| match d.outcome {
            Outcome::Records(r) => Ok(r.len()),
            Outcome::Failed(f) => Err((f.reason, f.error)),
        })
        .collect()
}

/// Item 1: a value larger than `limits.bytes_per_event`, or more records
/// than `limits.records_per_event`, costs its event (reason `output`),
/// never the host's memory; the other events pass. A call's output past
/// `limits.bytes_per_batch` is handed on in parts.
#[test]
fn a_call_returning_too_much_costs_only_its_event() {
    let evs = events(10, |i| i == 3 || i == 7);
    let got = outcomes(stage(misbehave("big", &[("size", "5242880")])).deliveries(&evs));
    for (i, o) in got.iter().enumerate() {
        match o {
            Err(("output", e)) if i == 3 || i == 7 => {
                assert_eq!(
                    e,
                    "returned more than 4 MiB for one event (limits.bytes_per_event)"
                )
            }
            Ok(1) if i != 3 && i != 7 => {}
            other => panic!("event {i}: {other:?}"),
        }
    }

    let got = outcomes(stage(misbehave("fanout", &[("count", "5000")])).deliveries(&evs));
    assert_eq!(
        got[3],
        Err((
            "output",
            "returned 5000 records for one event (limits.records_per_event is 1000)".into()
        ))
    );
    assert_eq!(got.iter().filter(|o| **o == Ok(1)).count(), 8, "{got:?}");

    // The 400,000: more than wasmtime may copy out of the guest in
    // one call (twice bytes_per_batch), so it is never copied at all.
    let got = outcomes(stage(misbehave("fanout", &[("count", "400000")])).deliveries(&evs));
    assert_eq!(
        got[3],
        Err((
            "output",
            "handed the host more than 16 MiB at once (twice limits.bytes_per_batch)".into()
        ))
    );
    assert_eq!(got.iter().filter(|o| **o == Ok(1)).count(), 8, "{got:?}");

    // Every event 3 MiB, within the event limit: a call's 8 MiB holds two,
    // which go to the sink first; the others go on in the next calls
    // (nothing fails for being in a large batch).
    let evs = events(8, |_| true);
    let mut handed = Vec::new();
    stage(misbehave("big", &[("size", "3145728")])).deliveries_each(&evs, |d| {
        handed.push(outcomes(d));
    });
    assert_eq!(handed, vec![vec![Ok(1), Ok(1)]; 4]);
}

/// Item 5: with one event in six looping, each looping event costs one
/// timeout (it is tried once), so the healthy ones flow at close to five
/// per timeout; trying it twice halved that.
#[test]
fn one_looping_event_in_six_keeps_the_healthy_ones_flowing() {
    let timeout = Duration::from_millis(200);
    let mut t = misbehave("spin", &[]);
    t.limits.timeout = timeout;
    let mut stage = stage(t);
    let evs = events(60, |i| i % 6 == 5);
    let started = Instant::now();
    let got = outcomes(stage.deliveries(&evs));
    let elapsed = started.elapsed();
    let healthy = got.iter().filter(|o| **o == Ok(1)).count();
    assert_eq!(healthy, 50, "{got:?}");
    for o in got.iter().skip(5).step_by(6) {
        assert_eq!(*o, Err(("timeout", "timed out after 200ms".into())));
    }
    // The floor: the batch's own call and each of the 10 looping events
    // one timeout each, 11 timeouts (2.2 s), ~23 healthy events a second.
    // Trying each twice made it 21 timeouts (4.2 s, ~12 a second).
    let rate = healthy as f64 / elapsed.as_secs_f64();
    let floor = 50.0 / (11.0 * timeout.as_secs_f64());
    assert!(
        rate >= 0.7 * floor,
        "{rate:.1} healthy events/s in {elapsed:?}; one timeout per looping event allows {floor:.1}"
    );
}

/// Item 5: a batch whose retries pass `limits.retry_budget` hands over what
/// it has settled before it tries the rest, so nothing waits behind a
/// batch of looping events for longer than about the budget.
#[test]
fn retries_have_a_budget_and_what_is_settled_goes_first() {
    let mut t = misbehave("spin", &[]);
    t.limits.timeout = Duration::from_millis(50);
    t.limits.retry_budget = Duration::from_millis(300);
    let mut stage = stage(t);
    // Every other event loops: 20 looping events are 1 s of timeouts.
    let evs = events(40, |i| i % 2 == 1);
    let started = Instant::now();
    let mut handed = Vec::new();
    stage.deliveries_each(&evs, |d| handed.push((started.elapsed(), outcomes(d))));
    let total: usize = handed.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(total, 40);
    assert!(handed.len() >= 3, "{} hand-overs", handed.len());
    // The first call (50 ms), the budget (300 ms) and the retry under way
    // when it ran out (50 ms), with room for a loaded machine.
    let first = handed[0].0;
    assert!(
        first < Duration::from_millis(700),
        "first hand-over after {first:?}"
    );
    let healthy: usize = handed
        .iter()
        .map(|(_, d)| d.iter().filter(|o| **o == Ok(1)).count())
        .sum();
    assert_eq!(healthy, 20);
}

/// Item 4: a guest that logs thousands of lines per event, lines with
/// line breaks in them and a line of 1 MiB is held to its allowance (100
/// lines a second), its lines escaped (no forged host line) and cut, and
/// the log says how many were suppressed.
#[test]
fn a_flooding_guest_is_rate_limited_escaped_and_counted() {
    let (status, stdout, stderr) = support::run_to_end(&[
        "transform",
        "test",
        wasm("misbehave").to_str().unwrap(),
        "--config",
        "mode=flood",
        "--config",
        "trigger=",
        "--config",
        "count=2000",
        "--config",
        "size=1048576",
        "--log-level",
        "info",
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 9, "{stdout}");
    let floods = stderr.lines().filter(|l| l.contains("flood ")).count();
    assert!(
        (50..=200).contains(&floods),
        "{floods} of 18,000 guest lines written"
    );
    assert!(
        stderr
            .lines()
            .all(|l| !l.trim_start().starts_with("ERROR forged")),
        "a guest forged a log line"
    );
    assert!(stderr.contains("\\nERROR forged: this line is not the host's"));
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "a log line of {longest} bytes");
    assert!(
        stderr.contains("logged too much:") && stderr.contains("lines suppressed"),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
}

/// The cache entry the binary wrote for `component` into `dir` (the one
/// file that appeared).
fn cache_entry_of(dir: &Path, component: &Path) -> std::path::PathBuf {
    let before: Vec<_> = entries(dir);
    transform_test_cached(dir, component);
    let after = entries(dir);
    let new: Vec<_> = after.into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `transform test COMPONENT` with the cache in `dir`: its stdout.
fn transform_test_cached(dir: &Path, component: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cvp-stream"))
        .args(["transform", "test", component.to_str().unwrap()])
        .env("CVP_STREAM_CACHE_DIR", dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 6: the compiled code of severity-filter copied over the cache
/// entry of title-to-key does not run in its place: the entry names the
/// component it was compiled from, and a directory others may write to
/// is not used at all.
#[test]
fn a_swapped_cache_entry_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let title = wasm("title_to_key");
    let filter = wasm("severity_filter");
    let title_entry = cache_entry_of(&cache, &title);
    let filter_entry = cache_entry_of(&cache, &filter);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let expected = transform_test_cached(&cache, &title);
    // title-to-key: key = the title (severity-filter keeps the event key).
    assert!(
        expected
            .lines()
            .next()
            .unwrap()
            .contains("key=\"Interface Exceeded"),
        "{expected}"
    );
    std::fs::copy(&filter_entry, &title_entry).unwrap();
    assert_eq!(transform_test_cached(&cache, &title), expected);
    assert_ne!(
        std::fs::read(&title_entry).unwrap(),
        std::fs::read(&filter_entry).unwrap(),
        "the entry was written again from the right component"
    );

    // A cache others may write to is not trusted, even with sound entries.
    std::fs::copy(&filter_entry, &title_entry).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(transform_test_cached(&cache, &title), expected);
    assert_eq!(
        std::fs::read(&title_entry).unwrap(),
        std::fs::read(&filter_entry).unwrap(),
        "nothing is written to an untrusted cache"
    );
}
