//! Workload clients: contend for a few resources with exclusive and shared
//! leases through the raw gRPC API, keep their sessions alive, sometimes go
//! silent (a paused holder), and do fenced read-modify-writes on a register.
//! Everything they do and believe goes to a JSONL history.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_core::time::holder_validity_ms;
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::history::{instant_ns, mono_ns, Outcome, Record};
use crate::register::Register;

/// Workload settings.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Client API endpoints (`host:port`).
    pub endpoints: Vec<String>,
    /// Concurrent clients.
    pub clients: u32,
    /// Contended resources.
    pub resources: u32,
    /// How long the contention phase runs.
    pub duration: Duration,
    /// Session TTL.
    pub ttl_ms: u64,
    /// Drift bound ρ the holders assume (ppm).
    pub drift_ppm: u32,
    /// Scheduling margin the holders subtract (ms).
    pub margin_ms: u64,
    /// Chance that a holder goes silent (stops renewing) after a grant.
    pub silent_probability: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// How long, after the contention phase, every client may take to
    /// acquire again (liveness bound).
    pub liveness_bound: Duration,
    /// Prefix of resource names (separates runs on one cluster).
    pub prefix: String,
}

/// Appends records to the history.
#[derive(Clone)]
pub struct Sink(mpsc::UnboundedSender<Record>);

/// What an operation is about; recorded with each of its steps.
#[derive(Debug, Clone, Copy)]
struct OpRef<'a> {
    /// Workload client.
    client: u32,
    /// Operation name.
    op: &'a str,
    /// Resource, if any.
    resource: Option<&'a str>,
    /// Session, if known.
    session: Option<u64>,
    /// Fencing token, if known.
    token: Option<u64>,
    /// Lease mode, if any.
    mode: Option<&'a str>,
}

impl<'a> OpRef<'a> {
    fn new(client: u32, op: &'a str) -> Self {
        OpRef {
            client,
            op,
            resource: None,
            session: None,
            token: None,
            mode: None,
        }
    }
}

/// A call bounded by a client-side timeout.
type Timed<T> = Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>;

impl Sink {
    fn push(&self, r: Record) {
        let _ = self.0.send(r);
    }

    fn record(
        &self,
        o: OpRef<'_>,
        outcome: Outcome,
        detail: Option<String>,
        latency: Option<Duration>,
    ) {
        self.push(Record::Op {
            t_ns: mono_ns(),
            client: o.client,
            op: o.op.into(),
            outcome,
            resource: o.resource.map(str::to_string),
            session: o.session,
            token: o.token,
            mode: o.mode.map(str::to_string),
            detail,
            latency_ns: latency.map(|d| d.as_nanos() as u64),
        });
    }

    fn invoke(&self, o: OpRef<'_>) {
        self.record(o, Outcome::Invoke, None, None);
    }

    /// Records how a timed call ended and returns its reply, if any.
    fn finish<T>(&self, o: OpRef<'_>, sent_at: Instant, r: Timed<T>) -> Result<T, Outcome> {
        let latency = Some(sent_at.elapsed());
        match r {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => {
                let outcome = outcome_of(&status);
                let detail = format!("{:?}: {}", status.code(), status.message());
                self.record(o, outcome, Some(detail), latency);
                Err(outcome)
            }
            Err(_) => {
                self.record(o, Outcome::Unknown, Some("client timeout".into()), latency);
                Err(Outcome::Unknown)
            }
        }
    }
}

