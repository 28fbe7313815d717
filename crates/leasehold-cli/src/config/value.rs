//! How each setting's value reads from a flag or environment variable's
//! text and from a TOML value: the [`Value`] trait, its implementations
//! (numbers, booleans, addresses, paths, durations, peers, principals) and
//! the parsers clap uses for the same types.

use std::net::SocketAddr;
use std::path::PathBuf;

use leasehold_server::{PeerSpec, Principal, Role, TokenDigest};
use toml::de::{DeTable, DeValue};

use crate::duration::parse_duration;

/// A duration setting kept in whole milliseconds. Flags and environment
/// variables take a number of milliseconds (`600`) or a duration (`600ms`,
/// `1.5s`); the file takes a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u64);

/// Parses a [`Millis`] flag or variable: `600` (milliseconds) or `600ms`, `1.5s`.
pub fn parse_millis(text: &str) -> Result<Millis, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Millis)
            .map_err(|_| format!("invalid number of milliseconds {text:?}"));
    }
    let d = parse_duration(t)?;
    u64::try_from(d.as_millis())
        .map(Millis)
        .map_err(|_| format!("duration {text:?} is too long"))
}

/// Parses a `true`/`false` flag or variable (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("invalid boolean {text:?}: expected true or false")),
    }
}

/// A setting's value type: how it reads from a flag or variable's text and
/// from a TOML value.
pub(super) trait Value: Sized {
    /// From the text of an environment variable.
    fn from_text(text: &str) -> Result<Self, String>;
    /// From a value in the file.
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String>;
}

fn toml_str<'a>(value: &'a DeValue<'_>, what: &str) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected {what}, found {}", value.type_str()))
}

fn toml_int(value: &DeValue<'_>) -> Result<i128, String> {
    let i = value
        .as_integer()
        .ok_or_else(|| format!("expected an integer, found {}", value.type_str()))?;
    let digits = i.as_str().replace('_', "");
    i128::from_str_radix(&digits, i.radix()).map_err(|_| format!("invalid integer {digits:?}"))
}

impl Value for u64 {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("invalid non-negative integer {text:?}"))
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        let i = toml_int(value)?;
        u64::try_from(i).map_err(|_| format!("{i} is not a non-negative 64-bit integer"))
    }
}

impl Value for i64 {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("invalid integer {text:?}"))
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        let i = toml_int(value)?;
        i64::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
}

impl Value for bool {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_bool(text)
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        value
            .as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))
    }
}

impl Value for SocketAddr {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("invalid address {text:?}: expected IP:PORT"))
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        Self::from_text(toml_str(value, "an address string \"IP:PORT\"")?)
    }
}

impl Value for PathBuf {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        Ok(PathBuf::from(text))
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        Self::from_text(toml_str(value, "a path string")?)
    }
}

impl Value for Millis {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_millis(text)
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        let text = toml_str(value, "a duration string such as \"600ms\" or \"1.5s\"")?;
        let d = parse_duration(text)?;
        u64::try_from(d.as_millis())
            .map(Millis)
            .map_err(|_| format!("duration {text:?} is too long"))
    }
}

/// Fields of a peer written as a table: `{ id = 1, raft = "…", api = "…" }`.
const PEER_FIELDS: [&str; 3] = ["id", "raft", "api"];

