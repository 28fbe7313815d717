//! Who may call what: principals with a role and resource prefixes, known
//! by a bearer token (stored as its SHA-256 digest), by the subject common
//! name of a client certificate, or both; and the one rule that decides
//! whether a principal may make a call ([`Principal::check`]).
//!
//! The API layer (`api/auth.rs`) finds the principal of a request and asks
//! [`Principal::check`]; this module knows nothing of gRPC. See ADR 0005.

use std::fmt;
use std::str::FromStr;

use leasehold_raft::identity::{node_id_of_common_name, NODE_CN_PREFIX};
use leasehold_raft::NodeId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest bearer token accepted, in bytes: longer ones are refused before
/// hashing (a token is a random secret, `leasehold auth token` makes 64
/// characters).
pub const TOKEN_BYTES_MAX: usize = 256;
/// Most principals one node is configured with.
pub const PRINCIPALS_MAX: usize = 1_000;
/// Most resource prefixes of one principal.
pub const PREFIXES_PER_PRINCIPAL_MAX: usize = 64;
/// Longest principal name, in bytes.
pub const PRINCIPAL_NAME_BYTES_MAX: usize = 64;
/// Length of a `token_sha256` in hex digits (32 bytes).
pub const TOKEN_SHA256_HEX_LEN: usize = 64;
/// Longest `cert_cn` (client certificate subject common name), in bytes.
pub const CERT_CN_BYTES_MAX: usize = 256;

/// What a principal may do. Ordered: `Admin > Client > Reader`; a role may
/// do everything a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: `Get`, `List`, `Watch`, `ListSessions`, `Status`.
    Reader,
    /// Reads, sessions (`OpenSession`, `CloseSession`, `KeepAlive`) and
    /// `Acquire`/`Release` under its prefixes.
    Client,
    /// Everything, on every resource: also `Recall`, `SetConfig`,
    /// `ChangeMembership`.
    Admin,
}

impl Role {
    /// The role's name in settings and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "client" => Ok(Role::Client),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected admin, client or reader"
            )),
        }
    }
}

/// The SHA-256 digest of a bearer token: what the settings store instead
/// of the token. Compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        if hex.len() != TOKEN_SHA256_HEX_LEN {
            return Err(format!(
                "token_sha256 must be {TOKEN_SHA256_HEX_LEN} hex digits (SHA-256), got {} characters",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(pair[0]), pair.get(1).copied().and_then(digit)) {
                (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
                _ => return Err("token_sha256 must be hex digits 0-9, a-f".into()),
            }
        }
        Ok(TokenDigest(out))
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret (a digest), but long: the first bytes identify it.
        write!(f, "TokenDigest({}…)", &self.to_hex()[..8])
    }
}

/// A caller known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name, shown in refusals and logs.
    pub name: String,
    /// The digest of its bearer token (the token itself is never stored);
    /// `None`: it has no token.
    pub token_sha256: Option<TokenDigest>,
    /// The subject common name (CN) of its client certificate (signed by
    /// the cluster CA); `None`: it does not authenticate by certificate.
    /// A principal has a token, a CN, or both.
    pub cert_cn: Option<String>,
    /// What it may do.
    pub role: Role,
    /// Resource prefixes it may use (`""`: all); empty for an admin, who
    /// may use every resource.
    pub prefixes: Vec<String>,
}

