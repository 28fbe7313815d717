//! The Jepsen-style harness's client side: workload, checker, report.
//!
//! # Layout
//! - [`history`]: the JSONL record format (CLOCK_MONOTONIC timestamps).
//! - [`workload`]: contending clients and the fenced-register workload.
//! - [`register`]: the fenced register (the protected resource).
//! - [`checker`]: the rules a history must satisfy.
//! - [`report`]: the HTML/SVG report.

pub mod checker;
pub mod history;
pub mod register;
pub mod report;
pub mod workload;
