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

/// Checks that a text field a client names things with (resource names,
/// prefixes, client names, recall reasons, page tokens) holds no control
/// character (C0, DEL or C1: NUL, ESC, CSI, newlines, …): such text would
/// smuggle escape sequences onto every terminal that shows it.
///
/// Checked by the API before proposing, **not** by apply: entries that an
/// older version accepted replay unchanged.
pub fn validate_text(field: &str, text: &str) -> Result<(), Rejection> {
    match text.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(Rejection::invalid(
            field,
            format!(
                "control character U+{:04X} at byte {at}; only printable characters are allowed",
                u32::from(c)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_and_named() {
        for ok in ["a/b", "lock-1", "ünïcode ✓", "tab-free name", ""] {
            assert_eq!(validate_text("resource", ok), Ok(()), "{ok:?}");
        }
        for (bad, code, at) in [
            ("a\0b", 0x00, 1),
            ("\x1b[31mred", 0x1b, 0),
            ("line\nbreak", 0x0a, 4),
            ("del\x7f", 0x7f, 3),
            ("c1\u{9b}2J", 0x9b, 2),
        ] {
            match validate_text("resource", bad) {
                Err(Rejection::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "resource");
                    assert!(
                        reason.contains(&format!("U+{code:04X} at byte {at}")),
                        "{reason}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
