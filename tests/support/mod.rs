//! Real parts for the integration tests: a tansu or nisshi broker (real
//! Kafka-protocol servers) on a loopback port, the CVP simulator in-process,
//! the `cvp-stream` binary as a user runs it, and an rdkafka consumer that
//! reads back exactly what was produced.

#![allow(dead_code)] // each test file uses its own subset

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: CI machines are small and run tests in parallel.
pub const DEADLINE: Duration = Duration::from_secs(match option_env!("CVP_TEST_DEADLINE") {
    Some(_) => 15,
    None => 90,
});

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the repo")
        .to_path_buf()
}

/// A component built from transforms/ by the host's build script.
pub fn wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CVP_STREAM_WASM_DIR")).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build.rs builds it",
        path.display()
    );
    path
}

pub fn sample_events() -> PathBuf {
    repo_root().join("simulator/testdata/sample-events.jsonl")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An installed broker: `$ENV`, else `~/.cargo/bin/NAME`, else NAME on
/// the PATH.
fn broker_binary(env: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let home_bin = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
        .join(name);
    if home_bin.exists() {
        return home_bin;
    }
    PathBuf::from(name)
}

/// A broker process: tansu with in-memory storage (`Broker::start`);
/// nisshi, tansu's successor, which has Kafka transactions, in memory or
/// in PostgreSQL (`Broker::nisshi`); or librdkafka's mock cluster
/// (`Broker::mock`), for fault injection. Stopped when dropped.
pub struct Broker {
    child: Option<Child>,
    /// How `child` was started, to start it again (`restart`).
    command: Option<(PathBuf, String, u16)>,
    /// Kept alive for as long as the broker is used.
    _mock:
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    pub addr: String,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// A broker on `port`: a second one where a stopped one was, to play a
    /// broker that comes back (with empty storage: tansu's is in memory).
    pub fn start_on(port: u16) -> Broker {
        Broker::spawn(
            broker_binary("TANSU", "tansu"),
            "memory://tansu/".into(),
            port,
        )
    }

    /// nisshi 0.7 (née tansu; `scripts/nisshi-version`) in memory: tansu
    /// 0.6 has no EndTxn and nisshi 0.8 refuses transactional producers, so
    /// transactions commit only here.
    pub fn nisshi() -> Broker {
        Broker::spawn(
            broker_binary("NISSHI", "nisshi"),
            "memory://nisshi/".into(),
            free_port(),
        )
    }

    /// nisshi keeping everything in PostgreSQL database `db` on this
    /// machine (made empty first), so that it survives `restart`: the
    /// topics, the records, and the transaction coordinator's state.
    pub fn nisshi_on_postgres(db: &str) -> Broker {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            let out = Command::new("psql")
                .args([admin, "-q", "-c", &sql])
                .output()
                .expect("psql (PostgreSQL's client) runs");
            assert!(
                out.status.success(),
                "{sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable");
        Broker::spawn(broker_binary("NISSHI", "nisshi"), url, free_port())
    }

    fn spawn(program: PathBuf, storage: String, port: u16) -> Broker {
        let addr = format!("127.0.0.1:{port}");
        let child = Broker::launch(&program, &storage, port);
        let broker = Broker {
            child: Some(child),
            command: Some((program, storage, port)),
            _mock: None,
            addr,
        };
        broker.wait_ready();
        broker
    }

    fn launch(program: &Path, storage: &str, port: u16) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        Command::new(program)
            .args([
                "broker",
                "--storage-engine",
                storage,
                "--cluster-id",
                "cvp-stream-test",
            ])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run .ci/run, which installs the brokers the tests use",
                    program.display()
                )
            })
    }

    /// Kills the broker (SIGKILL: nothing flushed, no goodbye) and starts
    /// it again on the same port and storage; returns once it answers.
    pub fn restart(&mut self) {
        let (program, storage, port) = self.command.clone().expect("a broker process");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = Some(Broker::launch(&program, &storage, port));
        self.wait_ready();
    }

    /// librdkafka's mock cluster (one broker, in this process, on a
    /// loopback port other processes can reach). It commits transactions
    /// and fences a producer whose transactional id was taken over, which
    /// tansu 0.6 cannot (it has no EndTxn); but it writes no transaction
    /// markers, so a read-committed consumer also sees aborted records.
    pub fn mock() -> Broker {
        let mock = rdkafka::mocking::MockCluster::new(1).expect("a mock cluster");
        let addr = mock.bootstrap_servers();
        let broker = Broker {
            child: None,
            command: None,
            _mock: Some(mock),
            addr,
        };
        broker.wait_ready();
        broker
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing
    /// answers, as with a hung broker or a network partition. Its state is
    /// kept, unlike a restart of this in-memory broker.
    pub fn freeze(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGSTOP);
        }
    }

    pub fn thaw(&self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGCONT);
        }
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a tansu broker (the mock cluster cannot be frozen)")
            .id()
    }

    fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.addr)
            .set("log_level", "3");
        cc
    }

    fn wait_ready(&self) {
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
        let start = Instant::now();
        while consumer
            .fetch_metadata(None, Duration::from_secs(1))
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the broker did not come up on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        if let Some(mock) = &self._mock {
            // The mock has no CreateTopics; it makes topics itself.
            mock.create_topic(name, partitions, 1)
                .unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
            return;
        }
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // rdkafka completes this future from its own thread: no runtime needed.
        let results = futures::executor::block_on(admin.create_topics([&topic], &opts))
            .expect("create_topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    fn consumer(&self) -> BaseConsumer {
        self.client_config()
            .set("group.id", "cvp-stream-tests")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    fn partitions(consumer: &BaseConsumer, topic: &str) -> i32 {
        consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata")
            .topics()[0]
            .partitions()
            .len() as i32
    }

    fn assign_from_start(consumer: &BaseConsumer, topic: &str) -> i32 {
        let partitions = Self::partitions(consumer, topic);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        partitions
    }

    /// Waits until `n` records have arrived on `topic` (all partitions) and
    /// returns them. That more may follow is checked by [`Broker::all`].
    /// On failure, shows the log of `host`, the process that should have
    /// produced them.
    pub fn consume(&self, host: &Host, topic: &str, n: usize) -> Vec<Record> {
        let consumer = self.consumer();
        Self::assign_from_start(&consumer, topic);
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                start.elapsed() < DEADLINE,
                "only {} of {n} records arrived on {topic}: {out:#?}\ncvp-stream log:\n{}",
                out.len(),
                host.log()
            );
            if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
                out.push(Record::from(&msg.expect("consume")));
            }
        }
        out
    }

    /// Waits for as many records on `topic` as `expected` holds and asserts
    /// they are `expected`, in order; returns them. That nothing more
    /// follows is for [`finish`] to check, once the host has stopped.
    pub fn expect_records(&self, host: &Host, topic: &str, expected: &[Record]) -> Vec<Record> {
        let got = self.consume(host, topic, expected.len());
        assert_eq!(
            got,
            expected,
            "the records on {topic}; cvp-stream log:\n{}",
            host.log()
        );
        got
    }

    /// Everything `topic` holds, once no producer writes to it any more: a
    /// sentinel record produced to each partition marks its end, so the
    /// read stops on a signal, not on a quiet period.
    pub fn all(&self, topic: &str) -> Vec<Record> {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let consumer = self.consumer();
        let partitions = Self::assign_from_start(&consumer, topic);
        let producer: ThreadedProducer<DefaultProducerContext> =
            self.client_config().create().expect("producer");
        // This call's own sentinel: an earlier call's, already in the
        // topic, must not end this one's reading.
        let mine = unique_number().to_string();
        for p in 0..partitions {
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(topic)
                        .partition(p)
                        .key(SENTINEL)
                        .payload(mine.as_bytes()),
                )
                .map_err(|(e, _)| e)
                .expect("produce sentinel");
        }
        producer
            .flush(Duration::from_secs(30))
            .expect("flush sentinels");
        let start = Instant::now();
        let (mut out, mut ended) = (Vec::new(), 0);
        while ended < partitions {
            assert!(
                start.elapsed() < DEADLINE,
                "sentinels did not come back on {topic}; so far {out:#?}"
            );
            if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
                let rec = Record::from(&msg.expect("consume"));
                if rec.key.as_deref() == Some(SENTINEL) {
                    if rec.value.as_deref() == Some(mine.as_bytes()) {
                        ended += 1;
                    }
                } else {
                    out.push(rec);
                }
            }
        }
        out
    }
}

