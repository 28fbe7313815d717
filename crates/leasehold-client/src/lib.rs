//! Client library for Leasehold, a Raft-replicated lease service.
//!
//! A [`Client`] connects to a cluster; a [`Session`] is the holder's
//! heartbeat, kept alive by the client's background keepalive task; a
//! [`Lease`] on a named resource carries a fencing token and tells its
//! holder when to stop.
//!
//! # Layout
//! - [`client`]: [`Client`]: sessions (opened, or adopted by handle),
//!   one-call leases, get/list/watch, recall, status, sessions listed,
//!   configuration; unary calls retried across nodes.
//! - [`config`]: [`ClientBuilder`]: endpoints, drift bound and margin of
//!   holder deadlines, timeouts, backoff.
//! - [`session`]: [`Session`], [`Lease`], [`LeaseStatus`],
//!   [`SessionStatus`], [`LostReason`]: the holder deadline and the "lost or
//!   recalled" signal.
//! - [`deadline`]: [`HolderClock`]: the holder side of the time model.
//! - [`keepalive`] (private): the task renewing every session on one
//!   `KeepAlive` stream, at most 10,000 sessions per request (the server's
//!   limit), pairing replies to sends through a FIFO.
//! - [`membership`]: add, remove, replace one member; the leader's view.
//! - [`transport`]: endpoint normalization, leader hints, channels, retries.
//! - [`watch`]: [`WatchStream`], lease events resumed after failures.
//! - [`types`]: plain values ([`AcquireOptions`], [`ResourceState`],
//!   [`NodeStatus`], [`WatchEvent`], …).
//! - [`handle`]: [`SessionHandle`]: a session's id and owner secret as
//!   one string.
//! - [`error`]: [`ClientError`] with its gRPC [`code`](ClientError::code).
//!
//! # The holder deadline
//! The client reads its monotonic clock *before* sending every request that
//! grants or renews (open, acquire, keepalive) and, on a reply "alive for
//! TTL", believes the session until
//! `t_send + TTL × (1 − ρ) / (1 + ρ) − margin` (ρ defaults to 1%, the margin
//! to 5 ms; see `docs/adr/0001-time-model.md`). ρ is never smaller than the
//! cluster's: every answer reports the cluster's drift bound, and a larger
//! one is adopted at once, moving existing deadlines earlier. A local timer fires at that
//! deadline: [`Lease::lost`] resolves before the service could grant the
//! lease to anyone else. Check [`Lease::is_valid`] before each use of the
//! protected resource and send it [`Lease::fencing_token`].
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use leasehold_client::{AcquireOptions, Client};
//!
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! # let cluster = leasehold_tests::TestCluster::start(Default::default()).await?;
//! # let endpoints = cluster.api_endpoints();
//! // endpoints: e.g. ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
//! let client = Client::connect(endpoints).await?;
//! // A one-call lease: its private session lives as long as the lease.
//! let lease = client
//!     .acquire_once("db/primary", Duration::from_secs(10), AcquireOptions::exclusive())
//!     .await?;
//! println!("token {}", lease.fencing_token());
//! assert!(lease.is_valid());
//! lease.release().await?;
//! # cluster.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
pub mod deadline;
pub mod error;
pub mod handle;
mod keepalive;
pub mod membership;
pub mod session;
pub mod transport;
pub mod types;
pub mod watch;

pub use client::Client;
pub use config::{ClientBuilder, ClientTls, Token, TOKEN_BYTES_MAX};
pub use deadline::HolderClock;
pub use error::ClientError;
pub use handle::SessionHandle;
pub use leasehold_core::{LeaseConfig, Mode, SessionSecret};
pub use session::{Lease, LeaseStatus, LostReason, Session, SessionStatus};
pub use types::{
    AcquireOptions, EventKind, LeaseInfo, ListPage, Member, NodeStatus, ResourceState, Serving,
    SessionInfo, SessionsPage, WatchEvent,
};
pub use watch::WatchStream;
