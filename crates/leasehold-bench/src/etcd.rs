//! The etcd side of every row, through the `etcd-client` crate: leases are
//! etcd's sessions (`LeaseGrant`), a lock cycle is grant + a transaction
//! creating the key with the lease + revoke, keepalive is
//! `LeaseKeepAlive` streams (one lease per stream, the crate's model).

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};

use crate::procs::{poll, rss_bytes, Cluster, READY_TIMEOUT};
use crate::stats::{closed_loop, fixed_count, Run};
use crate::{FailoverSpec, MemorySpec, LOCK_RESOURCES, SESSION_TTL};

/// Client connections shared by many streams.
const MAX_CONNECTIONS: usize = 32;

/// A client of the single endpoint `ep` (`host:port`).
async fn connect(ep: &str) -> anyhow::Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(5));
    Ok(Client::connect([format!("http://{ep}")], Some(options)).await?)
}

/// etcd TTLs are whole seconds.
fn ttl_s(ttl: Duration) -> i64 {
    ttl.as_secs().max(1) as i64
}

/// Index of the leader once every member answers and they agree on it.
pub async fn wait_ready(cluster: &mut Cluster) -> anyhow::Result<usize> {
    let endpoints = cluster.endpoints();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        cluster.check_alive()?;
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for ep in &endpoints {
            if let Ok(mut c) = connect(ep).await {
                if let Ok(s) = c.status().await {
                    ids.push(s.header().map_or(0, |h| h.member_id()));
                    leaders.push(s.leader());
                }
            }
        }
        if ids.len() == 3 && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            if let Some(i) = ids.iter().position(|id| *id == leaders[0]) {
                return Ok(i);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "etcd: no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Revokes leases (untimed cleanup; failures ignored, they expire).
async fn revoke_all(ep: &str, ids: Vec<i64>) -> anyhow::Result<()> {
    let mut chunks: Vec<Vec<i64>> = vec![Vec::new(); MAX_CONNECTIONS];
    for (i, id) in ids.into_iter().enumerate() {
        chunks[i % MAX_CONNECTIONS].push(id);
    }
    let tasks = chunks
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|chunk| async move {
            let mut c = connect(ep).await?;
            for id in chunk {
                let _ = c.lease_revoke(id).await;
            }
            anyhow::Ok(())
        });
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

/// Grants `n` leases of `ttl` at `ep` (untimed setup).
async fn grant_many(ep: &str, n: usize, ttl: Duration) -> anyhow::Result<Vec<i64>> {
    let states = futures::future::try_join_all((0..MAX_CONNECTIONS.min(n)).map(|_| connect(ep)))
        .await?
        .into_iter()
        .map(|c| (c, Vec::new()))
        .collect();
    let (run, states) = fixed_count(states, n as u64, move |(mut c, mut out), _| async move {
        match c.lease_grant(ttl_s(ttl), None).await {
            Ok(r) => {
                out.push(r.id());
                ((c, out), Ok(1))
            }
            Err(e) => ((c, out), Err(e.into())),
        }
    })
    .await;
    anyhow::ensure!(run.errors == 0, "{} lease grants failed", run.errors);
    Ok(states.into_iter().flat_map(|(_, s)| s).collect())
}

/// Open session = `LeaseGrant`; the leases are revoked after the row.
pub async fn open_session(leader: &str, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let mut states = Vec::with_capacity(clients);
    for _ in 0..clients {
        states.push((connect(leader).await?, Vec::<i64>::new()));
    }
    let (run, states) = closed_loop(states, dur, |(mut c, mut ids), _| async move {
        match c.lease_grant(ttl_s(SESSION_TTL), None).await {
            Ok(r) => {
                ids.push(r.id());
                ((c, ids), Ok(1))
            }
            Err(e) => ((c, ids), Err(e.into())),
        }
    })
    .await;
    revoke_all(leader, states.into_iter().flat_map(|(_, s)| s).collect()).await?;
    Ok(run)
}

/// Lock cycle = grant + txn (create the key with the lease if absent) +
/// revoke, on the same resources as Leasehold's.
pub async fn lock_cycle(leader: &str, clients: usize, dur: Duration) -> anyhow::Result<Run> {
    let mut states = Vec::with_capacity(clients);
    for w in 0..clients {
        states.push((connect(leader).await?, w));
    }
    let (run, _) = closed_loop(states, dur, move |(mut c, w), i| async move {
        let key = format!("bench/lock/{}", (w + clients * i as usize) % LOCK_RESOURCES);
        let r = async {
            let lease = c.lease_grant(ttl_s(SESSION_TTL), None).await?.id();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    "held",
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let won = c.txn(txn).await?.succeeded();
            c.lease_revoke(lease).await?;
            anyhow::ensure!(won, "lock taken");
            anyhow::Ok(1)
        }
        .await;
        ((c, w), r)
    })
    .await;
    Ok(run)
}

/// One lease's keepalive stream.
struct Stream {
    /// Sends keepalive requests.
    keeper: LeaseKeeper,
    /// The replies.
    inbound: LeaseKeepAliveStream,
}

impl Stream {
    /// Opens a keepalive stream for `lease` on `c`.
    async fn open(c: &mut Client, lease: i64) -> anyhow::Result<Stream> {
        let (keeper, inbound) = c.lease_keep_alive(lease).await?;
        Ok(Stream { keeper, inbound })
    }

    /// One renewal, answered; an error if the lease is gone.
    async fn renew(&mut self) -> anyhow::Result<u64> {
        self.keeper.keep_alive().await?;
        let reply = self.inbound.message().await?.context("stream ended")?;
        anyhow::ensure!(reply.ttl() > 0, "lease gone");
        Ok(1)
    }
}

/// Keepalive: `leases` leases, each on its own stream (streams share at
/// most [`MAX_CONNECTIONS`] connections), one message in flight per
/// stream.
pub async fn keepalive(leader: &str, leases: usize, dur: Duration) -> anyhow::Result<Run> {
    let ids = grant_many(leader, leases, SESSION_TTL).await?;
    let mut conns = Vec::new();
    for _ in 0..MAX_CONNECTIONS.min(leases) {
        conns.push(connect(leader).await?);
    }
    let mut states = Vec::with_capacity(leases);
    for (i, id) in ids.iter().enumerate() {
        let n = conns.len();
        states.push(Stream::open(&mut conns[i % n], *id).await?);
    }
    let (run, states) = closed_loop(states, dur, |mut s, _| async move {
        let r = s.renew().await;
        (s, r)
    })
    .await;
    drop(states);
    revoke_all(leader, ids).await?;
    Ok(run)
}

/// Failover: as Leasehold's (see `lh::failover`), with leases on
/// `LeaseKeepAlive` streams; a failed renewal reconnects to the next member.
pub async fn failover(
    cluster: &mut Cluster,
    leader: usize,
    spec: FailoverSpec,
) -> anyhow::Result<Run> {
    let endpoints = cluster.endpoints();
    let ids = grant_many(&endpoints[leader], spec.sessions, spec.ttl).await?;
    let run = crate::renew_through_failover(
        cluster,
        leader,
        spec,
        ids,
        |endpoint, id: i64| async move {
            let mut c = connect(&endpoint).await?;
            let s = Stream::open(&mut c, id).await?;
            anyhow::Ok((c, s))
        },
        |(c, mut s): (Client, Stream)| async move {
            let r = s.renew().await;
            ((c, s), r)
        },
    )
    .await?;
    cluster.start(leader)?;
    wait_ready(cluster).await?;
    Ok(run)
}

/// Memory: RSS of the leader before, while holding `spec.leases` leases
/// (each with one key attached, like a held lock), and after they all
/// expired.
pub async fn memory(cluster: &Cluster, leader: usize, spec: MemorySpec) -> anyhow::Result<Run> {
    let ep = cluster.endpoints()[leader].clone();
    let pid = cluster.pid(leader).context("leader not running")?;
    let before = rss_bytes(pid)?;
    let states = futures::future::try_join_all((0..spec.workers).map(|_| connect(&ep))).await?;
    let ttl = ttl_s(spec.ttl);
    let (mut run, _) = fixed_count(states, spec.leases, move |mut c, i| async move {
        let r = async {
            let lease = c.lease_grant(ttl, None).await?.id();
            c.put(
                format!("bench/mem/{i}"),
                "held",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
            anyhow::Ok(1)
        }
        .await;
        (c, r)
    })
    .await;
    let mut c = connect(&ep).await?;
    let held_count = c.leases().await?.leases().len() as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = rss_bytes(pid)?;
    poll("etcd leases expire", spec.ttl + spec.expiry_slack, || {
        let mut c = c.clone();
        async move { c.leases().await.ok()?.leases().is_empty().then_some(()) }
    })
    .await?;
    tokio::time::sleep(spec.settle).await;
    let after = rss_bytes(pid)?;
    run.note = crate::memory_note(spec.leases, held_count, before, held, after);
    Ok(run)
}
