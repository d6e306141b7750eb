//! TLS for the NATS, Redis and MQTT sinks, each against a private server the
//! test starts itself on a free loopback port with TLS on (nats-server,
//! redis-server, mosquitto; the shared plaintext servers are never touched),
//! using a CA and server certificate made for the test
//! (`cvp_simulator::test_pki`). For each sink: records sent over TLS with
//! the CA in the sink's config are read back exactly (topic, key, value) by
//! an independent TLS client that trusts only that CA; and a sink without
//! the CA (so the server's certificate is untrusted) delivers nothing,
//! `sink_up` stays 0, the run ends at shutdown, and the log says the
//! certificate is the problem. A missing server binary fails the tests; it
//! never skips them. Servers and temp dirs go away when the test ends, also
//! on a panic (drop guards).

#[path = "support/natsredis.rs"]
mod natsredis;
mod support;

use async_nats::jetstream;
use cvp_stream::delivery::DeliveryStats;
use cvp_stream::sinks::{MqttConfig, NatsConfig, RedisConfig, SinkConfig};
use natsredis::{delivered, description, feed, title, title_to_key, unique, PrivateServer};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::QoS;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Records per run.
const N: usize = 20;
/// A run, or a wait for something to show, at most.
const LIMIT: Duration = Duration::from_secs(30);

// The sinks' metrics (`sink_up`) are the process's: the two tests of a
// sink run one after the other.
static NATS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static REDIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static MQTT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test's PKI as files: the CA, and the server's certificate and key
/// (for `localhost` and `127.0.0.1`). The directory goes when dropped.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let pki = cvp_simulator::test_pki(&["localhost", "127.0.0.1"]).expect("a test PKI");
        let dir = tempfile::tempdir().expect("a temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &pki.ca_pem),
            cert: write("server.pem", &pki.identity.cert_pem),
            key: write("server.key", &pki.identity.key_pem),
            _dir: dir,
        }
    }

    /// A rustls client config trusting this CA and nothing else.
    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

/// A path as a YAML string.
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

/// The server binary: where the package puts it, else on PATH; a clear
/// failure if it is not installed.
fn binary(name: &str, installed_at: &str) -> String {
    if Path::new(installed_at).is_file() {
        return installed_at.to_string();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => p.display().to_string(),
        None => panic!(
            "{name} is not installed (not at {installed_at}, not on PATH): the TLS sink tests need it to run a private TLS server; install it"
        ),
    }
}

/// Starts `program` (via the shared [`PrivateServer`] guard: killed when
/// dropped, its port polled until it accepts, with a deadline).
fn server(
    name: &str,
    installed_at: &str,
    args: impl FnOnce(u16, &Path) -> Vec<String>,
) -> PrivateServer {
    PrivateServer::start(&binary(name, installed_at), args)
}

fn strings<const K: usize>(a: [&str; K]) -> Vec<String> {
    a.map(String::from).to_vec()
}

// ---------------------------------------------------------------------
// The log, as the service would print it (INFO and above), captured for
// the whole process; a test reads what came after its mark.

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(buf))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the log is now.
fn log_mark() -> usize {
    log_buffer().lock().unwrap().len()
}

/// The lines logged since `mark` that contain `needle`.
fn log_lines(mark: usize, needle: &str) -> Vec<String> {
    let buf = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&buf[mark..])
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

fn sink_up(sink: &str) -> i64 {
    cvp_stream::metrics::get()
        .sink_up
        .get_or_create(&cvp_stream::metrics::labels([("sink", sink)]))
        .get()
}

/// What the feed's records are: (topic, key, value), sorted.
fn expected(topic: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = (0..N)
        .map(|i| (topic.to_string(), title(i), description(i)))
        .collect();
    v.sort();
    v
}

