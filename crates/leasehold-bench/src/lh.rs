//! The Leasehold side of every row: through the client library
//! (`leasehold-client`) and, where that isolates the server, raw gRPC
//! (`leasehold-proto`'s generated client).

use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_client::{AcquireOptions, Client, Serving, SessionHandle};
use leasehold_proto::v1 as pb;
use pb::leasehold_client::LeaseholdClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::procs::{poll, rss_bytes, Cluster, READY_TIMEOUT};
use crate::stats::{closed_loop, fixed_count, Run};
use crate::{FailoverSpec, MemorySpec, LOCK_RESOURCES, SESSION_TTL};

/// Concurrent calls for untimed setup and cleanup.
const SETUP_WORKERS: usize = 32;

/// A raw gRPC client of `endpoint` (`host:port`).
pub async fn raw(endpoint: &str) -> anyhow::Result<LeaseholdClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    Ok(LeaseholdClient::new(channel))
}

/// Index of the serving leader once the cluster has one and every member
/// answers.
pub async fn wait_ready(cluster: &mut Cluster) -> anyhow::Result<usize> {
    let endpoints = cluster.endpoints();
    let client = Client::connect(endpoints.clone()).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        cluster.check_alive()?;
        let views = client.status_all().await;
        let answered = views.iter().filter(|(_, v)| v.is_ok()).count();
        let leader = views.iter().position(|(_, v)| {
            v.as_ref()
                .is_ok_and(|s| s.role == "leader" && s.serving == Serving::Serving)
        });
        if let (3, Some(i)) = (answered, leader) {
            return Ok(i);
        }
        anyhow::ensure!(Instant::now() < deadline, "Leasehold: no serving leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw session: id and secret.
type Raw = (u64, tonic::codegen::Bytes);

/// Opens one raw session of `ttl_ms` with `c` and adds it to `out`: one
/// call of the setup and of the raw open-session row.
async fn open_into(
    mut c: LeaseholdClient<Channel>,
    mut out: Vec<Raw>,
    ttl_ms: u64,
) -> ((LeaseholdClient<Channel>, Vec<Raw>), anyhow::Result<u64>) {
    let r = c
        .open_session(pb::OpenSessionRequest {
            client_name: "bench".into(),
            ttl_ms,
            request_id: 0,
        })
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            out.push((r.session_id, r.session_secret));
            ((c, out), Ok(1))
        }
        Err(e) => ((c, out), Err(e.into())),
    }
}

/// Opens `n` raw sessions with `ttl` at `endpoint` (untimed setup).
async fn open_raw(endpoint: &str, n: usize, ttl: Duration) -> anyhow::Result<Vec<Raw>> {
    let states = futures::future::try_join_all((0..SETUP_WORKERS.min(n)).map(|_| raw(endpoint)))
        .await?
        .into_iter()
        .map(|c| (c, Vec::new()))
        .collect();
    let ttl_ms = ttl.as_millis() as u64;
    let (run, states) = fixed_count(states, n as u64, move |(c, out), _| {
        open_into(c, out, ttl_ms)
    })
    .await;
    anyhow::ensure!(run.errors == 0, "{} session opens failed", run.errors);
    Ok(states.into_iter().flat_map(|(_, s)| s).collect())
}

/// Closes raw sessions at `endpoint` (untimed cleanup; failures ignored,
/// the sessions then expire).
async fn close_raw(endpoint: &str, sessions: Vec<Raw>) -> anyhow::Result<()> {
    let mut chunks: Vec<Vec<Raw>> = vec![Vec::new(); SETUP_WORKERS];
    for (i, s) in sessions.into_iter().enumerate() {
        chunks[i % SETUP_WORKERS].push(s);
    }
    let tasks = chunks
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|chunk| async move {
            let mut c = raw(endpoint).await?;
            for (session_id, session_secret) in chunk {
                let _ = c
                    .close_session(pb::CloseSessionRequest {
                        session_id,
                        session_secret,
                    })
                    .await;
            }
            anyhow::Ok(())
        });
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

/// Open session through the library: `clients` clients of the leader, each
/// opening sessions one after another. Each session is detached at once
/// (no renewals during the row) and closed after it, untimed.
pub async fn open_session_lib(leader: &str, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let mut states = Vec::with_capacity(clients);
    for _ in 0..clients {
        states.push((
            Client::connect([leader]).await?,
            Vec::<SessionHandle>::new(),
        ));
    }
    let (run, states) = closed_loop(states, dur, |(c, mut handles), _| async move {
        match c.open_session("bench", SESSION_TTL).await {
            Ok(s) => {
                handles.push(s.handle());
                s.detach();
                ((c, handles), Ok(1))
            }
            Err(e) => ((c, handles), Err(e.into())),
        }
    })
    .await;
    let tasks = states.into_iter().map(|(c, handles)| async move {
        for h in handles {
            let _ = c.close_session(&h).await;
        }
    });
    futures::future::join_all(tasks).await;
    Ok(run)
}

/// Open session over raw gRPC (no client-side retry or keepalive logic).
pub async fn open_session_raw(leader: &str, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let mut states = Vec::with_capacity(clients);
    for _ in 0..clients {
        states.push((raw(leader).await?, Vec::<Raw>::new()));
    }
    let ttl_ms = SESSION_TTL.as_millis() as u64;
    let (run, states) =
        closed_loop(states, dur, move |(c, out), _| open_into(c, out, ttl_ms)).await;
    close_raw(leader, states.into_iter().flat_map(|(_, s)| s).collect()).await?;
    Ok(run)
}

