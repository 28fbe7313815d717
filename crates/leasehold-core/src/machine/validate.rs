//! Bounds on the fields of commands, checked by apply (and by the API
//! before proposing).

use crate::limits;
use crate::rejection::Rejection;

/// Checks that a field of `len` bytes is within `max` bytes.
fn check_bytes(field: &str, len: usize, max: usize) -> Result<(), Rejection> {
    if len > max {
        return Err(Rejection::invalid(
            field,
            format!("{len} bytes exceeds the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Checks a resource name: non-empty, bounded.
pub fn validate_resource(name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(Rejection::invalid("resource", "must not be empty"));
    }
    check_bytes("resource", name.len(), limits::RESOURCE_NAME_BYTES_MAX)
}

/// Checks holder metadata length.
pub fn validate_metadata(metadata: &[u8]) -> Result<(), Rejection> {
    check_bytes("metadata", metadata.len(), limits::METADATA_BYTES_MAX)
}

/// Checks a client name length.
pub fn validate_client_name(name: &str) -> Result<(), Rejection> {
    check_bytes("client_name", name.len(), limits::CLIENT_NAME_BYTES_MAX)
}

/// Checks a recall reason length.
pub fn validate_reason(reason: &str) -> Result<(), Rejection> {
    check_bytes("reason", reason.len(), limits::REASON_BYTES_MAX)
}
