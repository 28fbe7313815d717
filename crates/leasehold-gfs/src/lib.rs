//! GFS-style chunk primaries on Leasehold: a master hands each chunk's
//! **primary** role to one chunkserver through the Leasehold lease
//! `chunk/C`; the primary orders every mutation of its chunk; the lease's
//! fencing token is the chunk version.
//!
//! Each chunkserver holds one Leasehold session (its heartbeat: one
//! keepalive renews every chunk lease it holds). The master decides who
//! becomes primary and tells that chunkserver to acquire `chunk/C` in its
//! own session (`BecomePrimary`); the new primary stamps the new version on
//! every replica of the set (installing its content) before accepting
//! writes, so a replica that missed a term is stale by version. Masters
//! elect one of themselves through the lease `gfs/master`; a failover
//! needs no persisted state (locations come from chunkserver reports,
//! primaries from Leasehold). See `docs/adr/0002-gfs-chunk-primaries.md`.
//!
//! # Layout
//! - [`error`]: [`GfsError`] and its one gRPC status mapping.
//! - [`names`]: chunk names, lease resource names, limits.
//! - [`history`]: the JSONL events of a run (CLOCK_MONOTONIC) the checker reads.
//! - [`store`]: chunk replicas on local disk (data + version beside it, fsync).
//! - [`chunkserver`]: the chunkserver role: session, primary role, mutations.
//! - [`master`]: the master role: election, reports, assignment, recall,
//!   re-replication.
//! - [`client`]: [`GfsClient`]: locate (cached until the primary's deadline),
//!   write, record append, read, with retries.
//! - [`rpc`]: channels to other processes (one pool per role).
//! - [`checker`]: the rules a run's history and final replicas must satisfy.
//! - [`workload`]: writers and appenders that record what was acknowledged.

pub mod checker;
pub mod chunkserver;
pub mod client;
pub mod error;
pub mod history;
pub mod master;
pub mod names;
pub mod rpc;
pub mod store;
pub mod workload;

pub use client::GfsClient;
pub use error::GfsError;