const SENTINEL: &[u8] = b"--end-of-test--";

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A number no other call in this run has had.
fn unique_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (std::process::id() as u64) << 32 | n
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn text(topic: &str, key: &str, value: &str) -> Record {
        Record {
            topic: topic.into(),
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn value_json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().expect("a value")).expect("value is JSON")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl<M: Message> From<&M> for Record {
    fn from(m: &M) -> Record {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: m.topic().to_string(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// The `cvp-stream` binary, running as a user would run it. Its stderr is
/// collected line by line so tests can wait for a log line.
pub struct Host {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    line_rx: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

pub fn host_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvp-stream"));
    cmd.env_remove("RUST_LOG")
        .env_remove("CVP_TOKEN")
        .env_remove("CVP_PASSWORD");
    cmd
}

impl Host {
    /// `cvp-stream run --config <yaml>` with extra environment.
    pub fn run(yaml: &str, env: &[(&str, &str)]) -> Host {
        Host::run_with(yaml, env, |config| {
            vec![
                "run".into(),
                "--config".into(),
                config.display().to_string(),
            ]
        })
    }

    /// `cvp-stream` with the arguments `args` makes from the path of the
    /// config file it wrote `yaml` to.
    pub fn run_with(
        yaml: &str,
        env: &[(&str, &str)],
        args: impl FnOnce(&Path) -> Vec<String>,
    ) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut cmd = host_command();
        cmd.args(args(&config));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cvp-stream");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, line_rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Host {
            child,
            lines,
            line_rx,
            _dir: dir,
        }
    }

    /// Blocks until a stderr line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.line_rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line with {needle:?} within {DEADLINE:?}; log:\n{}",
                    self.log()
                ),
            }
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file descriptors the service holds open now.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, as systemd or Kubernetes would stop it; waits for the exit.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits for the process to exit by itself (after signals the test
    /// sent); returns its status and log.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_timeout(&mut self.child, DEADLINE).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "cvp-stream did not exit after SIGTERM; log:\n{}",
                self.log()
            )
        });
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log();
        (status, log)
    }

    /// [`Host::stop`], asserting a clean exit (status 0); returns the log.
    pub fn stop_cleanly(self) -> String {
        let (status, log) = self.stop();
        assert!(status.success(), "exit {status}; log:\n{log}");
        log
    }
}

