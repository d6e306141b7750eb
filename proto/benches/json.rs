//! Benchmark of the two JSON writers for `Event`: the hand-written one on the
//! hot path (`event_to_json`) against prost-reflect's generated serializer
//! (`event_to_json_reflect`), over the same events. Also times the timestamp
//! printer, which the writer calls up to six times an event: the hand-written
//! one against prost-types' `Display`.
//!
//! `cargo bench -p cvp-proto` (release). A plain `Instant` loop, no harness:
//! each writer runs in alternating rounds and the fastest round counts, which
//! is the least disturbed one on a shared machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cvp_proto::event::Event;
use cvp_proto::json::{
    event_to_json, event_to_json_reflect, parse_event_json, parse_stream_response, write_timestamp,
};

/// The simulator's recorded sample, read at run time so the numbers follow it.
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../simulator/testdata/sample-events.jsonl"
);

/// One event with every field set (acks, notes, reads, metadata), which the
/// sample does not have.
const RICH: &str = r#"{"key":{"key":"d41f9b0c2e7a4f18","timestamp":"2026-11-20T09:14:03.125Z"},
    "severity":"EVENT_SEVERITY_CRITICAL","title":"Device Unreachable","description":"Device \"leaf-1\" stopped streaming",
    "eventType":"DEVICE_UNREACHABLE","data":{"data":{"deviceId":"JPE19181520","hostname":"leaf-1"}},
    "components":{"components":[{"type":"COMPONENT_TYPE_DEVICE","components":{"deviceId":"JPE19181520"}}]},
    "ack":{"ack":true,"acker":"ops@example.net","ackTime":"2026-11-20T09:20:00Z"},
    "notes":{"notes":{"1795166400000":{"note":"RMA opened","noteCreator":"ops@example.net"}}},
    "lastUpdatedTime":"2026-11-20T09:20:00.250Z","read":{"read":true,"reader":"noc","readTime":"2026-11-20T09:18:11.5Z"},
    "ruleId":"DEVICE_UNREACHABLE",
    "metadata":{"values":[{"values":{"values":{"site":"ams1","pod":"2"}}}]}}"#;

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(600);

/// Runs `f` over `events` for about [`ROUND`] and returns ns per event.
fn round(events: &[Event], f: &impl Fn(&Event) -> Vec<u8>) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND {
        for ev in events {
            black_box(f(black_box(ev)));
        }
        n += events.len() as u64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let text = std::fs::read_to_string(SAMPLE).expect("simulator/testdata/sample-events.jsonl");
    let mut events: Vec<Event> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_stream_response(l).unwrap().value.unwrap_or_default())
        .collect();
    events.push(parse_event_json(RICH).unwrap());
    let bytes: usize = events.iter().map(|e| event_to_json(e).len()).sum();

    let hand = |ev: &Event| event_to_json(ev);
    let generated = |ev: &Event| event_to_json_reflect(ev);
    // Warm up caches, the allocator and the descriptor pool.
    round(&events, &hand);
    round(&events, &generated);
    let (mut best_hand, mut best_gen) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        best_hand = best_hand.min(round(&events, &hand));
        best_gen = best_gen.min(round(&events, &generated));
    }

    // The timestamp printer: the hand-written one the writer uses against
    // prost-types' `Display`, which the reader's parsing side uses.
    let ts = events[0].key.as_ref().unwrap().timestamp.unwrap();
    let time = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::with_capacity(64);
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < ROUND {
                for _ in 0..1000 {
                    out.clear();
                    f(&mut out);
                    black_box(&out);
                }
                n += 1000;
            }
            best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    };
    let best_ts = time(&|out| write_timestamp(black_box(&ts), out));
    let best_display = time(&|out| {
        use std::io::Write;
        let _ = write!(out, "\"{}\"", black_box(&ts));
    });

    println!(
        "{} events ({} in the sample, 1 with every field), {:.0} bytes of JSON each on average; best of {ROUNDS} rounds of {} ms",
        events.len(),
        events.len() - 1,
        bytes as f64 / events.len() as f64,
        ROUND.as_millis()
    );
    println!("| writer | ns/event |");
    println!("| --- | ---: |");
    println!("| hand-written (event_to_json) | {best_hand:.0} |");
    println!("| generated (prost-reflect, event_to_json_reflect) | {best_gen:.0} |");
    println!("generated / hand-written: {:.2}x", best_gen / best_hand);
    println!("write_timestamp (hand-written): {best_ts:.1} ns/timestamp");
    println!(
        "prost-types Display: {best_display:.1} ns/timestamp ({:.2}x)",
        best_display / best_ts
    );
}
