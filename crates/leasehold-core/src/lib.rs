//! Leasehold's domain core: sessions, leases and fencing tokens as a
//! deterministic state machine.
//!
//! # Layout
//! - [`types`]: ids, tokens and [`Mode`].
//! - [`limits`]: every bound the state enforces.
//! - [`config`]: the replicated [`LeaseConfig`] (TTL bounds, drift, grace).
//! - [`command`]: the replicated [`Command`]s.
//! - [`session`], [`resource`]: the replicated records.
//! - [`small`]: [`SmallMap`] / [`SmallSet`]: ordered collections sized to
//!   their contents while small (the holders of a resource, the leases of a
//!   session), encoded as the `BTreeMap` / `BTreeSet` they replace.
//! - [`machine`]: [`LeaseState`] and its deterministic `apply`.
//! - [`outcome`]: what an apply returns ([`Response`], events, touched keys).
//! - [`event`]: lease events for watchers.
//! - [`rejection`]: why a command was refused.
//! - [`snapshot`]: versioned encoding of the whole state.
//! - [`time`]: the time model's arithmetic (holder validity, leader lease).
//! - [`leader`]: the leader's rules (leader lease, session deadlines,
//!   renewal, expiry, takeover, vote gate) with time injected.
//!
//! This crate does no I/O, spawns nothing and never reads a clock: every
//! instant it needs is a log index, and durations are plain numbers. Time
//! decisions (deadlines, expiry) belong to the leader, which proposes
//! [`Command::ExpireSessions`] when a deadline passed on its own clock.

pub mod command;
pub mod config;
pub mod event;
pub mod leader;
pub mod limits;
pub mod machine;
pub mod outcome;
pub mod rejection;
pub mod resource;
pub mod session;
pub mod small;
pub mod snapshot;
pub mod time;
pub mod types;

pub use command::{Acquire, Command, SessionRef, SessionTarget};
pub use config::LeaseConfig;
pub use event::{Event, EventKind};
pub use leader::{LeaderState, RenewOutcome, Renewal, Serving};
pub use machine::LeaseState;
pub use outcome::{Applied, Grant, Response, SessionChange, Touched};
pub use rejection::{HolderRef, Rejection};
pub use resource::{AbandonedWait, Lease, RecallNotice, Resource, Waiter};
pub use session::Session;
pub use small::{SmallMap, SmallSet};
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT_VERSION};
pub use types::{FencingToken, LogIndex, Mode, RequestId, SessionId, SessionSecret};