/// What a call needs (one per RPC; see the table in README "Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// The role alone (sessions, `ListSessions`, `Status`, admin calls).
    Role(Role),
    /// The role, and `resource` under one of the principal's prefixes.
    Resource(Role, &'a str),
    /// The role, and every resource under `prefix` inside one of the
    /// principal's prefixes (`List`, `Watch`).
    Prefix(Role, &'a str),
}

/// Why a principal may not make a call (a `PERMISSION_DENIED` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} may not call {call}: {needs}")]
pub struct Denied {
    /// The principal refused.
    pub principal: String,
    /// The call, e.g. `Acquire`.
    pub call: &'static str,
    /// What it would need, e.g. `needs role admin (has client)`.
    pub needs: String,
}

impl Principal {
    /// A principal that authenticates with the bearer `token` (kept as its
    /// digest only), of `role`, on resources under `prefixes`.
    pub fn with_token(name: &str, token: &str, role: Role, prefixes: &[&str]) -> Self {
        Principal {
            name: name.into(),
            token_sha256: Some(TokenDigest::of(token)),
            cert_cn: None,
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// A principal that authenticates with a client certificate whose
    /// subject CN is `cn`, of `role`, on resources under `prefixes`.
    pub fn with_cert_cn(name: &str, cn: &str, role: Role, prefixes: &[&str]) -> Self {
        Principal {
            name: name.into(),
            token_sha256: None,
            cert_cn: Some(cn.into()),
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Whether this principal may make `call`, which needs `need`.
    pub fn check(&self, call: &'static str, need: Need<'_>) -> Result<(), Denied> {
        let role = match need {
            Need::Role(r) | Need::Resource(r, _) | Need::Prefix(r, _) => r,
        };
        let denied = |needs: String| Denied {
            principal: self.name.clone(),
            call,
            needs,
        };
        if self.role < role {
            return Err(denied(format!(
                "needs role {role} or higher (has {})",
                self.role
            )));
        }
        if self.role == Role::Admin {
            return Ok(());
        }
        let (what, name) = match need {
            Need::Role(_) => return Ok(()),
            Need::Resource(_, r) => ("resource", r),
            Need::Prefix(_, p) => ("prefix", p),
        };
        if self.prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            return Ok(());
        }
        Err(denied(format!(
            "{what} {name:?} is outside its prefixes {:?}",
            self.prefixes
        )))
    }
}

/// Who may use the client API of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// The known callers. When there are any, every call needs a bearer
    /// token or a client certificate of one of them.
    pub principals: Vec<Principal>,
    /// With no principals: the operator's explicit acknowledgement that the
    /// API is open to anyone who reaches it (without it, a node with no
    /// principals refuses to start). Ignored when there are principals.
    pub open: bool,
}

/// The result of presenting credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticated<'a> {
    /// Auth is off (open API): every call is allowed.
    Open,
    /// The credentials are this principal's, presented this way.
    As(&'a Principal, Via),
}

/// How a principal was authenticated: what a node forwarding the call to
/// the leader passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its bearer token (forwarded as it came).
    Token,
    /// Its client certificate's subject CN (the leader cannot see the
    /// certificate: the forwarding node names the principal).
    Certificate,
    /// Named by node `0`, which forwarded the call over a connection made
    /// with its node certificate, after authenticating the caller.
    Forwarded(NodeId),
}

/// Why presented credentials identify no principal (`UNAUTHENTICATED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No `authorization: Bearer …` metadata.
    #[error("missing bearer token (send `authorization: Bearer <token>` metadata)")]
    Missing,
    /// The `authorization` metadata is not `Bearer <token>`.
    #[error("malformed authorization metadata: expected `Bearer <token>`")]
    Malformed,
    /// Longer than [`TOKEN_BYTES_MAX`].
    #[error("bearer token longer than {TOKEN_BYTES_MAX} bytes")]
    TooLong,
    /// No principal has this token.
    #[error("unknown token")]
    Unknown,
    /// No principal has this client certificate subject CN (escaped).
    #[error("no principal has the client certificate name (CN) {0:?}")]
    UnknownCertificate(String),
    /// The client certificate's subject CN cannot be read.
    #[error("client certificate: {0}")]
    UnreadableCertificate(String),
    /// The forwarded-principal metadata came over a connection without a
    /// node certificate of the cluster: only nodes forward identities.
    #[error("the forwarded-principal metadata (x-leasehold-principal-bin) is accepted only from a node of the cluster (a connection with a node certificate)")]
    ForwardedNotFromNode,
    /// The forwarded-principal metadata is not a UTF-8 principal name.
    #[error("malformed forwarded-principal metadata (x-leasehold-principal-bin)")]
    MalformedForwarded,
    /// Node `node` forwarded a principal this node does not know.
    #[error("node {node} forwarded principal {name:?}, which this node does not know")]
    UnknownForwarded {
        /// The forwarding node.
        node: NodeId,
        /// The name it sent (escaped when shown).
        name: String,
    },
}

impl AuthConfig {
    /// An open API (no principals, acknowledged): tests and local tools.
    pub fn open() -> Self {
        AuthConfig {
            principals: Vec::new(),
            open: true,
        }
    }

    /// Whether every call needs credentials (a token or a certificate).
    pub fn enabled(&self) -> bool {
        !self.principals.is_empty()
    }

    /// The principal whose token is `token` (`None`: none presented).
    /// Compares against every principal's digest in constant time, and
    /// visits them all whatever matches.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Authenticated<'_>, Unauthenticated> {
        if !self.enabled() {
            return Ok(Authenticated::Open);
        }
        let token = token.ok_or(Unauthenticated::Missing)?;
        if token.len() > TOKEN_BYTES_MAX {
            return Err(Unauthenticated::TooLong);
        }
        let digest = TokenDigest::of(token);
        let mut found = None;
        for p in &self.principals {
            if p.token_sha256.as_ref().is_some_and(|d| d.matches(&digest)) {
                found = Some(p);
            }
        }
        found
            .map(|p| Authenticated::As(p, Via::Token))
            .ok_or(Unauthenticated::Unknown)
    }

    /// The principal whose `cert_cn` is `cn`, the subject CN of a client
    /// certificate the TLS handshake verified against the cluster CA.
    pub fn authenticate_certificate(&self, cn: &str) -> Result<Authenticated<'_>, Unauthenticated> {
        if !self.enabled() {
            return Ok(Authenticated::Open);
        }
        self.principals
            .iter()
            .find(|p| p.cert_cn.as_deref() == Some(cn))
            .map(|p| Authenticated::As(p, Via::Certificate))
            .ok_or_else(|| Unauthenticated::UnknownCertificate(cn.to_string()))
    }

    /// The principal named `name` by node `node`, which authenticated the
    /// caller and forwarded the call (the caller checks that the
    /// connection is node `node`'s). Its role and prefixes are this
    /// node's settings, not the forwarder's.
    pub fn authenticate_forwarded(
        &self,
        name: &str,
        node: NodeId,
    ) -> Result<Authenticated<'_>, Unauthenticated> {
        if !self.enabled() {
            return Ok(Authenticated::Open);
        }
        self.principals
            .iter()
            .find(|p| p.name == name)
            .map(|p| Authenticated::As(p, Via::Forwarded(node)))
            .ok_or_else(|| Unauthenticated::UnknownForwarded {
                node,
                name: name.to_string(),
            })
    }

    /// Every problem of the settings, one message each (`field`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.principals.is_empty() && !self.open {
            out.push((
                "auth",
                "no principals are configured: add [[auth.principals]] or set auth.open = true (--auth-open) to run with an open API".to_string(),
            ));
        }
        if self.principals.len() > PRINCIPALS_MAX {
            out.push((
                "auth.principals",
                format!(
                    "{} principals; at most {PRINCIPALS_MAX}",
                    self.principals.len()
                ),
            ));
        }
        for (i, p) in self.principals.iter().enumerate() {
            if let Err(m) = p.validate() {
                out.push(("auth.principals", format!("{:?}: {m}", p.name)));
            }
            let later = &self.principals[i + 1..];
            if later.iter().any(|q| q.name == p.name) {
                out.push((
                    "auth.principals",
                    format!("the name {:?} is used twice", p.name),
                ));
            }
            if let Some(q) = later
                .iter()
                .find(|q| p.token_sha256.is_some() && q.token_sha256 == p.token_sha256)
            {
                out.push((
                    "auth.principals",
                    format!("{:?} and {:?} have the same token_sha256", p.name, q.name),
                ));
            }
            if let Some(q) = later
                .iter()
                .find(|q| p.cert_cn.is_some() && q.cert_cn == p.cert_cn)
            {
                out.push((
                    "auth.principals",
                    format!("{:?} and {:?} have the same cert_cn", p.name, q.name),
                ));
            }
        }
        out
    }
}

