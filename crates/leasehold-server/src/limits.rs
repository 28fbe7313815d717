//! What one node lets its clients hold open: connections, KeepAlive and
//! Watch streams (per node and per client), acquires waiting in a queue,
//! and how long each may sit idle. Over a limit a call answers
//! `RESOURCE_EXHAUSTED` with the limit's setting name in the message; the
//! refusal is counted in `leasehold_limit_rejections_total{limit}`.
//! `docs/limits.md` lists every limit, its default and what a client sees.
//!
//! A *client* is a remote IP address: the per-client limits keep one host
//! from taking a whole node's share. (Sessions cannot be the key: a stream
//! is counted before it names any session.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::ConfigProblem;
use crate::metrics::{Metrics, StreamKind};

/// HTTP/2 calls one connection may have open at once (unary calls and
/// streams alike); more wait in the client until one ends.
pub const CALLS_PER_CONNECTION_MAX: u32 = 1_000;
/// Period of the HTTP/2 pings the node sends on every connection, so that a
/// peer that vanished (no FIN, no RST) is noticed while calls are open.
pub const HTTP2_PING_INTERVAL_MS: u64 = 30_000;
/// How long a ping may go unanswered before the connection is closed.
pub const HTTP2_PING_TIMEOUT_MS: u64 = 10_000;
/// Connections over `connections_max` that are still answered (every call
/// `RESOURCE_EXHAUSTED` naming the limit) before being closed; beyond this
/// many, further ones are closed at once without an answer.
pub const REFUSED_CONNECTIONS_MAX: usize = 64;
/// How long a refused connection stays open for its answers.
pub const REFUSED_CONNECTION_LINGER_MS: u64 = 1_000;
/// Pause after a failed `accept` (out of file descriptors, …) before the
/// next, so a persistent failure does not spin a core.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;
/// Events buffered for one Watch stream between the node and its reader.
pub const WATCH_BUFFER_EVENTS: usize = 256;
/// Answers buffered for one KeepAlive stream.
pub const KEEPALIVE_BUFFER_MESSAGES: usize = 16;
/// Smallest idle or stall timeout a configuration may set.
pub const TIMEOUT_MS_MIN: u64 = 100;

/// The client API limits of one node (settings `limits.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Client API connections open at once; bounds the sockets and HTTP/2
    /// state a flood of connections can pin.
    pub connections_max: usize,
    /// A connection with no call open for this long is closed; bounds how
    /// long an abandoned connection holds its slot.
    pub connection_idle_timeout_ms: u64,
    /// KeepAlive streams open at once on this node.
    pub keepalive_streams_max: usize,
    /// KeepAlive streams open at once from one remote IP address.
    pub keepalive_streams_per_client_max: usize,
    /// Watch streams open at once on this node.
    pub watch_streams_max: usize,
    /// Watch streams open at once from one remote IP address.
    pub watch_streams_per_client_max: usize,
    /// Acquires waiting in a queue (`wait_timeout_ms` > 0) at once on this
    /// node; each holds a call and a subscription while it waits.
    pub waiters_max: usize,
    /// A Watch stream whose reader has not taken an event for this long,
    /// with its buffer full, ends `RESOURCE_EXHAUSTED`; bounds the memory a
    /// reader that stopped reading pins.
    pub watch_stall_timeout_ms: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections_max: 10_000,
            connection_idle_timeout_ms: 300_000,
            keepalive_streams_max: 10_000,
            keepalive_streams_per_client_max: 1_000,
            watch_streams_max: 10_000,
            watch_streams_per_client_max: 1_000,
            waiters_max: 10_000,
            watch_stall_timeout_ms: 30_000,
        }
    }
}

impl ApiLimits {
    /// Every problem of these settings, each naming its field.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let counts = [
            ("connections_max", self.connections_max),
            ("keepalive_streams_max", self.keepalive_streams_max),
            (
                "keepalive_streams_per_client_max",
                self.keepalive_streams_per_client_max,
            ),
            ("watch_streams_max", self.watch_streams_max),
            (
                "watch_streams_per_client_max",
                self.watch_streams_per_client_max,
            ),
            ("waiters_max", self.waiters_max),
        ];
        for (field, n) in counts {
            if n == 0 {
                out.push(ConfigProblem {
                    field,
                    message: "must be positive".into(),
                });
            }
        }
        let timeouts = [
            (
                "connection_idle_timeout_ms",
                self.connection_idle_timeout_ms,
            ),
            ("watch_stall_timeout_ms", self.watch_stall_timeout_ms),
        ];
        for (field, ms) in timeouts {
            if ms < TIMEOUT_MS_MIN {
                out.push(ConfigProblem {
                    field,
                    message: format!("must be at least {TIMEOUT_MS_MIN} ms (is {ms} ms)"),
                });
            }
        }
        out
    }

    /// The idle timeout of connections.
    pub fn connection_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.connection_idle_timeout_ms)
    }

    /// The stall timeout of Watch streams.
    pub fn watch_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.watch_stall_timeout_ms)
    }
}

/// A limit that refused something: its setting name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    /// The setting (`watch_streams_per_client_max`, …).
    pub limit: &'static str,
    /// Its value.
    pub max: usize,
}