/// Runs the feed into `sink` to the end: every record delivered.
async fn deliver_all(sink: SinkConfig) {
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let config = natsredis::config(&sim, vec![title_to_key()], sink, None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    assert_eq!(
        (stats.events, stats.produced, stats.failed_delivery),
        (N as u64, N as u64, 0),
        "{stats:?}"
    );
}

/// Runs the feed into `sink`, whose server's certificate it does not
/// trust: waits until the log (lines with `needle`) reports the failure
/// and says it is the certificate, checking that `sink_up` stays 0
/// meanwhile; then shuts down and checks nothing was delivered. The log
/// lines and the run's counts go back.
async fn refused(
    sink: SinkConfig,
    name: &str,
    topic: &str,
    needle: &str,
) -> (Vec<String>, DeliveryStats) {
    // The gauge is the process's: a sink of an earlier test in this binary
    // reports itself down once its run has ended; wait for that first.
    let settle = Instant::now();
    while sink_up(name) != 0 {
        assert!(
            settle.elapsed() < Duration::from_secs(5),
            "sink_up{{sink={name}}} still 1 from an earlier sink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mark = log_mark();
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let config = natsredis::config(&sim, vec![title_to_key()], sink, None);
    let shutdown = CancellationToken::new();
    let (ender, sent) = natsredis::end_when_done(sim, shutdown.clone());
    let run = tokio::spawn(natsredis::run(config, shutdown.clone()));
    let start = Instant::now();
    let lines = loop {
        assert_eq!(
            sink_up(name),
            0,
            "sink_up{{sink={name}}} with an untrusted certificate"
        );
        let lines = log_lines(mark, needle);
        let said = lines
            .iter()
            .any(|l| l.to_lowercase().contains("certificate"));
        // And every event was handed to the pipeline: the records exist.
        if said && *sent.borrow() == N as u64 {
            break lines;
        }
        assert!(
            start.elapsed() < LIMIT,
            "no log line with {needle:?} saying the certificate is the problem within {LIMIT:?} ({} of {N} events sent); got {lines:#?}",
            *sent.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A while longer: it does not connect after all.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(sink_up(name), 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let stats = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the run ends at shutdown")
        .unwrap()
        .expect("the run ends cleanly");
    let _ = ender.await;
    eprintln!("{name}: {stats:?}");
    assert_eq!(stats.produced, 0, "{stats:?}");
    assert_eq!(delivered(name, topic), 0);
    assert_eq!(sink_up(name), 0);
    (lines, stats)
}

// ---------------------------------------------------------------------
// NATS

/// nats-server with TLS required and JetStream, on a port of its own.
fn nats_server(pki: &Pki) -> PrivateServer {
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    server("nats-server", "/usr/sbin/nats-server", |port, dir| {
        strings([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--tls",
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "-js",
            "-sd",
            &dir.display().to_string(),
        ])
    })
}

/// `sink.nats` as a user writes it: a `tls://` URL, a stream for `topic`,
/// and `tls: { enabled: true, ca_file }` when `ca` is given.
fn nats_sink(port: u16, topic: &str, stream: &str, ca: Option<&Path>) -> SinkConfig {
    let tls = match ca {
        Some(ca) => format!("{{ enabled: true, ca_file: {} }}", yaml_path(ca)),
        None => "{ enabled: true }".into(),
    };
    let yaml = format!(
        "url: tls://127.0.0.1:{port}\ntopic: {topic}\nstream: {{ name: {stream}, subjects: [{topic}], storage: memory }}\ntls: {tls}\nack_timeout: 1s\nflush_timeout: 500ms\n"
    );
    let cfg: NatsConfig = serde_yaml::from_str(&yaml).expect("a valid sink.nats block");
    SinkConfig::Nats(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_over_tls() {
    let _serial = NATS.lock().await;
    let pki = Pki::new();
    let server = nats_server(&pki);
    let (topic, stream) = (unique("events"), unique("TLS_"));
    deliver_all(nats_sink(server.port, &topic, &stream, Some(&pki.ca))).await;

    // Read back by a client of its own, over TLS, trusting the test CA.
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(pki.client_config())
        .connect(format!("tls://127.0.0.1:{}", server.port))
        .await
        .expect("a TLS client trusting the test CA connects");
    let js = jetstream::new(client);
    let mut s = js.get_stream(&stream).await.expect("the sink's stream");
    let state = s.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, N as u64, "exactly the records, none twice");
    let mut got = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.expect("a stored message");
        let key = m
            .headers
            .get("Cvp-Key")
            .map(|v| v.as_str().to_string())
            .expect("the key header");
        got.push((
            m.subject.to_string(),
            key,
            String::from_utf8(m.payload.to_vec()).unwrap(),
        ));
    }
    got.sort();
    assert_eq!(got, expected(&topic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_untrusted_certificate_is_refused() {
    let _serial = NATS.lock().await;
    let pki = Pki::new();
    let server = nats_server(&pki);
    let (topic, stream) = (unique("events"), unique("TLS_"));
    let (lines, stats) = refused(
        nats_sink(server.port, &topic, &stream, None),
        "nats",
        &topic,
        "NATS",
    )
    .await;
    eprintln!("reported: {lines:#?}");
    // The sink waits for its stream before it takes a record: all of them
    // stayed in the pipeline, undelivered.
    assert_eq!(stats.events, 0, "{stats:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("certificate was refused") && l.contains("sink.nats.tls.ca_file")),
        "{lines:#?}"
    );

    // Nothing reached the server: the sink could not even make its stream.
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(pki.client_config())
        .connect(format!("tls://127.0.0.1:{}", server.port))
        .await
        .expect("a TLS client trusting the test CA connects");
    let js = jetstream::new(client);
    assert!(js.get_stream(&stream).await.is_err(), "no stream was made");
}

// ---------------------------------------------------------------------
// Redis

/// redis-server with only a TLS port (no plaintext one), no persistence.
fn redis_server(pki: &Pki) -> PrivateServer {
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    server("redis-server", "/usr/bin/redis-server", |port, dir| {
        strings([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
        ])
    })
}

/// `sink.redis` as a user writes it: a `rediss://` URL, and `tls: {
/// enabled: true, ca_file }` when `ca` is given.
fn redis_sink(port: u16, topic: &str, ca: Option<&Path>) -> SinkConfig {
    let tls = match ca {
        Some(ca) => format!("{{ enabled: true, ca_file: {} }}", yaml_path(ca)),
        None => "{ enabled: true }".into(),
    };
    let yaml = format!(
        "url: rediss://127.0.0.1:{port}\ntopic: {topic}\ntls: {tls}\nresponse_timeout: 1s\nflush_timeout: 500ms\n"
    );
    let cfg: RedisConfig = serde_yaml::from_str(&yaml).expect("a valid sink.redis block");
    SinkConfig::Redis(cfg)
}

/// A redis-crate connection of the test's own, over TLS trusting the CA.
async fn redis_tls(pki: &Pki, port: u16) -> redis::aio::MultiplexedConnection {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config()))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("a TLS client trusting the test CA connects");
    let (conn, driver) = redis::aio::MultiplexedConnection::new_with_config(
        &redis::RedisConnectionInfo::default(),
        tls,
        redis::AsyncConnectionConfig::new(),
    )
    .await
    .expect("a Redis connection over TLS");
    tokio::spawn(driver);
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delivers_over_tls() {
    let _serial = REDIS.lock().await;
    let pki = Pki::new();
    let server = redis_server(&pki);
    let topic = unique("events");
    deliver_all(redis_sink(server.port, &topic, Some(&pki.ca))).await;

    let mut conn = redis_tls(&pki, server.port).await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&topic)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let text = |v: &redis::Value| -> String {
        String::from_utf8(redis::from_redis_value::<Vec<u8>>(v.clone()).expect("bytes")).unwrap()
    };
    let mut got: Vec<_> = reply
        .ids
        .iter()
        .map(|e| {
            assert_eq!(e.map.len(), 2, "key and value only: {:?}", e.map);
            (topic.clone(), text(&e.map["key"]), text(&e.map["value"]))
        })
        .collect();
    got.sort();
    assert_eq!(got, expected(&topic), "exactly the records, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_untrusted_certificate_is_refused() {
    let _serial = REDIS.lock().await;
    let pki = Pki::new();
    let server = redis_server(&pki);
    let topic = unique("events");
    let (lines, stats) = refused(
        redis_sink(server.port, &topic, None),
        "redis",
        &topic,
        &format!("Redis at 127.0.0.1:{}", server.port),
    )
    .await;
    eprintln!("reported: {lines:#?}");
    // Every record reached the sink and none was delivered.
    assert_eq!(stats.events, N as u64, "{stats:?}");

    let mut conn = redis_tls(&pki, server.port).await;
    let len: u64 = redis::cmd("XLEN")
        .arg(&topic)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(len, 0, "nothing reached the server");
}

// ---------------------------------------------------------------------
// MQTT

/// Mosquitto with one TLS listener, anonymous, no persistence. As root it
/// would switch to the `mosquitto` user, who cannot read the test's files:
/// it stays the user it was started as.
fn mosquitto(pki: &Pki) -> PrivateServer {
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    let user = if is_root() { "user root\n" } else { "" };
    server("mosquitto", "/usr/sbin/mosquitto", |port, dir| {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\nallow_anonymous true\npersistence false\n{user}"
            ),
        )
        .unwrap();
        strings(["-c", &conf.display().to_string()])
    })
}

/// Whether the test runs as root (uid 0).
fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// `sink.mqtt` as a user writes it: an `mqtts://` URL, and `ca_file` when
/// `ca` is given.
fn mqtt_sink(port: u16, topic: &str, ca: Option<&Path>) -> SinkConfig {
    let ca = match ca {
        Some(ca) => format!("ca_file: {}\n", yaml_path(ca)),
        None => String::new(),
    };
    let yaml = format!(
        "url: mqtts://127.0.0.1:{port}\ntopic: {topic}\nclient_id: {}\nkeep_alive: 5s\nflush_timeout: 500ms\n{ca}",
        unique("cvp-stream-tls-")
    );
    let cfg: MqttConfig = serde_yaml::from_str(&yaml).expect("a valid sink.mqtt block");
    SinkConfig::Mqtt(cfg)
}

/// An MQTT 5 subscriber of the test's own over TLS (trusting the test CA)
/// to `topic`, collecting (topic, key property, payload).
struct Subscriber {
    got: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: CancellationToken,
}

impl Subscriber {
    async fn start(pki: &Pki, port: u16, topic: &str) -> Subscriber {
        let mut o = v5::MqttOptions::new(unique("sub-"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(pki.client_config())),
        ));
        let (client, mut events) = v5::AsyncClient::new(o, 100);
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let deadline = Instant::now() + LIMIT;
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), events.poll())
                .await
                .expect("the subscription is confirmed in time")
                .expect("a TLS subscriber trusting the test CA connects");
            if let v5::Event::Incoming(v5::mqttbytes::v5::Packet::SubAck(_)) = ev {
                break;
            }
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        {
            let (got, stop) = (got.clone(), stop.clone());
            tokio::spawn(async move {
                let _client = client; // the event loop ends when it drops
                loop {
                    let ev = tokio::select! {
                        ev = events.poll() => ev,
                        _ = stop.cancelled() => return,
                    };
                    match ev {
                        Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p))) => {
                            let key = p
                                .properties
                                .iter()
                                .flat_map(|p| &p.user_properties)
                                .find(|(k, _)| k == "key")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default();
                            got.lock().unwrap().push((
                                String::from_utf8_lossy(&p.topic).into_owned(),
                                key,
                                String::from_utf8_lossy(&p.payload).into_owned(),
                            ))
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        }
        Subscriber { got, stop }
    }

    /// Waits for `n` messages, then a moment more so extra ones would show.
    async fn wait_for(&self, n: usize) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + LIMIT;
        while self.got.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived within {LIMIT:?}",
                self.got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_delivers_over_tls() {
    let _serial = MQTT.lock().await;
    let pki = Pki::new();
    let server = mosquitto(&pki);
    let topic = unique("events");
    let sub = Subscriber::start(&pki, server.port, &topic).await;
    deliver_all(mqtt_sink(server.port, &topic, Some(&pki.ca))).await;
    let mut got = sub.wait_for(N).await;
    got.sort();
    assert_eq!(got, expected(&topic), "exactly the records, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_untrusted_certificate_is_refused() {
    let _serial = MQTT.lock().await;
    let pki = Pki::new();
    let server = mosquitto(&pki);
    let topic = unique("events");
    let sub = Subscriber::start(&pki, server.port, &topic).await;
    let (lines, stats) = refused(
        mqtt_sink(server.port, &topic, None),
        "mqtt",
        &topic,
        &format!("mqtts://127.0.0.1:{}", server.port),
    )
    .await;
    eprintln!("reported: {lines:#?}");
    // Every record reached the sink and none was delivered.
    assert_eq!(stats.events, N as u64, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sub.got.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
}
