//! `cvp-stream bench` itself: a short run of every part against the
//! in-process mock cluster, checking that the harness counts what it
//! claims (a run that loses an event fails inside the bench).

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cvp-stream"))
        .args(["--log-level", "error", "bench"])
        .args(args)
        .output()
        .expect("run cvp-stream bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The table row whose first cells are `prefix`, split into cells.
fn row(out: &str, prefix: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{out}"))
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn throughput_and_stage_count_every_event() {
    let out = bench(&[
        "--only",
        "stage,throughput",
        "--events",
        "3000",
        "--runs",
        "1",
        "--stage-events",
        "1000",
    ]);
    // Every event makes one record, with no transform and with the stock one.
    assert_eq!(row(&out, "| mock cluster | none |")[2], "3000", "{out}");
    assert_eq!(
        row(&out, "| mock cluster | title-to-key |")[2],
        "3000",
        "{out}"
    );
    // severity-filter drops the events below info; the rest arrive.
    let three: u64 = row(&out, "| mock cluster | severity-filter")[2]
        .parse()
        .expect("a record count");
    assert!(three > 0 && three <= 3000, "{out}");
    let stage = row(&out, "| WebAssembly title-to-key");
    let ns: f64 = stage[1].parse().expect("ns per event");
    assert!(ns > 0.0, "{out}");
}

#[test]
fn latency_has_samples_for_every_live_update() {
    let out = bench(&[
        "--only",
        "latency",
        "--latency-rate",
        "1000",
        "--latency-seconds",
        "3",
    ]);
    let cells = row(&out, "| mock cluster |");
    // 3000 events, less the first second (warm-up) and the deletions
    // (about 10%), which carry no change time.
    let samples: u64 = cells[1].parse().expect("samples");
    assert!((1500..=2000).contains(&samples), "{out}");
    let p50: f64 = cells[2].parse().expect("p50");
    let max: f64 = cells[5].parse().expect("max");
    assert!(p50 > 0.0 && p50 <= max, "{out}");
}
