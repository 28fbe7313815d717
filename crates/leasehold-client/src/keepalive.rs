//! The keepalive task: one per client, renewing every session of the client
//! on one `KeepAlive` stream to the leader, every period, in as few
//! requests as the server's limit allows ([`KEEPALIVE_SESSIONS_MAX`]
//! sessions per request).
//!
//! Replies come back one per request, in order, so a FIFO of the instants
//! read before each send ([`RenewalFifo`]) pairs each reply with its
//! `t_send`; the holder deadline is then extended from that instant
//! (docs/adr/0001-time-model.md §3). On any stream error, or a reply that
//! does not come in time, the task reconnects to the leader, trying every
//! node with capped backoff; meanwhile each session's watchdog fires at its
//! holder deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::deadline::SharedClock;
use crate::session::{LostReason, Registry};
use crate::transport::{leader_hint, Backoff, Transport};

/// Shortest time to wait for a reply before declaring the stream stuck.
const REPLY_TIMEOUT_FLOOR: Duration = Duration::from_millis(500);

/// Most sessions one keepalive request may renew: the server's limit
/// (`KEEPALIVE_SESSIONS_MAX` of `leasehold-server`'s API), which answers a
/// larger request with `INVALID_ARGUMENT` and ends the stream. A client
/// with more sessions renews them in several requests per period.
pub(crate) const KEEPALIVE_SESSIONS_MAX: usize = 10_000;

/// The requests of one renewal round: every id in `ids`, in order, at most
/// `per_request` (at least 1) per request.
pub(crate) fn round(
    registry: &Registry,
    ids: &[u64],
    per_request: usize,
) -> VecDeque<pb::KeepAliveRequest> {
    ids.chunks(per_request.max(1))
        .map(|chunk| registry.request(chunk.to_vec()))
        .collect()
}

/// Renewals sent and not yet answered, oldest first: the instant read
/// before each send. One per stream: when a stream breaks, its FIFO is
/// dropped with it (those replies will never come).
#[derive(Debug, Default)]
pub(crate) struct RenewalFifo {
    /// Send instants, in send order.
    pending: VecDeque<Instant>,
}

impl RenewalFifo {
    /// Records a request about to be sent, read at `t_send`.
    pub(crate) fn sent(&mut self, t_send: Instant) {
        self.pending.push_back(t_send);
    }

    /// The send instant of the request a reply answers (the oldest
    /// unanswered one); `None` if no request is outstanding.
    pub(crate) fn answered(&mut self) -> Option<Instant> {
        self.pending.pop_front()
    }

    /// The send instant of the oldest unanswered request.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.pending.front().copied()
    }

    /// How many requests are outstanding.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// Applies one keepalive reply to the request sent at `t_send`: first the
/// cluster's drift bound it reports is adopted (so that nothing is believed
/// with a smaller one), then alive sessions are extended (and get their
/// recall notices), dead ones are lost and no longer renewed. Only the
/// sessions the reply names are touched.
pub(crate) fn apply_reply(
    registry: &Registry,
    clock: &SharedClock,
    t_send: Instant,
    reply: pb::KeepAliveResponse,
) {
    clock.observe(reply.drift_ppm);
    for s in reply.sessions {
        let Some(core) = registry.get(s.session_id) else {
            continue;
        };
        if s.alive {
            if !core.renewed(t_send, s.ttl_ms) {
                registry.remove(s.session_id);
                continue;
            }
            for n in s.notices {
                core.recall(&n.resource, n.reason);
            }
        } else {
            core.lose(LostReason::SessionGone);
            registry.remove(s.session_id);
        }
    }
}

/// How the stream loop ended.
enum StreamEnd {
    /// The client is gone: stop.
    Stop,
    /// Nothing left to renew: idle until a session is added.
    Idle,
    /// The stream broke: reconnect (at once when `retry_now`).
    Broken {
        /// A leader hint was received: no need to back off.
        retry_now: bool,
    },
}

