//! Bad input gets the documented codes, and a node under a flood of idle
//! connections, streams and waiters keeps serving, refuses what is over its
//! limits with `RESOURCE_EXHAUSTED` naming the limit, and lets go of
//! everything once the flood ends (issue 9, items 4 and 5).

use std::time::Duration;

use leasehold_proto::v1 as pb;
use leasehold_server::limits::ApiLimits;
use leasehold_server::metrics::MetricsSnapshot;
use leasehold_tests::grpc::{acquire_req, client, keepalive_req, open, release_req, Sess};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
use prost::bytes::{Buf, BufMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const LONG_TTL_MS: u64 = 120_000;

/// Sends and receives message bodies as raw bytes: requests no generated
/// client would build.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `method` of the Leasehold service with `body` as the raw message.
async fn raw_unary(ep: &str, method: &str, body: Vec<u8>) -> tonic::Status {
    let channel = match Endpoint::from_shared(format!("http://{ep}")) {
        Ok(e) => match e.connect().await {
            Ok(c) => c,
            Err(e) => return tonic::Status::unavailable(e.to_string()),
        },
        Err(e) => return tonic::Status::invalid_argument(e.to_string()),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return tonic::Status::unavailable(e.to_string());
    }
    let path = match PathAndQuery::try_from(format!("/leasehold.v1.Leasehold/{method}")) {
        Ok(p) => p,
        Err(e) => return tonic::Status::invalid_argument(e.to_string()),
    };
    let request = tonic::Request::new(body);
    let answer = if method == "Watch" {
        grpc.server_streaming(request, path, RawCodec)
            .await
            .map(|_| ())
    } else {
        grpc.unary(request, path, RawCodec).await.map(|_| ())
    };
    match answer {
        Ok(()) => tonic::Status::ok("answered"),
        Err(status) => status,
    }
}

/// A one-node cluster with `limits`, serving.
async fn start(limits: ApiLimits) -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions {
        size: 1,
        limits,
        ..ClusterOptions::default()
    })
    .await?;
    c.serving_leader().await?;
    Ok(c)
}

fn assert_status(status: &tonic::Status, code: Code, names: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(names),
        "{names:?} not in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_codes() -> anyhow::Result<()> {
    let c = start(ApiLimits::default()).await?;
    let ep = c.api_endpoint(1)?;

    // Truncated protobuf: field 1 (resource) announces 10 bytes, sends 2.
    let truncated = raw_unary(&ep, "Get", vec![0x0a, 0x0a, b'a', b'b']).await;
    assert_status(&truncated, Code::InvalidArgument, "does not decode");
    // A string field holding invalid UTF-8.
    let not_utf8 = raw_unary(&ep, "Get", vec![0x0a, 0x02, 0xff, 0xfe]).await;
    assert_status(&not_utf8, Code::InvalidArgument, "UTF-8");
    let not_utf8 = raw_unary(&ep, "Watch", vec![0x0a, 0x02, 0xc3, 0x28]).await;
    assert_status(&not_utf8, Code::InvalidArgument, "UTF-8");
    // Over our own message limit, named.
    let big = vec![0u8; leasehold_proto::REQUEST_BYTES_MAX + 1];
    let big = raw_unary(&ep, "Get", big).await;
    assert_status(&big, Code::ResourceExhausted, "request_bytes_max = 1048576");
    // The node still serves.
    let ok = raw_unary(&ep, "Get", vec![0x0a, 0x01, b'a']).await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");

    // Names with NUL or control characters are refused, naming the field.
    let s = open(&ep, "names", LONG_TTL_MS).await?;
    let mut api = client(&ep).await?;
    for bad in ["nul\0name", "esc\u{1b}[2J", "csi\u{9b}31m", "new\nline"] {
        let e = api
            .acquire(acquire_req(s, bad, false, 0))
            .await
            .expect_err("refused");
        assert_status(
            &e,
            Code::InvalidArgument,
            "invalid resource: control character",
        );
        let e = api
            .get(pb::GetRequest {
                resource: bad.into(),
            })
            .await
            .expect_err("refused");
        assert_status(&e, Code::InvalidArgument, "invalid resource");
    }
    let e = api
        .open_session(pb::OpenSessionRequest {
            client_name: "bell\u{7}".into(),
            ttl_ms: LONG_TTL_MS,
            request_id: 0,
        })
        .await
        .expect_err("refused");
    assert_status(&e, Code::InvalidArgument, "invalid client_name");
    let e = api
        .recall(pb::RecallRequest {
            resource: "r".into(),
            reason: "\u{1b}]0;pwned\u{7}".into(),
        })
        .await
        .expect_err("refused");
    assert_status(&e, Code::InvalidArgument, "invalid reason");
    let e = api
        .watch(pb::WatchRequest {
            prefix: "a\0".into(),
            start_revision: 0,
        })
        .await
        .expect_err("refused");
    assert_status(&e, Code::InvalidArgument, "invalid prefix");

    // Malformed page tokens.
    for token in ["b/elsewhere", "a/\u{1b}x"] {
        let e = api
            .list(pb::ListRequest {
                prefix: "a/".into(),
                page_size: 10,
                page_token: token.into(),
            })
            .await
            .expect_err("refused");
        assert_status(&e, Code::InvalidArgument, "invalid page_token");
    }
    let e = api
        .list_sessions(pb::ListSessionsRequest {
            page_size: 10,
            page_token: "not-a-number".into(),
        })
        .await
        .expect_err("refused");
    assert_status(&e, Code::InvalidArgument, "invalid page_token");
    c.shutdown().await
}