/// Lock cycle through the library: each client has one session and
/// acquires then releases one of [`LOCK_RESOURCES`] resources per cycle
/// (client `w` uses `w`, `w + clients`, …, so clients never conflict).
pub async fn lock_cycle(leader: &str, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let mut states = Vec::with_capacity(clients);
    for w in 0..clients {
        let c = Client::connect([leader]).await?;
        let s = c.open_session("bench-lock", SESSION_TTL).await?;
        states.push((c, s, w));
    }
    let (run, states) = closed_loop(states, dur, move |(c, s, w), i| async move {
        let resource = format!("bench/lock/{}", (w + clients * i as usize) % LOCK_RESOURCES);
        let r = async {
            let lease = s.acquire(&resource, AcquireOptions::exclusive()).await?;
            lease.release().await?;
            anyhow::Ok(1)
        }
        .await;
        ((c, s, w), r)
    })
    .await;
    for (_c, s, _) in states {
        let _ = s.close().await;
    }
    Ok(run)
}

/// One open `KeepAlive` stream: requests in, replies out.
struct Stream {
    /// Sends requests on the stream.
    tx: mpsc::Sender<pb::KeepAliveRequest>,
    /// The replies.
    inbound: tonic::Streaming<pb::KeepAliveResponse>,
    /// The request this stream sends each time.
    req: pb::KeepAliveRequest,
}

impl Stream {
    /// Opens a stream at `endpoint` renewing `sessions` in every message.
    async fn open(endpoint: &str, sessions: &[Raw]) -> anyhow::Result<Stream> {
        let mut c = raw(endpoint).await?;
        let (tx, rx) = mpsc::channel(4);
        let inbound = c.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
        let req = pb::KeepAliveRequest {
            session_ids: sessions.iter().map(|s| s.0).collect(),
            session_secrets: sessions.iter().map(|s| s.1.clone()).collect(),
        };
        Ok(Stream { tx, inbound, req })
    }

    /// Sends the request once and waits for its reply; the number of
    /// sessions renewed, or an error if any is gone.
    async fn renew(&mut self) -> anyhow::Result<u64> {
        self.tx.send(self.req.clone()).await?;
        let reply = self.inbound.message().await?.context("stream ended")?;
        anyhow::ensure!(reply.sessions.iter().all(|s| s.alive), "a session is gone");
        Ok(reply.sessions.len() as u64)
    }
}

/// Keepalive: `streams` raw `KeepAlive` streams to the leader, each naming
/// `per_stream` sessions in every message (one message in flight per
/// stream). Counts sessions renewed.
pub async fn keepalive(
    leader: &str,
    streams: usize,
    per_stream: usize,
    dur: Duration,
) -> anyhow::Result<Run> {
    let sessions = open_raw(leader, streams * per_stream, SESSION_TTL).await?;
    let mut states = Vec::with_capacity(streams);
    for chunk in sessions.chunks(per_stream) {
        states.push(Stream::open(leader, chunk).await?);
    }
    let (run, states) = closed_loop(states, dur, |mut s, _| async move {
        let r = s.renew().await;
        (s, r)
    })
    .await;
    drop(states);
    close_raw(leader, sessions).await?;
    Ok(run)
}

/// Failover: `spec.sessions` sessions, each renewed on its own stream every
/// `spec.interval`, starting at the leader; the leader is SIGKILLed after
/// `spec.kill_after`. A failed renewal moves that session's stream to the
/// next node. Reports the longest gap between successful renewals of any
/// session, errors, and sessions lost; then restarts the killed node.
pub async fn failover(
    cluster: &mut Cluster,
    leader: usize,
    spec: FailoverSpec,
) -> anyhow::Result<Run> {
    let endpoints = cluster.endpoints();
    let sessions = open_raw(&endpoints[leader], spec.sessions, spec.ttl).await?;
    let run = crate::renew_through_failover(
        cluster,
        leader,
        spec,
        sessions,
        |endpoint, s: Raw| async move { Stream::open(&endpoint, std::slice::from_ref(&s)).await },
        |mut st: Stream| async move {
            let r = st.renew().await;
            (st, r)
        },
    )
    .await?;
    cluster.start(leader)?;
    wait_ready(cluster).await?;
    Ok(run)
}

/// Memory: RSS of the leader before, while holding `spec.leases` one-call
/// leases (each with its own session of `spec.ttl`, no renewals), and
/// after they all expired.
pub async fn memory(cluster: &Cluster, leader: usize, spec: MemorySpec) -> anyhow::Result<Run> {
    let ep = cluster.endpoints()[leader].clone();
    let pid = cluster.pid(leader).context("leader not running")?;
    let client = Client::connect([ep.as_str()]).await?;
    let before = rss_bytes(pid)?;
    let states = futures::future::try_join_all((0..spec.workers).map(|_| raw(&ep))).await?;
    let ttl_ms = spec.ttl.as_millis() as u64;
    let (mut run, _) = fixed_count(states, spec.leases, move |mut c, i| async move {
        let r = c
            .acquire(pb::AcquireRequest {
                session_id: 0,
                ttl_ms,
                client_name: "bench-mem".into(),
                resource: format!("bench/mem/{i}"),
                mode: pb::Mode::Exclusive as i32,
                ..Default::default()
            })
            .await;
        (c, r.map(|_| 1).map_err(Into::into))
    })
    .await;
    let held_count = client.status_of(&ep).await?.sessions;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = rss_bytes(pid)?;
    poll(
        "Leasehold sessions expire",
        spec.ttl + spec.expiry_slack,
        || {
            let client = client.clone();
            let ep = ep.clone();
            async move {
                let s = client.status_of(&ep).await.ok()?;
                (s.sessions == 0 && s.resources == 0).then_some(())
            }
        },
    )
    .await?;
    tokio::time::sleep(spec.settle).await;
    let after = rss_bytes(pid)?;
    run.note = crate::memory_note(spec.leases, held_count, before, held, after);
    Ok(run)
}
