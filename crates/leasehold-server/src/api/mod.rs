//! The client API (`leasehold.v1.Leasehold`).
//!
//! # Layout
//! - [`service`]: the handlers' shared state, proposals, and the tonic
//!   entry points; leader-only calls go through [`forward`].
//! - [`auth`]: who a request comes from ([`auth::identity`]) and whether
//!   its principal may make the call; checked at the entry node before
//!   routing, and again by the leader on forwarded calls.
//! - [`session`]: `OpenSession`, `CloseSession`, the owner-secret check.
//! - [`acquire`]: `Acquire` with its FIFO wait, `Release`.
//! - [`keepalive`]: the `KeepAlive` stream.
//! - [`watch`]: the `Watch` stream.
//! - [`read`]: `Get`, `List`.
//! - [`sessions`]: `ListSessions`, paged, without secrets.
//! - [`admin`]: `Recall`, `SetConfig`, `Status`.
//! - [`membership`]: `ChangeMembership`: probe, learners caught up, joint
//!   consensus; what is refused.
//! - [`request`]: the checks of decoded requests, as pure functions (the
//!   handlers and the fuzz target run the same ones).
//! - [`convert`]: domain types to wire types.
//! - [`forward`]: serve here, forward to the leader (hop limit), or refuse
//!   with the leader's address; the one leader lookup.
//! - [`error`]: [`ApiError`] and its single mapping to gRPC statuses.
//! - [`history`]: recent events for resumable watches.
//! - [`withdraw`]: withdrawing the waits of acquire calls that ended
//!   unanswered, here or through the leader, until they are gone.

pub mod acquire;
pub mod admin;
pub mod auth;
pub mod convert;
pub mod error;
pub mod forward;
pub mod history;
pub mod keepalive;
pub mod membership;
pub mod read;
pub mod request;
pub mod service;
pub mod session;
pub mod sessions;
pub mod watch;
pub mod withdraw;

pub use acquire::WAIT_MS_MAX;
pub use error::ApiError;
pub use keepalive::KEEPALIVE_SESSIONS_MAX;
pub use membership::{CATCH_UP_TIMEOUT_MS_DEFAULT, CATCH_UP_TIMEOUT_MS_MAX, VOTERS_MAX};
pub use read::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX};
pub use service::{LeaseApi, LeaseService};
pub use sessions::{SESSIONS_PAGE_DEFAULT, SESSIONS_PAGE_MAX};
