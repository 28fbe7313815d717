//! A fenced register: the protected resource of the lock-set workload. It
//! remembers the highest fencing token it has seen (on reads and writes)
//! and refuses lower ones, as a storage server guarding its data with
//! Leasehold's tokens should.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc::UnboundedSender;

use crate::history::{mono_ns, Record};

/// Value and highest token seen.
#[derive(Debug, Default)]
struct Cell {
    value: u64,
    highest_token: u64,
}

/// One register per resource.
#[derive(Debug, Default)]
pub struct Register {
    /// Guarded state, by resource name.
    cells: Mutex<HashMap<String, Cell>>,
}

impl Register {
    /// Reads with `token`; None if a higher token was already seen.
    pub fn read(&self, resource: &str, token: u64) -> Option<u64> {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let c = cells.entry(resource.to_string()).or_default();
        if token < c.highest_token {
            return None;
        }
        c.highest_token = token;
        Some(c.value)
    }

    /// Writes `value` (computed from `read_value`) with `token`; returns
    /// whether it was accepted, and records accepted writes.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        resource: &str,
        client: u32,
        token: u64,
        read_value: u64,
        value: u64,
        sink: &UnboundedSender<Record>,
    ) -> bool {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let c = cells.entry(resource.to_string()).or_default();
        if token < c.highest_token {
            return false;
        }
        c.highest_token = token;
        let before = c.value;
        c.value = value;
        let _ = sink.send(Record::RegisterWrite {
            t_ns: mono_ns(),
            resource: resource.to_string(),
            client,
            token,
            read_value,
            before,
            value,
        });
        true
    }
}