impl Principal {
    /// Checks one principal's fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > PRINCIPAL_NAME_BYTES_MAX {
            return Err(format!(
                "name must be 1 to {PRINCIPAL_NAME_BYTES_MAX} bytes"
            ));
        }
        if self.name.chars().any(|c| c.is_control()) {
            return Err("name must not contain control characters".into());
        }
        if self.token_sha256.is_none() && self.cert_cn.is_none() {
            return Err(
                "needs `token_sha256` or `cert_cn` (or both): how else would it authenticate?"
                    .into(),
            );
        }
        if let Some(cn) = &self.cert_cn {
            if cn.is_empty() || cn.len() > CERT_CN_BYTES_MAX {
                return Err(format!("cert_cn must be 1 to {CERT_CN_BYTES_MAX} bytes"));
            }
            if cn.chars().any(|c| c.is_control()) {
                return Err("cert_cn must not contain control characters".into());
            }
            if node_id_of_common_name(cn).is_some() {
                return Err(format!(
                    "cert_cn {cn:?} is a node certificate's name (`{NODE_CN_PREFIX}<id>`); a client certificate must have another"
                ));
            }
        }
        match self.role {
            Role::Admin if !self.prefixes.is_empty() => Err(
                "an admin may use every resource: remove `prefixes` (or give another role)".into(),
            ),
            Role::Admin => Ok(()),
            _ if self.prefixes.is_empty() => Err(format!(
                "role {} needs `prefixes` (the resources it may use; [\"\"] for all)",
                self.role
            )),
            _ if self.prefixes.len() > PREFIXES_PER_PRINCIPAL_MAX => Err(format!(
                "{} prefixes; at most {PREFIXES_PER_PRINCIPAL_MAX}",
                self.prefixes.len()
            )),
            _ => Ok(()),
        }
    }
}