/// Runs until `stop`'s sender is dropped (the client is gone).
pub(crate) async fn run(
    transport: Arc<Transport>,
    registry: Arc<Registry>,
    clock: Arc<SharedClock>,
    mut stop: watch::Receiver<()>,
) {
    let config = transport.config.clone();
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    loop {
        while registry.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                _ = registry.changed.notified() => {}
            }
        }
        let end = stream_once(&transport, &registry, &clock, &mut stop).await;
        match end {
            StreamEnd::Stop => return,
            StreamEnd::Idle => backoff.reset(config.backoff_initial),
            StreamEnd::Broken { retry_now: true } => {}
            StreamEnd::Broken { retry_now: false } => {
                let pause = backoff.next_pause();
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Where to open the stream: the known leader, else whoever a node names
/// as leader, else any endpoint (it answers with a hint).
async fn leader_address(transport: &Transport) -> String {
    if let Some(l) = transport.leader() {
        return l;
    }
    let timeout = transport.config.attempt_timeout;
    let round = transport.round();
    for addr in &round {
        let Ok(mut stub) = transport.stub(addr) else {
            continue;
        };
        let Ok(Ok(reply)) = tokio::time::timeout(timeout, stub.status(pb::StatusRequest {})).await
        else {
            continue;
        };
        let s = reply.into_inner();
        if s.role == "leader" {
            transport.set_leader(Some(addr.clone()));
            return addr.clone();
        }
        if let Ok(l) = crate::transport::normalize_endpoint(&s.leader_api_addr) {
            transport.set_leader(Some(l.clone()));
            return l;
        }
    }
    round.into_iter().next().unwrap_or_default()
}

/// Opens one stream and renews over it until it breaks or there is nothing
/// left to renew.
async fn stream_once(
    transport: &Transport,
    registry: &Registry,
    clock: &SharedClock,
    stop: &mut watch::Receiver<()>,
) -> StreamEnd {
    let config = &transport.config;
    let addr = leader_address(transport).await;
    let mut stub = match transport.stub(&addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(node = %addr, error = %e, "keepalive: bad leader address");
            transport.forget_leader(&addr);
            return StreamEnd::Broken { retry_now: false };
        }
    };
    let (tx, rx) = mpsc::channel::<pb::KeepAliveRequest>(16);
    let mut fifo = RenewalFifo::default();

    // The first renewal goes out with the stream: right after a reconnect
    // the sessions need one soonest. The rest of the round's requests
    // follow as the stream takes them (below), while replies are read.
    let ids = registry.ids();
    let mut unsent = round(registry, &ids, KEEPALIVE_SESSIONS_MAX);
    let Some(first) = unsent.pop_front() else {
        return StreamEnd::Idle;
    };
    let t_send = Instant::now();
    fifo.sent(t_send);
    if tx.try_send(first).is_err() {
        return StreamEnd::Broken { retry_now: false };
    }
    let opened = tokio::select! {
        _ = stop.changed() => return StreamEnd::Stop,
        r = tokio::time::timeout(config.attempt_timeout, stub.keep_alive(ReceiverStream::new(rx))) => r,
    };
    let mut inbound = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return broken(transport, &addr, &status),
        Err(_) => {
            tracing::debug!(node = %addr, "keepalive: stream did not open in time");
            transport.forget_leader(&addr);
            return StreamEnd::Broken { retry_now: false };
        }
    };
    tracing::debug!(node = %addr, "keepalive stream open");

    let mut interval = registry.renew_interval().unwrap_or(REPLY_TIMEOUT_FLOOR);
    let mut next_send = t_send + interval;
    loop {
        let reply_timeout = interval.max(REPLY_TIMEOUT_FLOOR);
        let stall_at = fifo.oldest().map(|t| t + reply_timeout);
        tokio::select! {
            _ = stop.changed() => return StreamEnd::Stop,
            _ = registry.changed.notified() => {
                // A session was added: its TTL may be the shortest now.
                interval = registry.renew_interval().unwrap_or(interval);
                next_send = next_send.min(Instant::now() + interval);
            }
            _ = tokio::time::sleep_until(next_send.into()) => {
                let ids = registry.ids();
                if ids.is_empty() {
                    return StreamEnd::Idle;
                }
                interval = registry.renew_interval().unwrap_or(interval);
                // A new round replaces what the last one had not sent yet:
                // it covers the same sessions, from a later instant.
                unsent = round(registry, &ids, KEEPALIVE_SESSIONS_MAX);
                next_send = Instant::now() + interval;
            }
            // The round's next request, once the stream takes it. Sending
            // here rather than all at once keeps replies being read, so a
            // long round cannot stall on flow control.
            permit = tx.reserve(), if !unsent.is_empty() => {
                let Ok(permit) = permit else {
                    return StreamEnd::Broken { retry_now: false };
                };
                if let Some(request) = unsent.pop_front() {
                    // Read before the request can leave: the holder counts
                    // from here.
                    let t_send = Instant::now();
                    fifo.sent(t_send);
                    permit.send(request);
                }
            }
            message = inbound.message() => match message {
                Ok(Some(reply)) => match fifo.answered() {
                    Some(t_send) => apply_reply(registry, clock, t_send, reply),
                    None => tracing::warn!(node = %addr, "keepalive: reply without a request"),
                },
                Ok(None) => {
                    tracing::debug!(node = %addr, "keepalive stream ended");
                    transport.forget_leader(&addr);
                    return StreamEnd::Broken { retry_now: false };
                }
                Err(status) => return broken(transport, &addr, &status),
            },
            _ = sleep_until_opt(stall_at) => {
                tracing::debug!(node = %addr, ?reply_timeout, "keepalive: no reply in time");
                transport.forget_leader(&addr);
                return StreamEnd::Broken { retry_now: false };
            }
        }
    }
}

