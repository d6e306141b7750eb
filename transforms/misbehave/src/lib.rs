//! A fixture for the host's fault tests: misbehaves in the configured way
//! for events whose description contains the trigger, and passes every
//! other event through unchanged. Built against contract 0.1 (`sdk-0.1`),
//! so those tests also prove that a 0.1 component still runs.

use std::hint::black_box;

use cvp_transform_sdk_01::{export_transform, log, Config, Event, KafkaRecord, Transform};

enum Mode {
    /// Keeps 1 MiB for good on every event (triggered or not), like a guest
    /// whose heap only grows: some innocent event meets the memory cap.
    Leak,
    Trap,
    Spin,
    Hog,
    Error,
    /// Returns the record with a value of `size` bytes.
    Big,
    /// Returns `count` copies of the record.
    Fanout,
    /// Logs `count` lines, each with a line break that would forge a log
    /// line of the host's, and one line of `size` bytes.
    Flood,
}

struct Misbehave {
    mode: Mode,
    trigger: String,
    size: usize,
    count: usize,
}

impl Transform for Misbehave {
    fn new(config: &Config) -> Result<Self, String> {
        // Guests may write to stderr (Python tracebacks, eprintln!): the
        // host must take it in every command, not only in `run`.
        if let Some(text) = config.get("say") {
            eprintln!("{text}");
        }
        let mode = match config.get("mode") {
            Some("leak") => Mode::Leak,
            Some("trap") => Mode::Trap,
            Some("spin") => Mode::Spin,
            Some("hog") => Mode::Hog,
            Some("error") => Mode::Error,
            Some("big") => Mode::Big,
            Some("fanout") => Mode::Fanout,
            Some("flood") => Mode::Flood,
            other => {
                return Err(format!(
                    "mode: invalid value {other:?} (expected leak, trap, spin, hog, error, big, fanout or flood)"
                ))
            }
        };
        let number = |key: &str, default: usize| {
            config
                .get(key)
                .map_or(Ok(default), str::parse)
                .map_err(|e| format!("{key}: {e}"))
        };
        Ok(Misbehave {
            mode,
            trigger: config.get_or("trigger", "MISBEHAVE").to_owned(),
            size: number("size", 8 << 20)?,
            count: number("count", 400_000)?,
        })
    }

    fn transform(
        &mut self,
        event: &Event,
        record: KafkaRecord,
    ) -> Result<Vec<KafkaRecord>, String> {
        if let Mode::Leak = self.mode {
            let mut chunk = vec![0u8; 1 << 20];
            for page in chunk.chunks_mut(4096) {
                page[0] = 1;
            }
            std::mem::forget(black_box(chunk));
            return Ok(vec![record]);
        }
        if !event.description.contains(&self.trigger) {
            return Ok(vec![record]);
        }
        match self.mode {
            Mode::Trap => panic!("misbehave: triggered by {}", event.key),
            Mode::Error => Err(format!("misbehave: triggered by {}", event.key)),
            Mode::Spin => spin(),
            Mode::Leak => unreachable!("handled above"),
            Mode::Hog => hog(),
            Mode::Big => {
                let mut record = record;
                record.value = Some(vec![b'x'; self.size]);
                Ok(vec![record])
            }
            Mode::Fanout => Ok(vec![record; self.count]),
            Mode::Flood => {
                for i in 0..self.count {
                    log::info(format!(
                        "flood {i} of {}\nERROR forged: this line is not the host's",
                        event.key
                    ));
                }
                log::info("y".repeat(self.size));
                Ok(vec![record])
            }
        }
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        // black_box keeps the optimiser from proving the loop useless.
        n = black_box(n.wrapping_add(1));
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        // Fresh linear memory is already zero, so the allocation alone might
        // never be touched; writing a byte per page makes the memory real.
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        hoard.push(black_box(chunk));
    }
}

export_transform!(Misbehave);