/// The end of most pipeline tests, for each `(topic, records)`: exactly
/// these records arrive, in order; the host then stops cleanly on SIGTERM;
/// and the topic holds nothing more (no record sent twice, none late).
/// Returns the host's log for the test's own checks.
pub fn expect_exactly(broker: &Broker, host: Host, topics: &[(&str, &[Record])]) -> String {
    for (topic, expected) in topics {
        broker.expect_records(&host, topic, expected);
    }
    finish(broker, host, topics)
}

/// The second half of [`expect_exactly`], for a test that consumed and
/// checked the records itself: stops the host cleanly, then asserts each
/// topic holds exactly `records` (what the test consumed), nothing more.
/// Returns the host's log.
pub fn finish(broker: &Broker, host: Host, topics: &[(&str, &[Record])]) -> String {
    let log = host.stop_cleanly();
    for (topic, records) in topics {
        assert_eq!(
            broker.all(topic),
            *records,
            "{topic}: nothing more, nothing twice; log:\n{log}"
        );
    }
    log
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cvp-stream ARGS...` to completion; returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_end_with_env(args, &[])
}

/// [`run_to_end`] with extra environment, such as a token from a secret.
pub fn run_to_end_with_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = host_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run cvp-stream");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config for `run`: plaintext simulator at `cvp`, `transforms` as YAML
/// list items (may be empty), producing to `topic` on `broker`.
pub fn config(
    cvp: &str,
    cvp_extra: &str,
    transforms: &str,
    broker: &Broker,
    topic: &str,
) -> String {
    format!(
        "source:\n  cvp:\n    address: \"{cvp}\"\n{cvp_extra}\ntransforms:\n{}\nsink:\n  kafka:\n    brokers: \"{}\"\n    topic: {topic}\n",
        if transforms.trim().is_empty() { "  []".to_string() } else { transforms.to_string() },
        broker.addr
    )
}

/// One item of a `transforms:` list: the component at `path`, then
/// `extra` (indented keys such as `config:`, each line ending in `\n`).
pub fn transform_at(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "  - name: {name}\n    path: {:?}\n{extra}",
        path.display().to_string()
    )
}

/// [`transform_at`] for a component that build.rs builds.
pub fn transform(name: &str, file: &str, extra: &str) -> String {
    transform_at(name, &wasm(file), extra)
}

/// A config that `validate` can check and `run` can load, with nothing
/// listening at its CVP and Kafka addresses; `transforms` as list items.
pub fn offline_config(transforms: &str) -> String {
    format!(
        "source: {{ cvp: {{ address: \"127.0.0.1:1\", token: x, tls: {{ enabled: false }} }} }}\ntransforms:\n{transforms}sink: {{ kafka: {{ brokers: \"127.0.0.1:1\", topic: t }} }}\n"
    )
}

/// `cvp-stream CMD --config CONFIG` run to completion, as [`run_to_end`].
pub fn run_config(cmd: &str, config: &Path) -> (ExitStatus, String, String) {
    run_to_end(&[cmd, "--config", config.to_str().unwrap()])
}

/// The live (non-INITIAL) entries of the sample recording, as JSON.
pub fn sample_live() -> Vec<serde_json::Value> {
    std::fs::read_to_string(sample_events())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] != "INITIAL")
        .collect()
}

/// The events of the sample recording's live UPDATED entries (each entry's
/// `value`), in order: what `run` forwards with the default `operations`.
pub fn sample_updated() -> Vec<serde_json::Value> {
    sample_live()
        .into_iter()
        .filter(|e| e["type"] == "UPDATED")
        .map(|e| e["value"].clone())
        .collect()
}

/// A plain HTTP/1.1 GET on loopback: (status, body). Enough for the admin
/// endpoint; a connection refused is status 0.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    if conn.read_to_string(&mut raw).is_err() {
        return (0, String::new());
    }
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // axum answers small bodies with Content-Length, not chunked.
    (status, body.to_string())
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with
/// `what` and the host's log. For conditions that have no signal to wait
/// on, such as a metric reaching a value.
pub fn eventually<T>(host: &Host, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}; cvp-stream log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample `series` (name and labels exactly as exposed)
/// in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The simulator with `opts` on a loopback port, and its address.
pub async fn simulator(opts: cvp_simulator::SimOptions) -> (cvp_simulator::SimHandle, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = cvp_simulator::Simulator::start(opts, listener)
        .await
        .expect("simulator");
    let addr = sim.local_addr().to_string();
    (sim, addr)
}

/// The simulator serving `script` (recording entries, sent as fast as the
/// host reads) with a required `token`, plaintext, on a loopback port.
pub async fn scripted_simulator(
    token: &str,
    script: Vec<cvp_proto::event::EventStreamResponse>,
) -> cvp_simulator::SimHandle {
    let (sim, _) = simulator(cvp_simulator::SimOptions {
        token: Some(token.into()),
        script,
        rate: 0.0,
        ..cvp_simulator::SimOptions::default()
    })
    .await;
    sim
}

/// [`scripted_simulator`] serving the sample recording; and its address.
pub async fn sample_simulator(token: &str) -> (cvp_simulator::SimHandle, String) {
    let sim = scripted_simulator(token, cvp_simulator::load_jsonl(&sample_events()).unwrap()).await;
    let addr = sim.local_addr().to_string();
    (sim, addr)
}