/// A new random bearer token: 32 random bytes as 64 hex digits.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, token: &str, role: Role, prefixes: &[&str]) -> Principal {
        Principal::with_token(name, token, role, prefixes)
    }

    #[test]
    fn digests_round_trip_through_hex_and_reject_bad_input() {
        let d = TokenDigest::of("secret");
        assert_eq!(
            d.to_hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(TokenDigest::from_hex(&d.to_hex().to_uppercase()), Ok(d));
        let e = TokenDigest::from_hex("abcd").expect_err("short");
        assert!(e.contains("64 hex digits"), "{e}");
        let e = TokenDigest::from_hex(&"g".repeat(64)).expect_err("not hex");
        assert!(e.contains("hex digits"), "{e}");
    }

    #[test]
    fn roles_are_ordered_and_prefixes_limit_non_admins() {
        let admin = principal("ops", "a", Role::Admin, &[]);
        let cs = principal("cs", "c", Role::Client, &["chunk/"]);
        let reader = principal("dash", "r", Role::Reader, &[""]);
        assert!(admin.check("SetConfig", Need::Role(Role::Admin)).is_ok());
        assert!(admin
            .check("Acquire", Need::Resource(Role::Client, "x"))
            .is_ok());
        assert!(cs
            .check("Acquire", Need::Resource(Role::Client, "chunk/1"))
            .is_ok());
        let e = cs
            .check("Acquire", Need::Resource(Role::Client, "jobs/1"))
            .expect_err("outside");
        assert_eq!(
            e.to_string(),
            "principal \"cs\" may not call Acquire: resource \"jobs/1\" is outside its prefixes [\"chunk/\"]"
        );
        let e = cs
            .check("Recall", Need::Role(Role::Admin))
            .expect_err("admin");
        assert_eq!(
            e.to_string(),
            "principal \"cs\" may not call Recall: needs role admin or higher (has client)"
        );
        assert!(cs
            .check("Watch", Need::Prefix(Role::Reader, "chunk/a"))
            .is_ok());
        assert!(cs.check("Watch", Need::Prefix(Role::Reader, "")).is_err());
        assert!(reader.check("List", Need::Prefix(Role::Reader, "")).is_ok());
        assert!(reader
            .check("Acquire", Need::Resource(Role::Client, "x"))
            .is_err());
        assert!(reader
            .check("OpenSession", Need::Role(Role::Client))
            .is_err());
    }

    #[test]
    fn authentication_finds_the_principal_or_says_why_not() {
        let auth = AuthConfig {
            principals: vec![
                principal("ops", "tok-a", Role::Admin, &[]),
                principal("dash", "tok-r", Role::Reader, &[""]),
            ],
            open: false,
        };
        assert!(auth.problems().is_empty(), "{:?}", auth.problems());
        match auth.authenticate(Some("tok-r")) {
            Ok(Authenticated::As(p, Via::Token)) => assert_eq!(p.name, "dash"),
            other => panic!("{other:?}"),
        }
        assert_eq!(auth.authenticate(None), Err(Unauthenticated::Missing));
        assert_eq!(
            auth.authenticate(Some("nope")),
            Err(Unauthenticated::Unknown)
        );
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        assert_eq!(
            auth.authenticate(Some(&long)),
            Err(Unauthenticated::TooLong)
        );
        assert_eq!(
            AuthConfig::open().authenticate(None),
            Ok(Authenticated::Open)
        );
    }

    #[test]
    fn problems_name_what_is_wrong() {
        let none = AuthConfig::default();
        assert_eq!(none.problems()[0].0, "auth");
        let auth = AuthConfig {
            principals: vec![
                principal("ops", "same", Role::Admin, &["x/"]),
                principal("cs", "same", Role::Client, &[]),
                principal("cs", "other", Role::Reader, &[""]),
            ],
            open: false,
        };
        let got: Vec<String> = auth.problems().into_iter().map(|p| p.1).collect();
        assert_eq!(
            got,
            [
                "\"ops\": an admin may use every resource: remove `prefixes` (or give another role)",
                "\"ops\" and \"cs\" have the same token_sha256",
                "\"cs\": role client needs `prefixes` (the resources it may use; [\"\"] for all)",
                "the name \"cs\" is used twice",
            ]
        );
    }

    fn by_cert(name: &str, cn: &str, role: Role, prefixes: &[&str]) -> Principal {
        Principal::with_cert_cn(name, cn, role, prefixes)
    }

    #[test]
    fn a_certificate_name_identifies_its_principal() {
        let mut both = by_cert("ops", "ops.example", Role::Admin, &[]);
        both.token_sha256 = Some(TokenDigest::of("tok-a"));
        let auth = AuthConfig {
            principals: vec![
                both,
                by_cert("cs", "chunkserver 1", Role::Client, &["chunk/"]),
            ],
            open: false,
        };
        assert!(auth.problems().is_empty(), "{:?}", auth.problems());
        match auth.authenticate_certificate("chunkserver 1") {
            Ok(Authenticated::As(p, Via::Certificate)) => assert_eq!(p.name, "cs"),
            other => panic!("{other:?}"),
        }
        match auth.authenticate(Some("tok-a")) {
            Ok(Authenticated::As(p, Via::Token)) => assert_eq!(p.name, "ops"),
            other => panic!("{other:?}"),
        }
        // A principal without a token is not found by any token.
        assert_eq!(auth.authenticate(Some("")), Err(Unauthenticated::Unknown));
        let e = auth
            .authenticate_certificate("evil\"\n")
            .expect_err("unknown CN");
        assert_eq!(
            e.to_string(),
            "no principal has the client certificate name (CN) \"evil\\\"\\n\""
        );
        match auth.authenticate_forwarded("cs", 2) {
            Ok(Authenticated::As(p, Via::Forwarded(2))) => assert_eq!(p.name, "cs"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            auth.authenticate_forwarded("nobody", 2)
                .expect_err("unknown name")
                .to_string(),
            "node 2 forwarded principal \"nobody\", which this node does not know"
        );
        assert_eq!(
            AuthConfig::open().authenticate_certificate("x"),
            Ok(Authenticated::Open)
        );
    }

    #[test]
    fn a_principal_needs_a_token_or_a_certificate_name_of_its_own() {
        let mut neither = principal("ghost", "", Role::Admin, &[]);
        neither.token_sha256 = None;
        let auth = AuthConfig {
            principals: vec![
                neither,
                by_cert("a", "same", Role::Admin, &[]),
                by_cert("b", "same", Role::Admin, &[]),
                by_cert("node", "leasehold node 1", Role::Admin, &[]),
                by_cert("empty", "", Role::Admin, &[]),
                by_cert("nul", "a\u{0}b", Role::Admin, &[]),
                by_cert("long", &"x".repeat(CERT_CN_BYTES_MAX + 1), Role::Admin, &[]),
            ],
            open: false,
        };
        let got: Vec<String> = auth.problems().into_iter().map(|p| p.1).collect();
        assert_eq!(
            got,
            [
                "\"ghost\": needs `token_sha256` or `cert_cn` (or both): how else would it authenticate?".to_string(),
                "\"a\" and \"b\" have the same cert_cn".to_string(),
                "\"node\": cert_cn \"leasehold node 1\" is a node certificate's name (`leasehold node <id>`); a client certificate must have another".to_string(),
                format!("\"empty\": cert_cn must be 1 to {CERT_CN_BYTES_MAX} bytes"),
                "\"nul\": cert_cn must not contain control characters".to_string(),
                format!("\"long\": cert_cn must be 1 to {CERT_CN_BYTES_MAX} bytes"),
            ]
        );
    }

    #[test]
    fn new_tokens_are_random_hex() {
        let a = new_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_token());
    }
}