/// Counts of one kind of held thing (KeepAlive streams, Watch streams,
/// waiting acquires): on the node, and per remote IP when `per_client` is
/// set. Slots are taken with [`Quota::take`] and given back when the
/// [`Slot`] drops.
#[derive(Debug)]
pub struct Quota {
    /// What is counted (gauge and rejection label).
    kind: StreamKind,
    /// Most at once on the node, and its setting name.
    node_max: (usize, &'static str),
    /// Most at once per remote IP, and its setting name (`None`: no
    /// per-client limit).
    per_client_max: Option<(usize, &'static str)>,
    /// Open count on the node and per IP (IPs at 0 are removed, so the map
    /// never holds more entries than slots are open).
    open: Mutex<Open>,
    /// Gauge and rejection counters.
    metrics: Arc<Metrics>,
}

/// What a [`Quota`] counts under its lock.
#[derive(Debug, Default)]
struct Open {
    /// Slots open on the node.
    total: usize,
    /// Slots open per remote IP.
    per_ip: HashMap<IpAddr, usize>,
}

impl Quota {
    /// A quota of `kind` with its limits.
    pub fn new(
        kind: StreamKind,
        node_max: (usize, &'static str),
        per_client_max: Option<(usize, &'static str)>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Quota {
            kind,
            node_max,
            per_client_max,
            open: Mutex::new(Open::default()),
            metrics,
        })
    }

    /// Takes a slot for `client` (its IP, when known), or names the limit
    /// that is reached.
    pub fn take(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, LimitReached> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = if open.total >= self.node_max.0 {
            Some(self.node_max)
        } else {
            match (self.per_client_max, client) {
                (Some((max, name)), Some(ip))
                    if open.per_ip.get(&ip).copied().unwrap_or(0) >= max =>
                {
                    Some((max, name))
                }
                _ => None,
            }
        };
        if let Some((max, limit)) = refused {
            drop(open);
            self.metrics.limit_rejected(limit);
            return Err(LimitReached { limit, max });
        }
        open.total += 1;
        let client = client.filter(|_| self.per_client_max.is_some());
        if let Some(ip) = client {
            *open.per_ip.entry(ip).or_insert(0) += 1;
        }
        drop(open);
        self.metrics.stream_opened(self.kind);
        Ok(Slot {
            quota: Arc::clone(self),
            client,
        })
    }

    /// Slots open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One taken slot of a [`Quota`]; gives it back on drop.
#[derive(Debug)]
pub struct Slot {
    /// The quota it came from.
    quota: Arc<Quota>,
    /// The IP it is counted against, if any.
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .quota
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.client {
            if let Some(n) = open.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_ip.remove(&ip);
                }
            }
        }
        drop(open);
        self.quota.metrics.stream_closed(self.quota.kind);
    }
}

/// The quotas of one node's client API.
#[derive(Debug, Clone)]
pub struct Quotas {
    /// KeepAlive streams.
    pub keepalive: Arc<Quota>,
    /// Watch streams.
    pub watch: Arc<Quota>,
    /// Acquires waiting in a queue.
    pub waiters: Arc<Quota>,
}

impl Quotas {
    /// The quotas of `limits`.
    pub fn new(limits: &ApiLimits, metrics: &Arc<Metrics>) -> Self {
        Quotas {
            keepalive: Quota::new(
                StreamKind::KeepAlive,
                (limits.keepalive_streams_max, "keepalive_streams_max"),
                Some((
                    limits.keepalive_streams_per_client_max,
                    "keepalive_streams_per_client_max",
                )),
                Arc::clone(metrics),
            ),
            watch: Quota::new(
                StreamKind::Watch,
                (limits.watch_streams_max, "watch_streams_max"),
                Some((
                    limits.watch_streams_per_client_max,
                    "watch_streams_per_client_max",
                )),
                Arc::clone(metrics),
            ),
            waiters: Quota::new(
                StreamKind::Waiter,
                (limits.waiters_max, "waiters_max"),
                None,
                Arc::clone(metrics),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_node_and_per_client() {
        let metrics = Arc::new(Metrics::new());
        let q = Quota::new(
            StreamKind::Watch,
            (3, "watch_streams_max"),
            Some((2, "watch_streams_per_client_max")),
            Arc::clone(&metrics),
        );
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = q.take(Some(a)).expect("first");
        let a2 = q.take(Some(a)).expect("second");
        assert_eq!(
            q.take(Some(a)).err(),
            Some(LimitReached {
                limit: "watch_streams_per_client_max",
                max: 2
            })
        );
        let b1 = q.take(Some(b)).expect("another client");
        assert_eq!(
            q.take(Some(b)).err().map(|l| l.limit),
            Some("watch_streams_max")
        );
        assert_eq!(metrics.snapshot().watch_streams, 3);
        assert_eq!(metrics.snapshot().limit_rejections_total, 2);
        drop((a1, a2, b1));
        assert_eq!(q.open(), 0);
        assert_eq!(metrics.snapshot().watch_streams, 0);
        assert!(q
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_ip
            .is_empty());
        let _again = q.take(Some(a)).expect("slots come back");
    }

    #[test]
    fn settings_are_checked() {
        assert!(ApiLimits::default().problems().is_empty());
        let bad = ApiLimits {
            watch_streams_max: 0,
            connection_idle_timeout_ms: 5,
            ..ApiLimits::default()
        };
        let fields: Vec<_> = bad.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["watch_streams_max", "connection_idle_timeout_ms"]);
    }
}
