//! End-to-end tests against a real simulator on a loopback listener.

use std::collections::HashSet;
use std::sync::Arc;

use cvp_proto::arista::time::TimeBounds;
use cvp_proto::event::event_service_client::EventServiceClient;
use cvp_proto::event::{Event, EventKey, EventRequest, EventStreamRequest, EventStreamResponse};
use cvp_proto::Operation;
use cvp_simulator::{load_jsonl, test_pki, SimHandle, SimOptions, Simulator};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Streaming};

type Client = EventServiceClient<Channel>;

async fn start(opts: SimOptions) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(opts, listener).await.unwrap()
}

async fn client(sim: &SimHandle) -> Client {
    let url = format!("http://{}", sim.local_addr());
    EventServiceClient::connect(url).await.unwrap()
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn take(stream: &mut Streaming<EventStreamResponse>, n: usize) -> Vec<EventStreamResponse> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match stream.message().await.unwrap() {
            Some(m) => out.push(m),
            None => panic!("stream ended after {} of {n} messages", out.len()),
        }
    }
    out
}

async fn collect(mut stream: Streaming<EventStreamResponse>) -> Vec<EventStreamResponse> {
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(m);
    }
    out
}

fn op(m: &EventStreamResponse) -> Operation {
    Operation::try_from(m.r#type).unwrap()
}

fn key_of(m: &EventStreamResponse) -> (String, i64, i32) {
    let k = m.value.as_ref().unwrap().key.as_ref().unwrap();
    let ts = k.timestamp.unwrap();
    (k.key.clone().unwrap(), ts.seconds, ts.nanos)
}

#[tokio::test]
async fn subscribe_gets_state_sync_then_live_feed() {
    let sim = start(SimOptions {
        initial: 5,
        updates: 200,
        rate: 0.0,
        seed: 3,
        ..Default::default()
    })
    .await;
    let mut c = client(&sim).await;
    let mut s = c
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let initial = take(&mut s, 6).await;
    assert!(initial[..5].iter().all(|m| op(m) == Operation::Initial));
    assert!(initial[..5]
        .iter()
        .all(|m| m.value.as_ref().unwrap().title.is_some()));
    assert_eq!(op(&initial[5]), Operation::InitialSyncComplete);
    assert!(initial[5].value.is_none());

    let live = take(&mut s, 200).await;
    sim.wait_live_done().await;
    assert!(live
        .iter()
        .all(|m| matches!(op(m), Operation::Updated | Operation::Deleted)));
    let t = |m: &EventStreamResponse| m.time.map(|t| (t.seconds, t.nanos));
    assert!(live.windows(2).all(|w| t(&w[0]) <= t(&w[1])), "in order");
    // Deletes carry only the key; partial updates carry the key plus changes.
    for m in live.iter().filter(|m| op(m) == Operation::Deleted) {
        let v = m.value.as_ref().unwrap();
        assert!(v.key.is_some() && v.title.is_none());
    }
    assert!(live.iter().any(|m| op(m) == Operation::Deleted));
    assert!(live
        .iter()
        .any(|m| op(m) == Operation::Updated && m.value.as_ref().unwrap().title.is_none()));

    // A late subscriber gets the resulting state as INITIAL.
    let mut state: HashSet<_> = initial[..5].iter().map(key_of).collect();
    for m in &live {
        match op(m) {
            Operation::Deleted => assert!(state.remove(&key_of(m))),
            _ => {
                state.insert(key_of(m));
            }
        }
    }
    let mut s2 = c
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let again = take(&mut s2, state.len() + 1).await;
    let keys: HashSet<_> = again[..state.len()].iter().map(key_of).collect();
    assert_eq!(keys, state);
    assert_eq!(op(&again[state.len()]), Operation::InitialSyncComplete);

    let stats = sim.stats();
    assert_eq!(stats.subscribes, 2);
    assert_eq!(stats.sent_initial_sync_complete, 2);
    assert_eq!(stats.sent_updated + stats.sent_deleted, 200);
    sim.shutdown().await;
    // Open streams end with the simulator.
    assert!(s.message().await.map_or(true, |m| m.is_none()));
}

#[tokio::test]
async fn filters_apply_to_initial_and_live() {
    let sim = start(SimOptions {
        initial: 30,
        updates: 300,
        rate: 0.0,
        seed: 9,
        partial_updates: true,
        ..Default::default()
    })
    .await;
    let mut c = client(&sim).await;
    let filter = Event {
        event_type: Some("BGP_SESSION_DOWN".into()),
        ..Default::default()
    };
    let req = || EventStreamRequest {
        partial_eq_filter: vec![filter.clone()],
        time: None,
    };
    let mut s = c.subscribe(req()).await.unwrap().into_inner();
    // Replay the filtered stream into a state; partial updates and deletes
    // must only ever concern events already known to be BGP events.
    let mut state = HashSet::new();
    let mut live = 0;
    loop {
        let m = s.message().await.unwrap().unwrap();
        match op(&m) {
            Operation::InitialSyncComplete => break,
            _ => {
                let v = m.value.as_ref().unwrap();
                assert_eq!(v.event_type.as_deref(), Some("BGP_SESSION_DOWN"));
                state.insert(key_of(&m));
            }
        }
    }
    assert!(!state.is_empty());
    sim.wait_live_done().await;
    // Everything live has been handed to the stream; drain what matched.
    let current = collect(c.get_all(req()).await.unwrap().into_inner()).await;
    let want: HashSet<_> = current.iter().map(key_of).collect();
    while state != want {
        let m = s.message().await.unwrap().unwrap();
        live += 1;
        let v = m.value.as_ref().unwrap();
        match op(&m) {
            Operation::Deleted => assert!(state.remove(&key_of(&m))),
            _ if v.event_type.is_some() => {
                assert_eq!(v.event_type.as_deref(), Some("BGP_SESSION_DOWN"));
                state.insert(key_of(&m));
            }
            _ => assert!(state.contains(&key_of(&m)), "partial for a non-BGP event"),
        }
    }
    assert!(live > 0);
    assert!(current
        .iter()
        .all(|m| m.value.as_ref().unwrap().event_type.as_deref() == Some("BGP_SESSION_DOWN")));
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_mode_replays_sample() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-events.jsonl");
    let script = load_jsonl(&path).unwrap();
    let init: Vec<_> = script
        .iter()
        .filter(|m| m.r#type == Operation::Initial as i32)
        .cloned()
        .collect();
    let live: Vec<_> = script
        .iter()
        .filter(|m| m.r#type != Operation::Initial as i32)
        .cloned()
        .collect();
    let sim = start(SimOptions {
        script,
        rate: 0.0,
        ..Default::default()
    })
    .await;
    let mut c = client(&sim).await;
    let mut s = c
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let got = take(&mut s, init.len() + 1 + live.len()).await;
    assert_eq!(&got[..init.len()], &init[..]);
    assert_eq!(op(&got[init.len()]), Operation::InitialSyncComplete);
    assert_eq!(&got[init.len() + 1..], &live[..], "live entries verbatim");
    sim.wait_live_done().await;

    // The state now: INITIAL minus the deleted BGP event plus new ones.
    let state = collect(
        c.get_all(EventStreamRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let keys: Vec<_> = state.iter().map(|m| key_of(m).0).collect();
    assert!(!keys.contains(&"e91c0a7b3d664f28".to_string()));
    assert!(keys.contains(&"f2d7b5c1a8e94d30".to_string()));
    assert!(keys.contains(&"1bb2cc3dd4ee5ff6".to_string()));

    let one = c
        .get_one(EventRequest {
            key: state[0].value.as_ref().unwrap().key.clone(),
            time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.value, state[0].value);
    let missing = c
        .get_one(EventRequest {
            key: Some(EventKey {
                key: Some("nope".into()),
                timestamp: None,
            }),
            time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    sim.shutdown().await;
}

#[tokio::test]
async fn subscribe_rejects_time_bounds() {
    let sim = start(SimOptions::default()).await;
    let mut c = client(&sim).await;
    let err = c
        .subscribe(EventStreamRequest {
            partial_eq_filter: vec![],
            time: Some(TimeBounds::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    sim.shutdown().await;
}

#[tokio::test]
async fn get_all_with_start_returns_state_then_changes() {
    let sim = start(SimOptions {
        initial: 4,
        updates: 40,
        rate: 0.0,
        seed: 5,
        partial_updates: false,
        ..Default::default()
    })
    .await;
    let mut c = client(&sim).await;
    let mut s = c
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let all = take(&mut s, 4 + 1 + 40).await;
    sim.wait_live_done().await;
    let live = &all[5..];
    let start = live[19].time;
    let hist = collect(
        c.get_all(EventStreamRequest {
            partial_eq_filter: vec![],
            time: Some(TimeBounds { start, end: None }),
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    // Expected state at `start`: the initial state plus the first 20 changes.
    let mut state: HashSet<_> = all[..4].iter().map(key_of).collect();
    for m in &live[..20] {
        if op(m) == Operation::Deleted {
            state.remove(&key_of(m));
        } else {
            state.insert(key_of(m));
        }
    }
    let n = state.len();
    assert!(hist[..n].iter().all(|m| op(m) == Operation::Initial));
    assert_eq!(hist[..n].iter().map(key_of).collect::<HashSet<_>>(), state);
    assert_eq!(&hist[n..], &live[20..], "later changes as they were sent");

    // With an end bound, changes stop there.
    let bounded = collect(
        c.get_all(EventStreamRequest {
            partial_eq_filter: vec![],
            time: Some(TimeBounds {
                start,
                end: live[24].time,
            }),
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(&bounded[n..], &live[20..25]);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_is_required() {
    let sim = start(SimOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let mut c = client(&sim).await;
    let err = c.get_all(EventStreamRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "invalid or missing bearer token");
    let err = c
        .subscribe(with_token(EventStreamRequest::default(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let ok = c
        .get_all(with_token(EventStreamRequest::default(), "s3cret"))
        .await
        .unwrap();
    assert_eq!(collect(ok.into_inner()).await.len(), 10);
    assert_eq!(sim.stats().unauthenticated, 2);
    sim.shutdown().await;
}

/// A minimal HTTP/1.1 POST (no client library needed); returns status, head, body.
async fn post_login<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    extra_headers: &str,
    body: &str,
) -> (u16, String, String) {
    let req = format!(
        "POST /cvpservice/login/authenticate.do HTTP/1.1\r\nHost: cvp\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    // TLS peers may close without close_notify; keep what was read.
    let _ = io.read_to_end(&mut buf).await;
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn session_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["sessionId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn login_basic_and_json() {
    let sim = start(SimOptions {
        credentials: Some(("cvpadmin".into(), "p4ss".into())),
        ..Default::default()
    })
    .await;
    let addr = sim.local_addr();
    // Basic: "cvpadmin:p4ss"
    let (status, head, body) = post_login(
        TcpStream::connect(addr).await.unwrap(),
        "Authorization: Basic Y3ZwYWRtaW46cDRzcw==\r\n",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = session_of(&body);
    assert!(head.to_ascii_lowercase().contains(&format!(
        "set-cookie: access_token={token}; path=/; secure; httponly"
    )));
    assert!(body.contains("\"userName\":\"cvpadmin\""));

    let (status, _, body) = post_login(
        TcpStream::connect(addr).await.unwrap(),
        "",
        r#"{"userId":"cvpadmin","password":"p4ss"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let token2 = session_of(&body);
    assert_ne!(token, token2);

    let (status, _, body) = post_login(
        TcpStream::connect(addr).await.unwrap(),
        "",
        r#"{"userId":"cvpadmin","password":"nope"}"#,
    )
    .await;
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errorCode"], "112498");
    assert_eq!(v["errorMessage"], "Unauthorized User");

    // The session token works for gRPC on the same port; no token does not.
    let mut c = client(&sim).await;
    let err = c.get_all(EventStreamRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let ok = c
        .get_all(with_token(EventStreamRequest::default(), &token2))
        .await
        .unwrap();
    assert_eq!(collect(ok.into_inner()).await.len(), 10);
    let stats = sim.stats();
    assert_eq!((stats.logins, stats.login_failures), (2, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn login_disabled_is_404() {
    let sim = start(SimOptions::default()).await;
    let (status, _, _) = post_login(
        TcpStream::connect(sim.local_addr()).await.unwrap(),
        "",
        "{}",
    )
    .await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_serves_grpc_and_login() {
    let pki = test_pki(&["localhost", "127.0.0.1"]).unwrap();
    let sim = start(SimOptions {
        tls: Some(pki.identity.clone()),
        credentials: Some(("u".into(), "p".into())),
        ..Default::default()
    })
    .await;
    let addr = sim.local_addr();

    // REST login over TLS with http/1.1 negotiated by ALPN.
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (status, _, body) = post_login(tls, "", r#"{"userId":"u","password":"p"}"#).await;
    assert_eq!(status, 200, "{body}");
    let token = session_of(&body);

    // gRPC over TLS (h2), verified against the test CA.
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = EventServiceClient::new(channel);
    let all = c
        .get_all(with_token(EventStreamRequest::default(), &token))
        .await
        .unwrap();
    assert_eq!(collect(all.into_inner()).await.len(), 10);
    sim.shutdown().await;
}

/// Throughput of the rate-0 feed to one subscriber. Run with
/// `cargo test -p cvp-simulator --release --test sim -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_rate_zero() {
    let n = 500_000u64;
    let sim = start(SimOptions {
        initial: 0,
        updates: n,
        rate: 0.0,
        ..Default::default()
    })
    .await;
    // Large h2 windows, as a high-throughput consumer would configure.
    let channel = Channel::from_shared(format!("http://{}", sim.local_addr()))
        .unwrap()
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect()
        .await
        .unwrap();
    let mut c = EventServiceClient::new(channel);
    let mut s = c
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    take(&mut s, 1).await;
    let t = std::time::Instant::now();
    let mut got = 0u64;
    while got < n {
        s.message().await.unwrap().unwrap();
        got += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{n} events in {secs:.2}s = {:.0} events/s", n as f64 / secs);
    sim.shutdown().await;
}

/// DeviceService and TagAssignmentService: the devices the events name
/// with their tags, INITIAL_SYNC_COMPLETE, then the feed's inventory churn
/// (a rename, a tag assigned, the tag removed, as partial messages); the
/// event feed is what drives the churn. Without the tag service, the call
/// is UNIMPLEMENTED.
#[tokio::test]
async fn inventory_and_tags_follow_the_feed() {
    use cvp_proto::inventory::device_service_client::DeviceServiceClient;
    use cvp_proto::inventory::DeviceStreamRequest;
    use cvp_proto::tag::tag_assignment_service_client::TagAssignmentServiceClient;
    use cvp_proto::tag::TagAssignmentStreamRequest;

    let sim = start(SimOptions {
        initial: 0,
        updates: 4,
        rate: 0.0,
        inventory_churn: 2,
        ..SimOptions::default()
    })
    .await;
    let url = format!("http://{}", sim.local_addr());
    let mut devices = DeviceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .subscribe(DeviceStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut tags = TagAssignmentServiceClient::connect(url.clone())
        .await
        .unwrap()
        .subscribe(TagAssignmentStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut initial = Vec::new();
    loop {
        let m = devices.message().await.unwrap().unwrap();
        if m.r#type == Operation::InitialSyncComplete as i32 {
            break;
        }
        initial.push(m.value.unwrap());
    }
    assert_eq!(initial.len(), 10);
    let leaf1 = initial
        .iter()
        .find(|d| d.key.as_ref().unwrap().device_id.as_deref() == Some("JPE19181520"))
        .unwrap();
    assert_eq!(leaf1.hostname.as_deref(), Some("leaf1.dc1"));
    let mut n_tags = 0;
    loop {
        let m = tags.message().await.unwrap().unwrap();
        if m.r#type == Operation::InitialSyncComplete as i32 {
            break;
        }
        n_tags += 1;
    }
    assert_eq!(n_tags, 80);

    // The event feed starts once an event subscriber has synced.
    let mut events = client(&sim)
        .await
        .subscribe(EventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();
    take(&mut events, 5).await;
    let rename = devices.message().await.unwrap().unwrap();
    let d = rename.value.unwrap();
    assert_eq!(rename.r#type, Operation::Updated as i32);
    assert_eq!(d.hostname.as_deref(), Some("leaf1.dc1-renamed"));
    assert_eq!(d.model_name, None, "a rename carries only what changed");
    let assigned = tags.message().await.unwrap().unwrap();
    assert_eq!(assigned.r#type, Operation::Updated as i32);
    let key = assigned.value.unwrap().key.unwrap();
    assert_eq!(
        (key.label.as_deref(), key.value.as_deref()),
        (Some("maintenance"), Some("yes"))
    );

    let without = start(SimOptions {
        tag_service: false,
        ..SimOptions::default()
    })
    .await;
    let status = TagAssignmentServiceClient::connect(format!("http://{}", without.local_addr()))
        .await
        .unwrap()
        .subscribe(TagAssignmentStreamRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}
