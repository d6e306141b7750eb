//! Start-up: from starting `cvp-stream run` to `/ready` answering 200 (the
//! config loaded, every transform compiled or loaded from the compilation
//! cache and initialised, subscribed to CVP, Kafka answering). Each
//! transform set runs twice on a fresh cache directory: cold (compiling),
//! then warm (loading what the first run stored).

use anyhow::{bail, Context, Result};
use cvp_simulator::{SimOptions, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Gives up on a run that is not ready by then.
const READY_WITHIN: Duration = Duration::from_secs(120);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/examples")
}

pub async fn report() -> Result<()> {
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(
        SimOptions {
            token: Some(token.clone()),
            initial: 1000,
            updates: 0,
            ..SimOptions::default()
        },
        listener,
    )
    .await?;
    let mut sets = vec![(
        "stock title-to-key (53 KiB)".to_string(),
        "[{ name: title-to-key, path: \"builtin:title-to-key\" }]".to_string(),
    )];
    let python = examples_dir().join("site_enrich.wasm");
    if python.exists() {
        sets.push((
            "title-to-key + Python site-enrich (18 MB)".into(),
            format!(
                "[{{ name: title-to-key, path: \"builtin:title-to-key\" }}, {{ name: site-enrich, path: {:?}, config: {{ sites: {{ JPE19181520: dc1 }} }} }}]",
                python.display().to_string()
            ),
        ));
    } else {
        println!(
            "(Python example not built: {} is missing; transforms/python/site-enrich/build.sh builds it)\n",
            python.display()
        );
    }
    println!("CVP: the simulator with 1,000 events of state; Kafka: the mock cluster.\n");
    println!("| transforms | cold cache (s) | warm cache (s) |");
    println!("| --- | ---: | ---: |");
    for (name, transforms) in sets {
        let cache = tempfile_dir()?;
        let mut times = Vec::new();
        for _ in 0..2 {
            times.push(time_to_ready(sim.local_addr(), &token, &transforms, &cache).await?);
        }
        let _ = std::fs::remove_dir_all(&cache);
        println!("| {name} | {:.3} | {:.3} |", times[0], times[1]);
    }
    sim.shutdown().await;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cvp-stream-bench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn time_to_ready(
    cvp: std::net::SocketAddr,
    token: &str,
    transforms: &str,
    cache: &Path,
) -> Result<f64> {
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = cache.join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ cvp: {{ address: \"{cvp}\", token: \"{token}\", tls: {{ enabled: false }} }} }}\nsink: {{ kafka: {{ brokers: \"mock:9092\", topic: cvp-events, properties: {{ test.mock.num.brokers: \"1\" }} }} }}\nadmin: {{ listen: \"{admin}\" }}\ntransforms: {transforms}\n"
        ),
    )?;
    let client = reqwest::Client::new();
    let url = format!("http://{admin}/ready");
    let started = Instant::now();
    let log = cache.join("run.log");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&config)
            .env("CVP_STREAM_CACHE_DIR", cache.join("cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start cvp-stream run")?,
    );
    // Polling is the measurement here: 2 ms resolution is plenty against
    // the target of a second.
    while started.elapsed() < READY_WITHIN {
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return Ok(started.elapsed().as_secs_f64());
            }
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "cvp-stream run exited ({status}) before it was ready: {}",
                text.lines().last().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("cvp-stream run was not ready within {READY_WITHIN:?}")
}
