//! A Leasehold node: one member of the three-node Raft group.
//!
//! # Layout
//! - [`config`]: what a node starts from (id, addresses, peers, data dir,
//!   Raft timing) and the openraft configuration derived from it.
//! - [`node`]: [`Node`]: opens the sled store, starts Raft and the peer
//!   transport, proposes commands, shuts down cleanly.
//! - [`admission`]: the join rule of a pristine store: found a new cluster,
//!   wait to be added, or stay out while the cluster still counts this id
//!   (a wiped node).
//! - [`proposer`]: group commit: concurrent proposals share one Raft entry.
//! - [`lessor`]: the leader's side of the time model: leader lease, session
//!   deadlines, takeover and failover grace, expiry.
//! - [`election`]: prompt elections: a follower stands as soon as its
//!   leader's vote window has run out.
//! - [`auth`]: principals, roles, resource prefixes and bearer-token
//!   digests: who may make which call.
//! - [`api`]: the client gRPC API, forwarding and the status mapping.
//! - [`certs`]: throwaway CA, node and client certificates for dev and tests.
//! - [`limits`]: what clients may hold open on one node (connections,
//!   streams, waiters) and the quotas that count them.
//! - [`conn`]: client API connections: the capped accept loop, idle close,
//!   and the call tracking layer.
//! - [`clock`]: the monotonic clock lease decisions read (test-only skew).
//! - [`metrics`]: every metric of the node (counters, gauges, histograms)
//!   and their Prometheus registry.
//! - [`http`]: the HTTP endpoint serving `/metrics`, `/healthz`, `/readyz`.
//! - [`shutdown`]: graceful shutdown through a broadcast and a drop guard.
//! - [`failstop`]: the watchdog that fail-stops the node when its store
//!   fails (docs/adr/0007-disk-faults-fail-stop.md).
//! - [`error`]: this layer's error type.
//!
//! Dependency direction: `leasehold-core` (pure) → `leasehold-raft`
//! (storage, transport) → this crate → client and CLI.

pub mod admission;
pub mod api;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod config;
pub mod conn;
pub mod election;
pub mod error;
pub mod failstop;
pub mod http;
pub mod lessor;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod proposer;
pub mod shutdown;

pub use admission::Admission;
pub use auth::{AuthConfig, Principal, Role, TokenDigest};
pub use config::{ConfigProblem, NodeConfig, PeerSpec, RaftTiming, TlsFiles};
pub use error::{ProposeError, ServerError};
pub use lessor::Serving;
pub use node::{Node, DRAIN_MAX};