/// Whether a failed call may still have taken effect.
fn outcome_of(status: &tonic::Status) -> Outcome {
    match status.code() {
        // Refused before anything was proposed, or decided by the state
        // machine; a wait that timed out was cancelled by a committed entry.
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::DeadlineExceeded => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// A round-robin connection to the cluster.
struct Conn {
    /// One lazily connected channel per endpoint.
    endpoints: Vec<Channel>,
    /// Which endpoint to use next.
    next: usize,
}

impl Conn {
    fn new(endpoints: &[String]) -> anyhow::Result<Self> {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                // Plaintext: the chaos clusters run with --plaintext.
                Ok(Endpoint::from_shared(format!("http://{e}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .connect_lazy())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Conn { endpoints, next: 0 })
    }

    fn client(&self) -> LeaseholdClient<Channel> {
        LeaseholdClient::new(self.endpoints[self.next % self.endpoints.len()].clone())
    }

    fn rotate(&mut self) {
        self.next += 1;
    }
}

/// The holder's view of one session, shared with its keepalive task.
#[derive(Debug, Default)]
struct SessionView {
    /// The holder's conservative deadline.
    deadline: Option<Instant>,
    /// The service said the session is gone.
    dead: bool,
    /// Keepalives stop (a silent, "paused" holder, or a closing one).
    silent: bool,
    /// The session's owner secret, presented with every call naming it.
    secret: tonic::codegen::Bytes,
}

type View = Arc<Mutex<SessionView>>;

fn lock(v: &View) -> std::sync::MutexGuard<'_, SessionView> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the holder may still believe its leases right now.
fn believes(v: &View) -> bool {
    let v = lock(v);
    !v.dead && v.deadline.is_some_and(|d| Instant::now() < d)
}

/// Folds one keepalive reply into the view; returns true to stop renewing.
fn on_renewal(
    view: &View,
    sink: &Sink,
    o: OpRef<'_>,
    alive: bool,
    sent_at: Instant,
    validity: Duration,
) -> bool {
    let now = Instant::now();
    let mut v = lock(view);
    if alive {
        let d = sent_at + validity;
        v.deadline = Some(v.deadline.map_or(d, |old| old.max(d)));
        sink.record(o, Outcome::Ok, None, Some(now - sent_at));
        return v.silent;
    }
    v.dead = true;
    // A session the client closed itself is not an expiry.
    if let Some(d) = v.deadline.filter(|d| *d > now && !v.silent) {
        sink.push(Record::EarlyExpiry {
            client: o.client,
            session: o.session.unwrap_or(0),
            t_ns: instant_ns(now),
            holder_deadline_ns: instant_ns(d),
        });
    }
    sink.record(
        o,
        Outcome::Fail,
        Some("session not alive".into()),
        Some(now - sent_at),
    );
    true
}

/// Keeps one session alive until it dies or goes silent.
async fn keep_alive(cfg: WorkloadConfig, client: u32, session: u64, view: View, sink: Sink) {
    let Ok(mut conn) = Conn::new(&cfg.endpoints) else {
        return;
    };
    let validity =
        Duration::from_millis(holder_validity_ms(cfg.ttl_ms, cfg.drift_ppm, cfg.margin_ms));
    let period = Duration::from_millis(cfg.ttl_ms / 3);
    let o = OpRef {
        session: Some(session),
        ..OpRef::new(client, "renew")
    };
    let secret = lock(&view).secret.clone();
    let request = || pb::KeepAliveRequest {
        session_ids: vec![session],
        session_secrets: vec![secret.clone()],
    };
    loop {
        if lock(&view).silent || lock(&view).dead {
            return;
        }
        let (tx, rx) = mpsc::channel(2);
        let mut sent_at = Instant::now();
        if tx.send(request()).await.is_err() {
            return;
        }
        let mut api = conn.client();
        let Ok(Ok(stream)) = timeout(period, api.keep_alive(ReceiverStream::new(rx))).await else {
            conn.rotate();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut inbound = stream.into_inner();
        loop {
            let Ok(Ok(Some(reply))) = timeout(period, inbound.message()).await else {
                conn.rotate();
                break;
            };
            let alive = reply.sessions.first().is_some_and(|s| s.alive);
            if on_renewal(&view, &sink, o, alive, sent_at, validity) {
                return;
            }
            tokio::time::sleep(period).await;
            // A holder that went silent sends nothing more.
            if lock(&view).silent {
                return;
            }
            sent_at = Instant::now();
            if tx.send(request()).await.is_err() {
                break;
            }
        }
    }
}

/// Opens a session and starts keeping it alive.
async fn open_session(
    cfg: &WorkloadConfig,
    id: u32,
    conn: &mut Conn,
    sink: &Sink,
    call_timeout: Duration,
) -> Option<(u64, View)> {
    let o = OpRef::new(id, "open");
    sink.invoke(o);
    let sent_at = Instant::now();
    let r = timeout(
        call_timeout,
        conn.client().open_session(pb::OpenSessionRequest {
            client_name: format!("chaos-{id}"),
            ttl_ms: cfg.ttl_ms,
            request_id: 0,
        }),
    )
    .await;
    let (session, secret) = match sink.finish(o, sent_at, r) {
        Ok(reply) => (reply.session_id, reply.session_secret),
        Err(_) => {
            conn.rotate();
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    let o = OpRef {
        session: Some(session),
        ..o
    };
    sink.record(o, Outcome::Ok, None, Some(sent_at.elapsed()));
    let validity =
        Duration::from_millis(holder_validity_ms(cfg.ttl_ms, cfg.drift_ppm, cfg.margin_ms));
    let view = Arc::new(Mutex::new(SessionView {
        deadline: Some(sent_at + validity),
        secret,
        ..SessionView::default()
    }));
    tokio::spawn(keep_alive(
        cfg.clone(),
        id,
        session,
        Arc::clone(&view),
        sink.clone(),
    ));
    Some((session, view))
}

/// Closes a session at the end of the contention phase.
async fn close_session(
    id: u32,
    session: u64,
    view: &View,
    conn: &mut Conn,
    sink: &Sink,
    call_timeout: Duration,
) {
    let secret = {
        let mut v = lock(view);
        v.silent = true;
        v.secret.clone()
    };
    let o = OpRef {
        session: Some(session),
        ..OpRef::new(id, "close")
    };
    sink.invoke(o);
    let sent_at = Instant::now();
    let r = timeout(
        call_timeout,
        conn.client().close_session(pb::CloseSessionRequest {
            session_id: session,
            session_secret: secret,
        }),
    )
    .await;
    if sink.finish(o, sent_at, r).is_ok() {
        sink.record(o, Outcome::Ok, None, Some(sent_at.elapsed()));
    }
}

/// One client: sessions, acquires, holds, releases, register writes.
async fn client_loop(
    cfg: WorkloadConfig,
    id: u32,
    register: Arc<Register>,
    sink: Sink,
    end: Instant,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(id as u64));
    let mut conn = Conn::new(&cfg.endpoints)?;
    let call_timeout = Duration::from_millis(cfg.ttl_ms.max(2_000));
    while Instant::now() < end {
        let Some((session, view)) = open_session(&cfg, id, &mut conn, &sink, call_timeout).await
        else {
            continue;
        };
        let secret = lock(&view).secret.clone();
        while Instant::now() < end && believes(&view) {
            let resource = format!("{}r{}", cfg.prefix, rng.gen_range(0..cfg.resources));
            let shared = rng.gen_bool(0.25);
            let mode = if shared { "shared" } else { "exclusive" };
            let o = OpRef {
                resource: Some(&resource),
                session: Some(session),
                mode: Some(mode),
                ..OpRef::new(id, "acquire")
            };
            let wait_ms = rng.gen_range(200..1_500u64);
            sink.invoke(o);
            let sent_at = Instant::now();
            let req = pb::AcquireRequest {
                session_id: session,
                session_secret: secret.clone(),
                request_id: 0,
                resource: resource.clone(),
                mode: if shared {
                    pb::Mode::Shared as i32
                } else {
                    pb::Mode::Exclusive as i32
                },
                wait_timeout_ms: wait_ms,
                metadata: Default::default(),
                ttl_ms: 0,
                client_name: String::new(),
            };
            let r = timeout(
                call_timeout + Duration::from_millis(wait_ms),
                conn.client().acquire(req),
            )
            .await;
            let not_found = matches!(&r, Ok(Err(s)) if s.code() == Code::NotFound);
            let lease = match sink.finish(o, sent_at, r) {
                Ok(reply) => reply.lease,
                Err(outcome) => {
                    if not_found {
                        lock(&view).dead = true;
                    } else if outcome == Outcome::Unknown {
                        conn.rotate();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            };
            let Some(lease) = lease else { continue };
            let start = Instant::now();
            let token = lease.fencing_token;
            let o = OpRef {
                token: Some(token),
                ..o
            };
            sink.record(o, Outcome::Ok, None, Some(start - sent_at));
            // An acquire renews nothing: belief runs to the session's
            // deadline from acknowledged renewals.
            let silent = rng.gen_bool(cfg.silent_probability);
            if silent {
                lock(&view).silent = true;
            }
            let planned_end = start + Duration::from_millis(rng.gen_range(20..400));
            // Fenced read-modify-write while the lease is believed valid.
            if !shared && believes(&view) {
                if let Some(value) = register.read(&resource, token) {
                    let flight = Duration::from_millis(rng.gen_range(0..30));
                    tokio::time::sleep(flight).await;
                    if believes(&view) {
                        let accepted =
                            register.write(&resource, id, token, value, value + 1, &sink.0);
                        let outcome = if accepted { Outcome::Ok } else { Outcome::Fail };
                        sink.record(
                            OpRef {
                                op: "register_write",
                                ..o
                            },
                            outcome,
                            None,
                            None,
                        );
                    }
                }
            }
            // Hold until the planned end or the deadline, whichever comes
            // first; a renewal in flight may still move the deadline, so a
            // silent holder keeps believing until the latest one passed.
            loop {
                let deadline = lock(&view).deadline.unwrap_or(start);
                let until = if silent {
                    deadline
                } else {
                    planned_end.min(deadline)
                };
                if Instant::now() >= until {
                    break;
                }
                tokio::time::sleep_until(until).await;
            }
            let (dead, deadline) = {
                let v = lock(&view);
                (v.dead, v.deadline.unwrap_or(start))
            };
            let now = Instant::now();
            let ended_by = if dead {
                "lost"
            } else if now >= deadline {
                "deadline"
            } else {
                "released"
            };
            sink.push(Record::Hold {
                client: id,
                session,
                resource: resource.clone(),
                mode: mode.into(),
                token,
                start_ns: instant_ns(start),
                end_ns: instant_ns(now.min(deadline)),
                ended_by: ended_by.into(),
            });
            if ended_by != "released" {
                break;
            }
            let o = OpRef { op: "release", ..o };
            sink.invoke(o);
            let sent_at = Instant::now();
            let r = timeout(
                call_timeout,
                conn.client().release(pb::ReleaseRequest {
                    session_id: session,
                    session_secret: secret.clone(),
                    resource: resource.clone(),
                }),
            )
            .await;
            match sink.finish(o, sent_at, r) {
                Ok(_) => sink.record(o, Outcome::Ok, None, Some(sent_at.elapsed())),
                Err(_) => conn.rotate(),
            }
        }
        if Instant::now() >= end && !lock(&view).dead {
            close_session(id, session, &view, &mut conn, &sink, call_timeout).await;
        } else {
            // Given up (silent, expired, or lost): a fresh session next.
            lock(&view).silent = true;
        }
    }
    Ok(())
}

/// After the faults healed: every client must acquire again within the bound.
async fn liveness(cfg: &WorkloadConfig, id: u32, sink: &Sink) {
    let start = Instant::now();
    let resource = format!("{}liveness/{id}", cfg.prefix);
    let o = OpRef {
        resource: Some(&resource),
        mode: Some("exclusive"),
        ..OpRef::new(id, "liveness")
    };
    sink.invoke(o);
    let Ok(mut conn) = Conn::new(&cfg.endpoints) else {
        return;
    };
    while start.elapsed() < cfg.liveness_bound {
        let r = timeout(
            Duration::from_secs(2),
            conn.client().acquire(pb::AcquireRequest {
                session_id: 0,
                resource: resource.clone(),
                mode: pb::Mode::Exclusive as i32,
                wait_timeout_ms: 1_000,
                metadata: Default::default(),
                ttl_ms: cfg.ttl_ms,
                client_name: format!("liveness-{id}"),
                session_secret: Default::default(),
                request_id: 0,
            }),
        )
        .await;
        if let Ok(Ok(r)) = r {
            let r = r.into_inner();
            let o = OpRef {
                session: Some(r.session_id),
                token: r.lease.map(|l| l.fencing_token),
                ..o
            };
            sink.record(o, Outcome::Ok, None, Some(start.elapsed()));
            let _ = conn
                .client()
                .close_session(pb::CloseSessionRequest {
                    session_id: r.session_id,
                    session_secret: r.session_secret.clone(),
                })
                .await;
            return;
        }
        conn.rotate();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = format!("no acquire within {:?}", cfg.liveness_bound);
    sink.record(o, Outcome::Fail, Some(detail), Some(start.elapsed()));
}

/// Records who holds every workload resource once everything healed, so
/// the checker can find acknowledged closes and releases that were lost.
async fn final_state(cfg: &WorkloadConfig, sink: &Sink) {
    let Ok(mut conn) = Conn::new(&cfg.endpoints) else {
        return;
    };
    for _ in 0..(cfg.endpoints.len() * 3) {
        let r = timeout(
            Duration::from_secs(3),
            conn.client().list(pb::ListRequest {
                prefix: cfg.prefix.clone(),
                page_size: 1_000,
                page_token: String::new(),
            }),
        )
        .await;
        if let Ok(Ok(r)) = r {
            for res in r.into_inner().resources {
                for h in res.holders {
                    let o = OpRef {
                        resource: Some(&res.resource),
                        session: Some(h.session_id),
                        token: Some(h.fencing_token),
                        ..OpRef::new(u32::MAX, "final_holder")
                    };
                    sink.record(o, Outcome::Ok, None, None);
                }
            }
            return;
        }
        conn.rotate();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = OpRef::new(u32::MAX, "final_holder");
    sink.record(
        o,
        Outcome::Unknown,
        Some("no node answered List".into()),
        None,
    );
}

/// Runs the workload and writes the history through `out`.
pub async fn run(
    cfg: WorkloadConfig,
    mut out: impl std::io::Write + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        while let Some(r) = rx.blocking_recv() {
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    });
    let sink = Sink(tx);
    let register = Arc::new(Register::default());
    let end = Instant::now() + cfg.duration;
    let mut tasks = Vec::new();
    for id in 0..cfg.clients {
        tasks.push(tokio::spawn(client_loop(
            cfg.clone(),
            id,
            Arc::clone(&register),
            sink.clone(),
            end,
        )));
    }
    for t in tasks {
        t.await??;
    }
    let mut live = Vec::new();
    for id in 0..cfg.clients {
        let cfg = cfg.clone();
        let sink = sink.clone();
        live.push(tokio::spawn(async move { liveness(&cfg, id, &sink).await }));
    }
    for t in live {
        t.await?;
    }
    final_state(&cfg, &sink).await;
    drop(sink);
    // Keepalive tasks hold sink clones until they notice the end (within a
    // renewal period or two).
    let grace = Duration::from_millis(cfg.ttl_ms * 2 + 2_000);
    match timeout(grace, writer).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("history writer did not finish within {grace:?}"),
    }
}