impl Value for Vec<PeerSpec> {
    /// `ID=RAFT,API` entries separated by spaces or `;`.
    fn from_text(text: &str) -> Result<Self, String> {
        text.split(|c: char| c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        let array = value.as_array().ok_or_else(|| {
            format!(
                "expected a list of peers, found {}: peers = [\"1=RAFT,API\", …] or [[peers]] tables",
                value.type_str()
            )
        })?;
        let mut peers = Vec::new();
        for (i, item) in array.iter().enumerate() {
            let at = |m: String| format!("entry {}: {m}", i + 1);
            match item.get_ref() {
                DeValue::String(s) => peers.push(s.parse::<PeerSpec>().map_err(at)?),
                DeValue::Table(t) => peers.push(peer_from_table(t).map_err(at)?),
                other => {
                    return Err(at(format!(
                        "expected \"ID=RAFT,API\" or a table {{ id, raft, api }}, found {}",
                        other.type_str()
                    )))
                }
            }
        }
        Ok(peers)
    }
}

fn peer_from_table(table: &DeTable<'_>) -> Result<PeerSpec, String> {
    if let Some((k, _)) = table
        .iter()
        .find(|(k, _)| !PEER_FIELDS.contains(&k.get_ref().as_ref()))
    {
        return Err(format!(
            "unknown key `{}` (a peer has id, raft, api)",
            k.get_ref()
        ));
    }
    let field = |name: &str| {
        table
            .get(name)
            .map(|v| v.get_ref())
            .ok_or_else(|| format!("missing `{name}`"))
    };
    let id = u64::from_toml(field("id")?)?;
    let raft = toml_str(field("raft")?, "an address string for `raft`")?;
    let api = toml_str(field("api")?, "an address string for `api`")?;
    format!("{id}={raft},{api}").parse()
}

/// Fields of a principal table: `{ name, token_sha256, cert_cn, role,
/// prefixes }`.
const PRINCIPAL_FIELDS: [&str; 5] = ["name", "token_sha256", "cert_cn", "role", "prefixes"];

/// What names the client certificate in the credentials part of a flag.
const CERT_CN_MARK: &str = "cn=";

/// Parses a principal as a flag or variable writes it:
/// `NAME:ROLE:CREDENTIALS[:PREFIX,PREFIX…]`, where CREDENTIALS is the
/// token's SHA256 (64 hex digits), `cn=CN` (the subject common name of
/// its client certificate), or both as `SHA256+cn=CN`. A CN cannot hold
/// `:` here (nor spaces or `;` in the variable's list): use the file for
/// such names. Without the last part the list of prefixes is empty (right
/// for an admin); `NAME:ROLE:CREDENTIALS:` (empty last part) is the
/// prefix `""`, every resource.
pub fn parse_principal(text: &str) -> Result<Principal, String> {
    let usage = || {
        format!("principal {text:?} is not of the form NAME:ROLE:SHA256|cn=CN|SHA256+cn=CN[:PREFIX,PREFIX…]")
    };
    let mut parts = text.trim().splitn(4, ':');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(usage)?;
    let role = parts.next().ok_or_else(usage)?;
    let credentials = parts.next().ok_or_else(usage)?;
    let (hash, cn) = match credentials.strip_prefix(CERT_CN_MARK) {
        Some(cn) => (None, Some(cn)),
        None => match credentials.split_once(&format!("+{CERT_CN_MARK}")) {
            Some((hash, cn)) => (Some(hash), Some(cn)),
            None => (Some(credentials), None),
        },
    };
    let prefixes = match parts.next() {
        None => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    principal(name, role, hash, cn, prefixes)
}

/// A principal from its parts; the error names the part at fault.
fn principal(
    name: &str,
    role: &str,
    hash: Option<&str>,
    cert_cn: Option<&str>,
    prefixes: Vec<String>,
) -> Result<Principal, String> {
    let p = Principal {
        name: name.to_string(),
        role: role.parse::<Role>()?,
        token_sha256: hash.map(TokenDigest::from_hex).transpose()?,
        cert_cn: cert_cn.map(str::to_string),
        prefixes,
    };
    p.validate()
        .map_err(|m| format!("principal {name:?}: {m}"))?;
    Ok(p)
}

impl Value for Vec<Principal> {
    /// `NAME:ROLE:CREDENTIALS[:PREFIX,…]` entries separated by spaces or `;`.
    fn from_text(text: &str) -> Result<Self, String> {
        text.split(|c: char| c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(parse_principal)
            .collect()
    }
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        let array = value.as_array().ok_or_else(|| {
            format!(
                "expected [[auth.principals]] tables, found {}",
                value.type_str()
            )
        })?;
        let mut out = Vec::new();
        for (i, item) in array.iter().enumerate() {
            let at = |m: String| format!("entry {}: {m}", i + 1);
            match item.get_ref() {
                DeValue::Table(t) => out.push(principal_from_table(t).map_err(at)?),
                other => {
                    return Err(at(format!(
                        "expected a principal table {{ name, role, ... }}, found {}",
                        other.type_str()
                    )))
                }
            }
        }
        Ok(out)
    }
}

fn principal_from_table(table: &DeTable<'_>) -> Result<Principal, String> {
    if let Some((k, _)) = table
        .iter()
        .find(|(k, _)| !PRINCIPAL_FIELDS.contains(&k.get_ref().as_ref()))
    {
        let hint = if k.get_ref().as_ref() == "token" {
            " (store the token's SHA-256 as token_sha256, never the token: `leasehold auth token` prints both)"
        } else {
            " (a principal has name, token_sha256, cert_cn, role, prefixes)"
        };
        return Err(format!("unknown key `{}`{hint}", k.get_ref()));
    }
    let field = |name: &str| {
        table
            .get(name)
            .map(|v| v.get_ref())
            .ok_or_else(|| format!("missing `{name}`"))
    };
    let name = toml_str(field("name")?, "a string for `name`")?;
    let role = toml_str(
        field("role")?,
        "a string for `role` (admin, client or reader)",
    )?;
    let hash = table
        .get("token_sha256")
        .map(|v| toml_str(v.get_ref(), "a string of 64 hex digits for `token_sha256`"))
        .transpose()?;
    let cert_cn = table
        .get("cert_cn")
        .map(|v| toml_str(v.get_ref(), "a string for `cert_cn`"))
        .transpose()?;
    let prefixes = match table.get("prefixes").map(|v| v.get_ref()) {
        None => Vec::new(),
        Some(DeValue::Array(list)) => list
            .iter()
            .map(|p| toml_str(p.get_ref(), "strings in `prefixes`").map(str::to_string))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "expected a list of strings for `prefixes`, found {}",
                other.type_str()
            ))
        }
    };
    principal(name, role, hash, cert_cn, prefixes)
}
