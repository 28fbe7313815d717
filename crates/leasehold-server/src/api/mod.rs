//! The client API (`leasehold.v1.Leasehold`).
//!
//! # Layout
//! - [`service`]: the handlers; leader-only calls go through [`forward`].
//! - [`forward`]: serve here, forward to the leader (hop limit), or refuse
//!   with the leader's address.
//! - [`error`]: [`ApiError`] and its single mapping to gRPC statuses.
//! - [`history`]: recent events for resumable watches.

pub mod error;
pub mod forward;
pub mod history;
pub mod service;

pub use error::ApiError;
pub use service::{LeaseApi, LeaseService};
