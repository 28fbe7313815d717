//! [`SessionHandle`]: a session's id with the secret that proves ownership,
//! as one printable string (`<id>.<32 hex digits>`), so a CLI or another
//! process can release or close a session it did not open itself.

use std::fmt;
use std::str::FromStr;

use leasehold_core::{SessionId, SessionSecret};

use crate::error::ClientError;

/// A session's id and secret. Whoever has it can renew, release and close
/// the session: treat its string form like a password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionHandle {
    /// The session id.
    pub id: SessionId,
    /// Its secret.
    pub secret: SessionSecret,
}

impl SessionHandle {
    /// A handle from an id and the secret the service returned.
    pub fn new(id: SessionId, secret: SessionSecret) -> Self {
        SessionHandle { id, secret }
    }

    /// A handle from wire bytes; `Protocol` error unless 16 bytes.
    pub(crate) fn from_wire(id: SessionId, secret: &[u8]) -> Result<Self, ClientError> {
        let secret = SessionSecret::from_slice(secret).ok_or_else(|| {
            ClientError::Protocol(format!(
                "session {id}: the service answered a {}-byte secret (expected 16)",
                secret.len()
            ))
        })?;
        Ok(SessionHandle { id, secret })
    }

    /// The secret as wire bytes.
    pub(crate) fn secret_bytes(&self) -> Vec<u8> {
        self.secret.as_bytes().to_vec()
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.id)?;
        for b in self.secret.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({}.…)", self.id)
    }
}

impl FromStr for SessionHandle {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ClientError::InvalidArgument(format!(
                "session handle {:?} is not <id>.<32 hex digits> (as printed by acquire)",
                s.chars().take(64).collect::<String>()
            ))
        };
        let (id, hex) = s.trim().split_once('.').ok_or_else(bad)?;
        let id: SessionId = id.parse().map_err(|_| bad())?;
        if id == 0 || hex.len() != 32 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut secret = [0u8; 16];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(SessionHandle {
            id,
            secret: SessionSecret(secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_print_and_parse_back() {
        let h = SessionHandle::new(12, SessionSecret([0xab; 16]));
        let s = h.to_string();
        assert_eq!(s, format!("12.{}", "ab".repeat(16)));
        assert_eq!(s.parse::<SessionHandle>().expect("parses"), h);
        assert!(!format!("{h:?}").contains("ab"), "Debug hides the secret");
        for bad in [
            "12",
            "x.00",
            "0.00000000000000000000000000000000",
            "12.zz",
            "12.0011",
        ] {
            assert!(bad.parse::<SessionHandle>().is_err(), "{bad}");
        }
    }
}