/// Records what a failed stream says about the leader.
fn broken(transport: &Transport, addr: &str, status: &tonic::Status) -> StreamEnd {
    let hint = leader_hint(status);
    tracing::debug!(node = %addr, code = ?status.code(), message = status.message(), ?hint,
        "keepalive stream failed");
    match hint {
        Some(h) if h != addr => {
            transport.set_leader(Some(h));
            StreamEnd::Broken { retry_now: true }
        }
        _ => {
            transport.forget_leader(addr);
            StreamEnd::Broken { retry_now: false }
        }
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::HolderClock;
    use crate::session::SessionCore;

    #[test]
    fn replies_pair_with_sends_in_order() {
        let mut fifo = RenewalFifo::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let t2 = t0 + Duration::from_millis(2);
        fifo.sent(t0);
        fifo.sent(t1);
        assert_eq!(fifo.oldest(), Some(t0));
        assert_eq!(fifo.answered(), Some(t0));
        fifo.sent(t2);
        assert_eq!(fifo.answered(), Some(t1));
        assert_eq!(fifo.answered(), Some(t2));
        assert_eq!(fifo.answered(), None);
        assert_eq!(fifo.len(), 0);
        assert_eq!(fifo.oldest(), None);
    }

    fn status(id: u64, alive: bool, ttl_ms: u64, recall: Option<&str>) -> pb::SessionStatus {
        pb::SessionStatus {
            session_id: id,
            alive,
            ttl_ms,
            notices: recall
                .map(|r| pb::Notice {
                    resource: r.into(),
                    fencing_token: 5,
                    reason: "drain".into(),
                    revision: 6,
                })
                .into_iter()
                .collect(),
        }
    }

    #[tokio::test]
    async fn replies_extend_from_their_own_send_instant() {
        let registry = Registry::default();
        let clock = Arc::new(SharedClock::new(HolderClock::new(0, Duration::ZERO)));
        let t_open = Instant::now();
        let a = SessionCore::new(
            crate::SessionHandle::new(1, leasehold_core::SessionSecret([0; 16])),
            "a".into(),
            1_000,
            false,
            Arc::clone(&clock),
            t_open,
        );
        let b = SessionCore::new(
            crate::SessionHandle::new(2, leasehold_core::SessionSecret([0; 16])),
            "b".into(),
            1_000,
            false,
            Arc::clone(&clock),
            t_open,
        );
        registry.add(Arc::clone(&a));
        registry.add(Arc::clone(&b));
        let lease = b.lease_granted("r");

        // Two renewals in flight; the first reply carries the first send's
        // instant, however late it arrives.
        let mut fifo = RenewalFifo::default();
        let t1 = t_open + Duration::from_millis(100);
        let t2 = t_open + Duration::from_millis(200);
        fifo.sent(t1);
        fifo.sent(t2);
        let reply = |recall| pb::KeepAliveResponse {
            sessions: vec![status(1, true, 1_000, None), status(2, true, 1_000, recall)],
            drift_ppm: 0,
        };
        apply_reply(
            &registry,
            &clock,
            fifo.answered().expect("pending"),
            reply(None),
        );
        assert_eq!(a.deadline(), t1 + Duration::from_millis(1_000));
        apply_reply(
            &registry,
            &clock,
            fifo.answered().expect("pending"),
            reply(Some("r")),
        );
        assert_eq!(a.deadline(), t2 + Duration::from_millis(1_000));
        assert_eq!(
            *lease.borrow(),
            crate::LeaseStatus::Recalled {
                reason: "drain".into()
            }
        );

        // The service says session 1 is gone: lost, no longer renewed.
        apply_reply(
            &registry,
            &clock,
            Instant::now(),
            pb::KeepAliveResponse {
                sessions: vec![status(1, false, 0, None)],
                drift_ppm: 0,
            },
        );
        assert_eq!(a.lost(), Some(LostReason::SessionGone));
        assert_eq!(registry.ids(), [2]);
    }

    #[tokio::test]
    async fn a_reply_raising_the_drift_bound_applies_before_its_renewals() {
        let registry = Registry::default();
        let clock = Arc::new(SharedClock::new(HolderClock::new(0, Duration::ZERO)));
        let t_open = Instant::now();
        let a = SessionCore::new(
            crate::SessionHandle::new(1, leasehold_core::SessionSecret([0; 16])),
            "a".into(),
            1_000,
            false,
            Arc::clone(&clock),
            t_open,
        );
        let idle = SessionCore::new(
            crate::SessionHandle::new(2, leasehold_core::SessionSecret([0; 16])),
            "b".into(),
            1_000,
            false,
            Arc::clone(&clock),
            t_open,
        );
        registry.add(Arc::clone(&a));
        registry.add(Arc::clone(&idle));
        assert_eq!(a.deadline(), t_open + Duration::from_millis(1_000));
        let t1 = t_open + Duration::from_millis(100);
        apply_reply(
            &registry,
            &clock,
            t1,
            pb::KeepAliveResponse {
                sessions: vec![status(1, true, 1_000, None)],
                drift_ppm: 100_000,
            },
        );
        // 1 s × 0.9 / 1.1: the renewal counts with the raised bound, and
        // the session the reply did not name is recomputed from its own
        // t_send.
        assert_eq!(clock.current().drift_ppm(), 100_000);
        assert_eq!(a.deadline(), t1 + Duration::from_millis(818));
        assert_eq!(idle.deadline(), t_open + Duration::from_millis(818));
    }

    #[test]
    fn a_round_splits_into_requests_of_at_most_the_servers_limit() {
        let ids: Vec<u64> = (1..=25_000).collect();
        let requests = round(&Registry::default(), &ids, KEEPALIVE_SESSIONS_MAX);
        let sizes: Vec<usize> = requests.iter().map(|r| r.session_ids.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let again: Vec<u64> = requests.into_iter().flat_map(|r| r.session_ids).collect();
        assert_eq!(again, ids, "every session once, in order");
        assert_eq!(
            round(&Registry::default(), &ids[..10_000], KEEPALIVE_SESSIONS_MAX).len(),
            1
        );
        assert!(round(&Registry::default(), &[], KEEPALIVE_SESSIONS_MAX).is_empty());
    }

    #[tokio::test]
    async fn replies_to_the_requests_of_a_round_touch_only_their_sessions() {
        let registry = Registry::default();
        let clock = Arc::new(SharedClock::new(HolderClock::new(0, Duration::ZERO)));
        let t_open = Instant::now();
        let cores: Vec<_> = (1..=5)
            .map(|id| {
                let c = SessionCore::new(
                    crate::SessionHandle::new(id, leasehold_core::SessionSecret([0; 16])),
                    "s".into(),
                    1_000,
                    false,
                    Arc::clone(&clock),
                    t_open,
                );
                registry.add(Arc::clone(&c));
                c
            })
            .collect();
        // One round of three requests: [1, 2], [3, 4], [5].
        let requests = round(&registry, &registry.ids(), 2);
        assert_eq!(requests.len(), 3);
        let mut fifo = RenewalFifo::default();
        let sends: Vec<Instant> = (1..=3)
            .map(|i| t_open + Duration::from_millis(10 * i))
            .collect();
        for t in &sends {
            fifo.sent(*t);
        }
        // Each reply answers its own request: the second says session 3
        // is gone.
        for (request, t_expected) in requests.iter().zip(&sends) {
            let t_send = fifo.answered().expect("pending");
            assert_eq!(t_send, *t_expected);
            let sessions = request
                .session_ids
                .iter()
                .map(|id| status(*id, *id != 3, 1_000, None))
                .collect();
            apply_reply(
                &registry,
                &clock,
                t_send,
                pb::KeepAliveResponse {
                    sessions,
                    drift_ppm: 0,
                },
            );
        }
        assert_eq!(cores[2].lost(), Some(LostReason::SessionGone));
        assert_eq!(registry.ids(), [1, 2, 4, 5]);
        for (core, t_send) in cores
            .iter()
            .zip([sends[0], sends[0], sends[1], sends[1], sends[2]])
        {
            if core.id != 3 {
                assert_eq!(core.lost(), None);
                assert_eq!(core.deadline(), t_send + Duration::from_millis(1_000));
            }
        }
    }
}