/// The VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn metrics_reach(
    c: &TestCluster,
    what: &str,
    check: impl Fn(&MetricsSnapshot) -> bool,
) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(60), || async {
        let m = c.node(1).ok()?.metrics();
        check(&m).then_some(())
    })
    .await
}

async fn channel(ep: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{ep}"))?
        .connect()
        .await?)
}

/// Runs `call` until it answers something other than `UNAVAILABLE` (what
/// a loaded node answers when its leader lease lapsed for a moment: "retry",
/// as the client library does), within [`WAIT`].
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match call().await {
            Err(s) if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// One acquire/release round of the client that must keep being served;
/// the fencing token it was granted.
async fn round(
    api: pb::leasehold_client::LeaseholdClient<Channel>,
    s: Sess,
    name: &str,
) -> anyhow::Result<Option<u64>> {
    let lease = retrying(|| {
        let mut api = api.clone();
        async move { api.acquire(acquire_req(s, name, false, 0)).await }
    })
    .await?
    .into_inner();
    retrying(|| {
        let mut api = api.clone();
        async move { api.release(release_req(s, name)).await }
    })
    .await?;
    Ok(lease.lease.map(|l| l.fencing_token))
}

const FLOOD_CONNECTIONS: usize = 2_000;
const FLOOD_WATCHES: usize = 1_000;
const FLOOD_WAITERS: usize = 1_000;
/// Watch streams per connection in the flood (below CALLS_PER_CONNECTION_MAX).
const WATCHES_PER_CHANNEL: usize = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_by_name_and_everything_comes_back() -> anyhow::Result<()> {
    // Room for the flood's connections plus the few the test itself uses.
    let connections_max = FLOOD_CONNECTIONS + 16;
    let c = start(ApiLimits {
        connections_max,
        watch_streams_max: FLOOD_WATCHES,
        watch_streams_per_client_max: FLOOD_WATCHES,
        keepalive_streams_per_client_max: 2,
        waiters_max: FLOOD_WAITERS,
        ..ApiLimits::default()
    })
    .await?;
    let ep = c.api_endpoint(1)?;
    let rss_before = rss_kib();

    // The client that must keep being served throughout.
    let steady = open(&ep, "steady", LONG_TTL_MS).await?;
    let steady_api = client(&ep).await?;
    let round = |name: &'static str| round(steady_api.clone(), steady, name);
    let mut other = steady_api.clone();
    assert!(round("steady/before").await?.is_some());

    // 1. Idle connections.
    let mut idle = Vec::with_capacity(FLOOD_CONNECTIONS);
    for _ in 0..FLOOD_CONNECTIONS {
        idle.push(TcpStream::connect(&ep).await?);
    }
    metrics_reach(&c, "the idle connections counted", |m| {
        m.api_connections >= FLOOD_CONNECTIONS as u64
    })
    .await?;
    assert!(round("steady/connections").await?.is_some());
    // Fill to the limit; the next connection's calls are refused by name.
    let open_now = c.node(1)?.metrics().api_connections as usize;
    for _ in open_now..connections_max {
        idle.push(TcpStream::connect(&ep).await?);
    }
    metrics_reach(&c, "connections at the limit", |m| {
        m.api_connections == connections_max as u64
    })
    .await?;
    let refused = raw_unary(&ep, "Get", vec![0x0a, 0x01, b'a']).await;
    assert_status(&refused, Code::ResourceExhausted, "connections_max");
    assert!(round("steady/at-the-limit").await?.is_some());
    let rss_connections = rss_kib();
    drop(idle);
    metrics_reach(&c, "the idle connections gone", |m| m.api_connections < 8).await?;

    // 2. Watch streams, over a few connections.
    let mut watches = Vec::with_capacity(FLOOD_WATCHES);
    let mut channels = Vec::new();
    for i in 0..FLOOD_WATCHES {
        if i % WATCHES_PER_CHANNEL == 0 {
            channels.push(pb::leasehold_client::LeaseholdClient::new(
                channel(&ep).await?,
            ));
        }
        let mut api = channels[channels.len() - 1].clone();
        watches.push(tokio::spawn(async move {
            api.watch(pb::WatchRequest {
                prefix: format!("flood/{i}/"),
                start_revision: 0,
            })
            .await
            .map(|s| s.into_inner())
        }));
    }
    let mut streams = Vec::with_capacity(FLOOD_WATCHES);
    for w in watches {
        streams.push(w.await??);
    }
    metrics_reach(&c, "every watch counted", |m| {
        m.watch_streams == FLOOD_WATCHES as u64
    })
    .await?;
    let over = other
        .watch(pb::WatchRequest {
            prefix: "over/".into(),
            start_revision: 0,
        })
        .await
        .expect_err("over the limit");
    assert_status(&over, Code::ResourceExhausted, "watch_streams_max = 1000");
    assert!(round("steady/watches").await?.is_some());
    let rss_watches = rss_kib();

    // KeepAlive streams per client.
    let mut keepalives = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(keepalive_req(&[steady])).await?;
        let mut s = other
            .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        s.next().await.transpose()?;
        keepalives.push((tx, s));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(keepalive_req(&[steady])).await?;
    let over = other
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("over the per-client limit");
    assert_status(
        &over,
        Code::ResourceExhausted,
        "keepalive_streams_per_client_max = 2",
    );

    // 3. Waiters on one held resource (one-call leases: a private session each).
    let holder = open(&ep, "holder", LONG_TTL_MS).await?;
    other
        .acquire(acquire_req(holder, "flood/lock", false, 0))
        .await?;
    let mut waiters = Vec::with_capacity(FLOOD_WAITERS);
    let mut wait_channels = Vec::new();
    for i in 0..FLOOD_WAITERS {
        if i % WATCHES_PER_CHANNEL == 0 {
            wait_channels.push(pb::leasehold_client::LeaseholdClient::new(
                channel(&ep).await?,
            ));
        }
        let api = wait_channels[wait_channels.len() - 1].clone();
        waiters.push(tokio::spawn(async move {
            let mut req = acquire_req(0, "flood/lock", false, 60_000);
            req.ttl_ms = 60_000;
            req.client_name = format!("waiter-{i}");
            retrying(|| {
                let mut api = api.clone();
                let req = req.clone();
                async move { api.acquire(req).await }
            })
            .await
        }));
    }
    let counted = metrics_reach(&c, "every waiter counted", |m| {
        m.acquire_waiters == FLOOD_WAITERS as u64
    })
    .await;
    if let Err(e) = counted {
        let m = c.node(1)?.metrics();
        for w in waiters.iter_mut().filter(|w| w.is_finished()).take(3) {
            println!("finished waiter: {:?}", w.await);
        }
        anyhow::bail!("{e}: {m:?}");
    }
    let mut req = acquire_req(0, "flood/lock", false, 1_000);
    req.ttl_ms = 60_000;
    let over = other.acquire(req).await.expect_err("over the limit");
    assert_status(&over, Code::ResourceExhausted, "waiters_max = 1000");
    assert!(round("steady/waiters").await?.is_some());
    let rss_waiters = rss_kib();
    let during = c.node(1)?.metrics();

    // The flood ends: every stream, waiter and connection is let go.
    for w in &waiters {
        w.abort();
    }
    drop(waiters);
    drop(wait_channels);
    drop(streams);
    drop(channels);
    drop(keepalives);
    metrics_reach(&c, "the flood let go", |m| {
        m.watch_streams == 0 && m.acquire_waiters == 0 && m.keepalive_streams == 0
    })
    .await?;
    assert!(round("steady/after").await?.is_some());
    drop(other);
    drop(steady_api);
    metrics_reach(&c, "every connection closed", |m| m.api_connections == 0).await?;
    let rss_after = rss_kib();
    println!(
        "flood: {FLOOD_CONNECTIONS} idle connections, {FLOOD_WATCHES} watch streams, \
         {FLOOD_WAITERS} waiters; limit rejections {}; \
         RSS KiB (test process, node in-process): before {rss_before}, \
         connections {rss_connections}, watches {rss_watches}, waiters {rss_waiters}, \
         after {rss_after}",
        during.limit_rejections_total
    );
    assert!(during.limit_rejections_total >= 4, "{during:?}");
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_stalled_watches_are_closed() -> anyhow::Result<()> {
    let c = start(ApiLimits {
        connection_idle_timeout_ms: 300,
        watch_stall_timeout_ms: 300,
        ..ApiLimits::default()
    })
    .await?;
    let ep = c.api_endpoint(1)?;

    // A connection that never sends a byte is closed by the node.
    let mut idle = TcpStream::connect(&ep).await?;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // the server's HTTP/2 preface
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    metrics_reach(&c, "the idle close counted", |m| {
        m.idle_closed_total >= 1 && m.api_connections <= 1
    })
    .await?;

    // A connection with an open stream is not idle, however long it waits.
    let mut api = client(&ep).await?;
    let mut quiet = api
        .watch(pb::WatchRequest {
            prefix: "quiet/".into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    let s = open(&ep, "w", LONG_TTL_MS).await?;
    // The behaviour under test is the passing of time: three idle timeouts.
    tokio::time::sleep(Duration::from_millis(900)).await;
    api.acquire(acquire_req(s, "quiet/x", false, 0)).await?;
    let event = tokio::time::timeout(WAIT, quiet.next()).await?;
    assert!(matches!(event, Some(Ok(_))), "{event:?}");

    // A watcher that stops reading: HTTP/2 flow control (a 1 KiB window)
    // stops the node's sends, its buffer fills, then the stream ends naming
    // the stall limit.
    let small_window = Endpoint::from_shared(format!("http://{ep}"))?
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await?;
    let mut stalled = pb::leasehold_client::LeaseholdClient::new(small_window)
        .watch(pb::WatchRequest {
            prefix: "busy/".into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    let before = c.node(1)?.metrics().idle_closed_total;
    let events = leasehold_server::limits::WATCH_BUFFER_EVENTS * 3;
    for i in 0..events {
        let name = format!("busy/{i}");
        api.acquire(acquire_req(s, &name, false, 0)).await?;
        api.release(pb::ReleaseRequest {
            session_id: s.id,
            session_secret: s.secret(),
            resource: name,
        })
        .await?;
        if c.node(1)?.metrics().idle_closed_total > before {
            break;
        }
    }
    metrics_reach(&c, "the stalled watch ended", |m| {
        m.idle_closed_total > before
    })
    .await?;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stalled.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await?;
    match end {
        Some(Err(status)) => {
            assert_status(&status, Code::ResourceExhausted, "watch_stall_timeout_ms")
        }
        other => panic!("the stalled watch ended with {other:?}"),
    }
    c.shutdown().await
}
