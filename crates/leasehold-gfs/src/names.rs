//! Chunk names, the Leasehold resources they map to, and the limits.

use crate::error::GfsError;

/// Prefix of the primary leases: chunk `C`'s primary holds `chunk/C`.
pub const CHUNK_LEASE_PREFIX: &str = "chunk/";
/// The lease the masters elect one of themselves through.
pub const MASTER_LEASE: &str = "gfs/master";
/// Longest chunk name, in bytes.
pub const CHUNK_NAME_BYTES_MAX: usize = 64;
/// Default replication factor.
pub const REPLICATION_DEFAULT: u32 = 3;
/// Largest replication factor a create may ask for.
pub const REPLICATION_MAX: u32 = 16;
/// Default chunk size in bytes (small: a demo fills chunks quickly).
pub const CHUNK_BYTES_DEFAULT: u64 = 1 << 20;
/// Largest chunk size a chunkserver accepts as configuration.
pub const CHUNK_BYTES_MAX: u64 = 64 << 20;

/// The lease resource of chunk `chunk`'s primary.
pub fn chunk_lease(chunk: &str) -> String {
    format!("{CHUNK_LEASE_PREFIX}{chunk}")
}

/// Checks a chunk name: 1 to 64 bytes of `[A-Za-z0-9._-]` (it names files).
pub fn check_chunk(chunk: &str) -> Result<(), GfsError> {
    let ok = !chunk.is_empty()
        && chunk.len() <= CHUNK_NAME_BYTES_MAX
        && !chunk.starts_with('.')
        && chunk
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GfsError::InvalidArgument(format!(
            "chunk: want 1 to {CHUNK_NAME_BYTES_MAX} bytes of [A-Za-z0-9._-], not starting with '.', got {chunk:?}"
        )))
    }
}

/// The largest record or write: a quarter of the chunk (as in GFS, so
/// padding wastes at most a quarter of a chunk).
pub fn record_bytes_max(chunk_bytes: u64) -> u64 {
    chunk_bytes / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_are_checked() {
        assert!(check_chunk("log-1.0_a").is_ok());
        assert!(check_chunk("").is_err());
        assert!(check_chunk("../x").is_err());
        assert!(check_chunk(".hidden").is_err());
        assert!(check_chunk(&"a".repeat(65)).is_err());
        assert_eq!(chunk_lease("c1"), "chunk/c1");
    }
}
