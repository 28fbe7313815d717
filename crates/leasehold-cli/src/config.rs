//! `leasehold server`'s settings: command-line flags, `LEASEHOLD_*`
//! environment variables and a TOML file (`--config PATH` or
//! `LEASEHOLD_CONFIG`), with one precedence for every setting:
//!
//! **flags > environment > file > built-in defaults.**
//!
//! Every setting is declared once, in the [`settings!`] table at the bottom
//! of the list below: its flag (clap attributes and help), its type, its key
//! in the file and its environment variable. Loading never stops at the
//! first problem: every malformed value, unknown key and failed check is
//! collected and reported, one line each, naming the key and where its value
//! came from ([`ConfigError`]). How each type of value reads from text and
//! from TOML is in `value`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use leasehold_server::{AuthConfig, NodeConfig, PeerSpec, Principal, RaftTiming};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod value;

use value::Value;
pub use value::{parse_bool, parse_millis, parse_principal, Millis};

/// The environment a configuration is read from (variable → value). The
/// process environment in production, an explicit map in tests.
pub type Env = BTreeMap<String, String>;

/// The environment variable naming the config file (like `--config`).
pub const CONFIG_ENV: &str = "LEASEHOLD_CONFIG";

/// Built-in default of `node.raft_listen`.
pub const DEFAULT_RAFT_LISTEN: &str = "127.0.0.1:7101";
/// Built-in default of `node.api_listen`.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7001";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// The config file, at this line if known.
    File(PathBuf, Option<usize>),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::File(path, Some(line)) => write!(f, "file {} line {line}", path.display()),
            Origin::File(path, None) => write!(f, "file {}", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// One problem with the configuration, printed as one line:
/// `node.id: must be non-zero (file /etc/leasehold/node1.toml line 3)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's key in the file (`node.id`), if the problem has one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Where the offending value came from, if anywhere.
    pub origin: Option<Origin>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>, origin: Origin) -> Self {
        ConfigError {
            key: Some(key.into()),
            message: message.into(),
            origin: Some(origin),
        }
    }
}

/// Declares every setting once: its flag (doc comment = help, clap
/// attributes), type, file key and environment variable. Generates
/// [`Settings`] (one optional value per setting: the flags, and also each
/// other layer) and the table [`KEYS`].
macro_rules! settings {
    ($(
        $(#[$attr:meta])*
        $field:ident : $ty:ty = $key:literal, $env:literal, $flag:literal;
    )*) => {
        /// Settings of `leasehold server`, each optional: one layer
        /// (flags, environment or file) of the configuration.
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct Settings {
            $( $(#[$attr])* pub $field: Option<$ty>, )*
        }

        /// Every setting: (field, file key, environment variable, flag).
        pub const KEYS: &[(&str, &str, &str, &str)] = &[
            $( (stringify!($field), $key, $env, $flag), )*
        ];

        impl Settings {
            /// Each setting from `self`, else from `lower`.
            fn over(self, lower: Settings) -> Settings {
                Settings { $( $field: self.$field.or(lower.$field), )* }
            }

            /// Whether the setting named by its field is set in this layer.
            fn has(&self, field: &str) -> bool {
                match field {
                    $( stringify!($field) => self.$field.is_some(), )*
                    _ => false,
                }
            }

            /// The `LEASEHOLD_*` variables of `env`.
            fn from_env(env: &Env, errors: &mut Vec<ConfigError>) -> Settings {
                Settings { $( $field: env_value::<$ty>(env, $key, $env, errors), )* }
            }

            /// The values of a parsed file, by file key.
            fn from_file(
                values: &BTreeMap<String, (Spanned<DeValue<'_>>, usize)>,
                path: &Path,
                errors: &mut Vec<ConfigError>,
            ) -> Settings {
                Settings { $( $field: file_value::<$ty>(values, $key, path, errors), )* }
            }
        }
    };
}

settings! {
    /// This node's id: non-zero, one of the peers' ids unless it joins.
    /// [file: node.id; env: LEASEHOLD_ID; required]
    #[arg(long, value_name = "ID")]
    id: u64 = "node.id", "LEASEHOLD_ID", "--id";

    /// Listen address of the Raft peer service. [file: node.raft_listen;
    /// env: LEASEHOLD_RAFT_LISTEN; default: 127.0.0.1:7101]
    #[arg(long, value_name = "IP:PORT")]
    raft_listen: SocketAddr = "node.raft_listen", "LEASEHOLD_RAFT_LISTEN", "--raft-listen";

    /// Listen address of the client API. [file: node.api_listen; env:
    /// LEASEHOLD_API_LISTEN; default: 127.0.0.1:7001]
    #[arg(long, value_name = "IP:PORT")]
    api_listen: SocketAddr = "node.api_listen", "LEASEHOLD_API_LISTEN", "--api-listen";

    /// Listen address of the HTTP metrics and health endpoint (`/metrics`,
    /// `/healthz`, `/readyz`); not served unless given. [file:
    /// node.metrics_listen; env: LEASEHOLD_METRICS_LISTEN; default: off]
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: SocketAddr = "node.metrics_listen", "LEASEHOLD_METRICS_LISTEN", "--metrics-listen";

    /// Data directory (sled database); created if missing. [file:
    /// node.data_dir; env: LEASEHOLD_DATA_DIR; required]
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf = "node.data_dir", "LEASEHOLD_DATA_DIR", "--data-dir";

    /// Never initialize a cluster: with a pristine data directory, wait to
    /// be added to an existing one (`leasehold membership`). Without it a
    /// pristine node founds a cluster only when every peer answers and none
    /// has committed anything; if the cluster exists and still lists this
    /// id (its data was wiped), the node refuses all Raft traffic until the
    /// id is removed from the membership. `--join=false` overrides a file
    /// or variable. [file: node.join; env: LEASEHOLD_JOIN; default: false]
    #[arg(
        long,
        alias = "no-bootstrap",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    join: bool = "node.join", "LEASEHOLD_JOIN", "--join";

    /// A cluster member, ID=RAFT_ADDR,API_ADDR; repeat for every member,
    /// this node included (a joining node may be absent: the list then only
    /// names whom to ask). Flags replace the whole list of the file or
    /// variable. [file: peers; env: LEASEHOLD_PEERS, entries separated by
    /// spaces or `;`; required]
    #[arg(long = "peer", value_name = "ID=RAFT,API")]
    peers: Vec<PeerSpec> = "peers", "LEASEHOLD_PEERS", "--peer";

    /// Raft heartbeat period, in ms (or a duration: 100ms, 0.1s). [file:
    /// raft.heartbeat; env: LEASEHOLD_HEARTBEAT_MS; default: 100ms]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    heartbeat_ms: Millis = "raft.heartbeat", "LEASEHOLD_HEARTBEAT_MS", "--heartbeat-ms";

    /// Lower bound of the election timeout, in ms (≥ 2 × heartbeat).
    /// [file: raft.election_timeout_min; env:
    /// LEASEHOLD_ELECTION_TIMEOUT_MS_MIN; default: 300ms]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    election_timeout_ms_min: Millis =
        "raft.election_timeout_min", "LEASEHOLD_ELECTION_TIMEOUT_MS_MIN", "--election-timeout-ms-min";

    /// Upper bound of the election timeout, in ms: this node's own, which
    /// must be at least the cluster's replicated vote window
    /// (`vote_window_ms`, set by the first leader from its own value), else
    /// the node refuses to vote and lead. [file: raft.election_timeout_max;
    /// env: LEASEHOLD_ELECTION_TIMEOUT_MS_MAX; default: 600ms]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    election_timeout_ms_max: Millis =
        "raft.election_timeout_max", "LEASEHOLD_ELECTION_TIMEOUT_MS_MAX", "--election-timeout-ms-max";

    /// Build a snapshot after this many applied entries. [file:
    /// snapshot.every_entries; env: LEASEHOLD_SNAPSHOT_EVERY_ENTRIES;
    /// default: 10000]
    #[arg(long, value_name = "N")]
    snapshot_every_entries: u64 =
        "snapshot.every_entries", "LEASEHOLD_SNAPSHOT_EVERY_ENTRIES", "--snapshot-every-entries";

    /// Log entries kept behind the latest snapshot, so lagging followers
    /// catch up from the log. [file: snapshot.log_entries_kept; env:
    /// LEASEHOLD_LOG_ENTRIES_KEPT; default: 1000]
    #[arg(long, value_name = "N")]
    log_entries_kept: u64 =
        "snapshot.log_entries_kept", "LEASEHOLD_LOG_ENTRIES_KEPT", "--log-entries-kept";

    /// The cluster CA's certificate (PEM): peers must present a certificate
    /// it signed (mutual TLS), client certificates are checked against it.
    /// With --tls-cert and --tls-key; `leasehold certs init` makes all
    /// three. [file: tls.ca_cert; env: LEASEHOLD_TLS_CA_CERT; default: none]
    #[arg(long, value_name = "PEM")]
    tls_ca_cert: PathBuf = "tls.ca_cert", "LEASEHOLD_TLS_CA_CERT", "--tls-ca-cert";

    /// This node's certificate (PEM), with SANs for the hosts peers and
    /// clients dial (IP SAN for an address, DNS SAN for a name). [file:
    /// tls.cert; env: LEASEHOLD_TLS_CERT; default: none]
    #[arg(long, value_name = "PEM")]
    tls_cert: PathBuf = "tls.cert", "LEASEHOLD_TLS_CERT", "--tls-cert";

    /// This node's private key (PEM; keep it 0600). [file: tls.key; env:
    /// LEASEHOLD_TLS_KEY; default: none]
    #[arg(long, value_name = "PEM")]
    tls_key: PathBuf = "tls.key", "LEASEHOLD_TLS_KEY", "--tls-key";

    /// Run without TLS: anyone who reaches the ports can send Raft messages
    /// and call the API. Must be asked for explicitly (a node with neither
    /// TLS files nor this refuses to start) and logs a warning. [file:
    /// tls.plaintext; env: LEASEHOLD_PLAINTEXT; default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    plaintext: bool = "tls.plaintext", "LEASEHOLD_PLAINTEXT", "--plaintext";

    /// Run with an OPEN client API (anyone who reaches it may do anything)
    /// when no principals are configured: the explicit acknowledgement
    /// without which such a node refuses to start. Ignored when principals
    /// are configured. [file: auth.open; env: LEASEHOLD_AUTH_OPEN; default:
    /// false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    auth_open: bool = "auth.open", "LEASEHOLD_AUTH_OPEN", "--auth-open";

    /// A principal that may call the client API: role admin, client or reader;
    /// SHA256 = hex SHA-256 of its bearer token, cn=CN = its client
    /// certificate's subject CN, or SHA256+cn=CN; `NAME:ROLE:SHA256:` = every
    /// resource. Repeat for each; with any, every call needs a token or client
    /// certificate of one. Flags replace the list of the file or variable.
    /// [file: auth.principals; tables: name, token_sha256 and/or cert_cn, role,
    /// prefixes; env: LEASEHOLD_AUTH_PRINCIPALS, separated by spaces or `;`]
    #[arg(long = "auth-principal", value_name = "NAME:ROLE:SHA256|cn=CN[:PREFIX,…]", value_parser = parse_principal)]
    auth_principals: Vec<Principal> = "auth.principals", "LEASEHOLD_AUTH_PRINCIPALS", "--auth-principal";
    /// Client API connections open at once; over it, every call on a new
    /// connection answers RESOURCE_EXHAUSTED naming the limit. [file:
    /// limits.connections_max; env: LEASEHOLD_CONNECTIONS_MAX; default: 10000]
    #[arg(long, value_name = "N")]
    connections_max: u64 =
        "limits.connections_max", "LEASEHOLD_CONNECTIONS_MAX", "--connections-max";

    /// A client connection with no call open for this long is closed, in ms
    /// (or a duration). [file: limits.connection_idle_timeout; env:
    /// LEASEHOLD_CONNECTION_IDLE_TIMEOUT_MS; default: 5m]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    connection_idle_timeout_ms: Millis =
        "limits.connection_idle_timeout", "LEASEHOLD_CONNECTION_IDLE_TIMEOUT_MS", "--connection-idle-timeout-ms";

    /// KeepAlive streams open at once on this node. [file:
    /// limits.keepalive_streams_max; env: LEASEHOLD_KEEPALIVE_STREAMS_MAX;
    /// default: 10000]
    #[arg(long, value_name = "N")]
    keepalive_streams_max: u64 =
        "limits.keepalive_streams_max", "LEASEHOLD_KEEPALIVE_STREAMS_MAX", "--keepalive-streams-max";

    /// KeepAlive streams open at once from one client IP address. [file:
    /// limits.keepalive_streams_per_client_max; env:
    /// LEASEHOLD_KEEPALIVE_STREAMS_PER_CLIENT_MAX; default: 1000]
    #[arg(long, value_name = "N")]
    keepalive_streams_per_client_max: u64 =
        "limits.keepalive_streams_per_client_max", "LEASEHOLD_KEEPALIVE_STREAMS_PER_CLIENT_MAX", "--keepalive-streams-per-client-max";

    /// Watch streams open at once on this node. [file:
    /// limits.watch_streams_max; env: LEASEHOLD_WATCH_STREAMS_MAX; default:
    /// 10000]
    #[arg(long, value_name = "N")]
    watch_streams_max: u64 =
        "limits.watch_streams_max", "LEASEHOLD_WATCH_STREAMS_MAX", "--watch-streams-max";

    /// Watch streams open at once from one client IP address. [file:
    /// limits.watch_streams_per_client_max; env:
    /// LEASEHOLD_WATCH_STREAMS_PER_CLIENT_MAX; default: 1000]
    #[arg(long, value_name = "N")]
    watch_streams_per_client_max: u64 =
        "limits.watch_streams_per_client_max", "LEASEHOLD_WATCH_STREAMS_PER_CLIENT_MAX", "--watch-streams-per-client-max";

    /// Acquires waiting in a queue at once on this node. [file:
    /// limits.waiters_max; env: LEASEHOLD_WAITERS_MAX; default: 10000]
    #[arg(long, value_name = "N")]
    waiters_max: u64 = "limits.waiters_max", "LEASEHOLD_WAITERS_MAX", "--waiters-max";

    /// A Watch stream whose reader took no event for this long with its
    /// buffer full ends RESOURCE_EXHAUSTED, in ms (or a duration). [file:
    /// limits.watch_stall_timeout; env: LEASEHOLD_WATCH_STALL_TIMEOUT_MS;
    /// default: 30s]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    watch_stall_timeout_ms: Millis =
        "limits.watch_stall_timeout", "LEASEHOLD_WATCH_STALL_TIMEOUT_MS", "--watch-stall-timeout-ms";

    /// UNSAFE, chaos tests only: make this node's lease clock run fast
    /// (positive) or slow (negative) by this many parts per million. [file:
    /// unsafe_test.clock_rate_ppm; env: LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM;
    /// default: 0]
    #[arg(long, value_name = "PPM", allow_hyphen_values = true)]
    unsafe_test_clock_rate_ppm: i64 =
        "unsafe_test.clock_rate_ppm", "LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM", "--unsafe-test-clock-rate-ppm";

    /// UNSAFE, chaos tests only: on every SIGUSR1, jump this node's lease
    /// clock forward by this many milliseconds (0: SIGUSR1 is ignored).
    /// [file: unsafe_test.clock_jump; env:
    /// LEASEHOLD_UNSAFE_TEST_CLOCK_JUMP_MS; default: 0]
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    unsafe_test_clock_jump_ms: Millis =
        "unsafe_test.clock_jump", "LEASEHOLD_UNSAFE_TEST_CLOCK_JUMP_MS", "--unsafe-test-clock-jump-ms";
}

fn env_value<T: Value>(
    env: &Env,
    key: &str,
    var: &'static str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let text = env.get(var)?;
    match T::from_text(text) {
        Ok(v) => Some(v),
        Err(m) => {
            errors.push(ConfigError::new(key, m, Origin::Env(var)));
            None
        }
    }
}

fn file_value<T: Value>(
    values: &BTreeMap<String, (Spanned<DeValue<'_>>, usize)>,
    key: &str,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let (value, line) = values.get(key)?;
    match T::from_toml(value.get_ref()) {
        Ok(v) => Some(v),
        Err(m) => {
            errors.push(ConfigError::new(
                key,
                m,
                Origin::File(path.to_path_buf(), Some(*line)),
            ));
            None
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads a config file's text into the values of known keys (with their
/// lines), and an error for every syntax error and unknown key.
fn parse_file<'a>(
    text: &'a str,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, (Spanned<DeValue<'a>>, usize)> {
    let at = |line: Option<usize>| Some(Origin::File(path.to_path_buf(), line));
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            errors.push(ConfigError {
                key: None,
                message: format!("malformed TOML: {}", e.message().trim()),
                origin: at(e.span().map(|s| line_of(text, s.start))),
            });
        }
        return BTreeMap::new();
    }
    let mut values = BTreeMap::new();
    let mut found = Vec::new();
    let known = |key: &str| KEYS.iter().any(|k| k.1 == key);
    let is_section = |name: &str| KEYS.iter().any(|k| k.1.starts_with(&format!("{name}.")));
    let mut unknown = |key: String, line: usize, message: String| {
        found.push((line, key, message));
    };
    for (k, v) in root.into_inner() {
        let name = k.get_ref().to_string();
        let line = line_of(text, k.span().start);
        if known(&name) {
            values.insert(name, (v, line));
        } else if !is_section(&name) {
            unknown(name, line, "unknown key".into());
        } else if let DeValue::Table(section) = v.into_inner() {
            for (k2, v2) in section {
                let full = format!("{name}.{}", k2.get_ref());
                let line = line_of(text, k2.span().start);
                if known(&full) {
                    values.insert(full, (v2, line));
                } else if known(k2.get_ref()) {
                    // `peers = [...]` written after a [section] header.
                    let m = format!(
                        "unknown key; `{}` is a top-level key: move it before the first [section]",
                        k2.get_ref()
                    );
                    unknown(full, line, m);
                } else {
                    unknown(full, line, "unknown key".into());
                }
            }
        } else {
            let m = format!("expected a table [{name}]");
            unknown(name, line, m);
        }
    }
    // In the order of the file (the parsed table is sorted by key).
    found.sort();
    for (line, key, message) in found {
        errors.push(ConfigError {
            key: Some(key),
            message,
            origin: at(Some(line)),
        });
    }
    values
}

/// What `leasehold server` runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The node's configuration.
    pub node: NodeConfig,
    /// The test-only clock jump per SIGUSR1, in ms (0: none).
    pub unsafe_test_clock_jump_ms: u64,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
}

/// Loads the configuration: `flags` over the `LEASEHOLD_*` variables of
/// `env` over the file (`config`, else `LEASEHOLD_CONFIG` in `env`) over
/// the built-in defaults, then checks it. Every problem is returned, each
/// naming its key and the origin of the value.
pub fn load(
    flags: Settings,
    config: Option<PathBuf>,
    env: &Env,
) -> Result<ServerConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let env_layer = Settings::from_env(env, &mut errors);
    let file = config.or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
    let mut lines = BTreeMap::new();
    let file_layer = match &file {
        None => Settings::default(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let values = parse_file(&text, path, &mut errors);
                for (key, (_, line)) in &values {
                    lines.insert(key.clone(), *line);
                }
                Settings::from_file(&values, path, &mut errors)
            }
            Err(e) => {
                errors.push(ConfigError {
                    key: None,
                    message: format!("cannot read the config file: {e}"),
                    origin: Some(Origin::File(path.clone(), None)),
                });
                Settings::default()
            }
        },
    };
    // Which layer each setting came from, for the error messages.
    let origin = |field: &str| -> Origin {
        let Some(&(_, key, var, flag)) = KEYS.iter().find(|k| k.0 == field) else {
            return Origin::Default;
        };
        if flags.has(field) {
            Origin::Flag(flag)
        } else if env_layer.has(field) {
            Origin::Env(var)
        } else if let (true, Some(path)) = (file_layer.has(field), &file) {
            Origin::File(path.clone(), lines.get(key).copied())
        } else {
            Origin::Default
        }
    };
    let key_of = |field: &'static str| -> &'static str {
        KEYS.iter().find(|k| k.0 == field).map_or(field, |k| k.1)
    };
    let merged = flags
        .clone()
        .over(env_layer.clone())
        .over(file_layer.clone());
    for field in ["id", "data_dir", "peers"] {
        let bad_value = |key: &str| errors.iter().any(|e| e.key.as_deref() == Some(key));
        if !merged.has(field) && !KEYS.iter().any(|k| k.0 == field && bad_value(k.1)) {
            if let Some(&(_, key, var, flag)) = KEYS.iter().find(|k| k.0 == field) {
                errors.push(ConfigError {
                    key: Some(key.into()),
                    message: format!("required: set {flag}, {var} or `{key}` in the config file"),
                    origin: None,
                });
            }
        }
    }
    tls_files_complete(&merged, &origin, &mut errors);
    let node = node_config(&merged, &mut errors);
    if let Some(node) = &node {
        for p in node.problems() {
            if p.field == "tls" {
                // Neither TLS nor plaintext: no value to blame.
                if !errors
                    .iter()
                    .any(|e| e.key.as_deref().is_some_and(|k| k.starts_with("tls.")))
                {
                    errors.push(ConfigError {
                        key: Some("tls".into()),
                        message: p.message,
                        origin: None,
                    });
                }
                continue;
            }
            let field = match p.field {
                "node_id" => "id",
                "auth.principals" => "auth_principals",
                other => other,
            };
            let principals_malformed = errors
                .iter()
                .any(|e| e.key.as_deref() == Some("auth.principals"));
            if field == "auth" && principals_malformed {
                // Principals were given but malformed: that is the problem.
            } else if field == "auth" {
                // No single setting is at fault: two could fix it.
                errors.push(ConfigError {
                    key: Some("auth".into()),
                    message: p.message,
                    origin: None,
                });
            } else {
                errors.push(ConfigError::new(key_of(field), p.message, origin(field)));
            }
        }
        if let Err(e) = node.raft_config() {
            errors.push(ConfigError {
                key: Some("raft".into()),
                message: e.to_string(),
                origin: None,
            });
        }
    }
    match node {
        Some(node) if errors.is_empty() => Ok(ServerConfig {
            node,
            unsafe_test_clock_jump_ms: merged.unsafe_test_clock_jump_ms.map_or(0, |m| m.0),
            file,
        }),
        _ => Err(errors),
    }
}

/// The three TLS files go together: one given without the others is an
/// error naming the missing ones.
fn tls_files_complete(
    s: &Settings,
    origin: &dyn Fn(&str) -> Origin,
    errors: &mut Vec<ConfigError>,
) {
    let files = [
        ("tls_ca_cert", s.tls_ca_cert.is_some()),
        ("tls_cert", s.tls_cert.is_some()),
        ("tls_key", s.tls_key.is_some()),
    ];
    let Some(&(given, _)) = files.iter().find(|f| f.1) else {
        return;
    };
    let Some(&(_, given_key, _, _)) = KEYS.iter().find(|k| k.0 == given) else {
        return;
    };
    for (field, set) in files {
        if set {
            continue;
        }
        if let Some(&(_, key, var, flag)) = KEYS.iter().find(|k| k.0 == field) {
            errors.push(ConfigError {
                key: Some(key.into()),
                message: format!(
                    "required with {given_key}: TLS needs tls.ca_cert, tls.cert and tls.key (set {flag}, {var} or `{key}` in the config file)"
                ),
                origin: Some(origin(given)),
            });
        }
    }
}

/// The node configuration of merged settings (defaults for what is unset);
/// `None` when a required setting is missing or a default is unusable.
fn node_config(s: &Settings, errors: &mut Vec<ConfigError>) -> Option<NodeConfig> {
    let mut default_addr = |text: &str, key: &str| match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(ConfigError::new(key, e.to_string(), Origin::Default));
            None
        }
    };
    let raft_listen = match s.raft_listen {
        Some(a) => a,
        None => default_addr(DEFAULT_RAFT_LISTEN, "node.raft_listen")?,
    };
    let api_listen = match s.api_listen {
        Some(a) => a,
        None => default_addr(DEFAULT_API_LISTEN, "node.api_listen")?,
    };
    let mut c = NodeConfig::new(
        s.id?,
        raft_listen,
        api_listen,
        s.peers.clone()?,
        s.data_dir.clone()?,
    );
    let d = RaftTiming::default();
    c.timing = RaftTiming {
        heartbeat_ms: s.heartbeat_ms.map_or(d.heartbeat_ms, |m| m.0),
        election_timeout_ms_min: s
            .election_timeout_ms_min
            .map_or(d.election_timeout_ms_min, |m| m.0),
        election_timeout_ms_max: s
            .election_timeout_ms_max
            .map_or(d.election_timeout_ms_max, |m| m.0),
    };
    c.bootstrap = !s.join.unwrap_or(false);
    if let Some(n) = s.snapshot_every_entries {
        c.snapshot_every_entries = n;
    }
    if let Some(n) = s.log_entries_kept {
        c.log_entries_kept = n;
    }
    c.unsafe_test_clock_rate_ppm = s.unsafe_test_clock_rate_ppm.unwrap_or(0);
    let count = |n: Option<u64>, default: usize| {
        n.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let d = c.limits;
    c.limits = leasehold_server::limits::ApiLimits {
        connections_max: count(s.connections_max, d.connections_max),
        connection_idle_timeout_ms: s
            .connection_idle_timeout_ms
            .map_or(d.connection_idle_timeout_ms, |m| m.0),
        keepalive_streams_max: count(s.keepalive_streams_max, d.keepalive_streams_max),
        keepalive_streams_per_client_max: count(
            s.keepalive_streams_per_client_max,
            d.keepalive_streams_per_client_max,
        ),
        watch_streams_max: count(s.watch_streams_max, d.watch_streams_max),
        watch_streams_per_client_max: count(
            s.watch_streams_per_client_max,
            d.watch_streams_per_client_max,
        ),
        waiters_max: count(s.waiters_max, d.waiters_max),
        watch_stall_timeout_ms: s
            .watch_stall_timeout_ms
            .map_or(d.watch_stall_timeout_ms, |m| m.0),
    };
    c.metrics_listen = s.metrics_listen;
    if let (Some(ca_cert), Some(cert), Some(key)) = (&s.tls_ca_cert, &s.tls_cert, &s.tls_key) {
        c.tls = Some(leasehold_server::TlsFiles {
            ca_cert: ca_cert.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    c.plaintext = s.plaintext.unwrap_or(false);
    c.auth = AuthConfig {
        principals: s.auth_principals.clone().unwrap_or_default(),
        open: s.auth_open.unwrap_or(false),
    };
    Some(c)
}

/// The `LEASEHOLD_*` variables (and `LEASEHOLD_CONFIG`) of this process.
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("LEASEHOLD_"))
        .collect()
}

/// `leasehold server --help`: the precedence, the file and its keys.
pub const HELP: &str = "\
Configuration: every setting comes from, in this order of precedence,
  flags > environment (LEASEHOLD_*) > config file (--config / LEASEHOLD_CONFIG) > built-in defaults.
Each flag above names its file key and variable. The file is TOML; unknown
keys are errors, durations are strings (\"100ms\", \"1.5s\"):

  peers = [\"1=127.0.0.1:7101,127.0.0.1:7001\", \"2=127.0.0.1:7102,127.0.0.1:7002\"]
  # or, after the sections: [[peers]] id = 2, raft = \"127.0.0.1:7102\", api = \"127.0.0.1:7002\"
  [node]
  id = 1
  raft_listen = \"127.0.0.1:7101\"
  api_listen = \"127.0.0.1:7001\"
  data_dir = \"/var/lib/leasehold/node1\"
  join = false
  [raft]
  heartbeat = \"100ms\"
  election_timeout_min = \"300ms\"
  election_timeout_max = \"600ms\"   # must be >= the cluster's vote window
  [snapshot]
  every_entries = 10000
  log_entries_kept = 1000
  [tls]                              # TLS files, or plaintext = true: one is required
  ca_cert = \"/etc/leasehold/tls/ca.pem\"
  cert = \"/etc/leasehold/tls/node-1.pem\"
  key = \"/etc/leasehold/tls/node-1-key.pem\"
  # plaintext = true                 # no TLS (warned about at start)
  [auth]                          # tokens are stored as SHA-256 hex, never in clear
  open = false                    # true: no principals, API open to anyone (logged as a warning)
  [[auth.principals]]             # `leasehold auth token` makes a token and its hash
  name = \"ops\"
  token_sha256 = \"<64 hex digits>\"
  role = \"admin\"                  # admin > client > reader
  [[auth.principals]]
  name = \"chunkserver\"
  token_sha256 = \"<64 hex digits>\"
  role = \"client\"
  prefixes = [\"chunk/\"]            # resources it may use ([\"\"]: all)
  [[auth.principals]]             # known by its client certificate (mTLS)
  name = \"dashboard\"
  cert_cn = \"dashboard\"           # subject CN, signed by the cluster CA
  role = \"reader\"
  prefixes = [\"\"]
  [limits]                           # docs/limits.md
  connections_max = 10000
  connection_idle_timeout = \"5m\"
  keepalive_streams_max = 10000
  keepalive_streams_per_client_max = 1000
  watch_streams_max = 10000
  watch_streams_per_client_max = 1000
  waiters_max = 10000
  watch_stall_timeout = \"30s\"

(peers is a top-level key: a `peers = [...]` line goes before the first [section].)
Without principals and without auth.open the node refuses to start.
Every problem is reported, one line each (`leasehold: config error: KEY:
PROBLEM (ORIGIN)`), and the command exits 2. Logging: RUST_LOG.
Samples: cluster/config/node1.toml … node3.toml.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use leasehold_server::Role;

    /// The flags of `leasehold server`, parsed alone.
    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    /// `args` as flags, with `--auth-open` (the tests of other settings
    /// run an open API; the auth tests use [`auth_flags`]).
    fn flags(args: &[&str]) -> Settings {
        let mut argv = vec!["server", "--auth-open"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("flags parse").settings
    }

    /// `args` as flags, alone.
    fn auth_flags(args: &[&str]) -> Settings {
        // Plaintext: what is under test here is auth, not TLS.
        let mut argv = vec!["server", "--plaintext"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("flags parse").settings
    }

    const HASH_A: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    const HASH_B: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn without_principals_or_auth_open_the_server_refuses_to_start() {
        let (_d, path) = file(BASE);
        let errors = load(auth_flags(&[]), Some(path.clone()), &Env::new()).expect_err("closed");
        assert_eq!(
            lines(&errors),
            ["auth: no principals are configured: add [[auth.principals]] or set auth.open = true (--auth-open) to run with an open API"]
        );
        let c = load(
            auth_flags(&[]),
            Some(path),
            &env(&[("LEASEHOLD_AUTH_OPEN", "true")]),
        )
        .expect("open");
        assert!(c.node.auth.open && !c.node.auth.enabled());
    }

    #[test]
    fn principals_come_from_the_file_flags_or_environment() {
        let (_d, path) = file(&format!(
            "{BASE}[auth]\n[[auth.principals]]\nname = \"ops\"\ntoken_sha256 = \"{HASH_A}\"\nrole = \"admin\"\n[[auth.principals]]\nname = \"chunkserver\"\ntoken_sha256 = \"{}\"\nrole = \"client\"\nprefixes = [\"chunk/\", \"tmp/\"]\n",
            HASH_B.to_uppercase()
        ));
        let c = load(auth_flags(&[]), Some(path.clone()), &Env::new()).expect("valid");
        let got: Vec<_> = c
            .node
            .auth
            .principals
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.role,
                    p.prefixes.clone(),
                    p.token_sha256
                        .as_ref()
                        .map(leasehold_server::TokenDigest::to_hex)
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ops", Role::Admin, vec![], HASH_A.to_string()),
                (
                    "chunkserver",
                    Role::Client,
                    vec!["chunk/".to_string(), "tmp/".to_string()],
                    HASH_B.to_string()
                ),
            ]
        );
        assert!(c.node.auth.enabled());
        // Flags replace the list; `NAME:ROLE:HASH:` is every resource.
        let c = load(
            auth_flags(&["--auth-principal", &format!("dash:reader:{HASH_A}:")]),
            Some(path.clone()),
            &env(&[("LEASEHOLD_AUTH_PRINCIPALS", &format!("x:admin:{HASH_B}"))]),
        )
        .expect("valid");
        assert_eq!(c.node.auth.principals.len(), 1);
        assert_eq!(c.node.auth.principals[0].prefixes, [""]);
        let c = load(
            auth_flags(&[]),
            None,
            &env(&[
                ("LEASEHOLD_ID", "1"),
                ("LEASEHOLD_DATA_DIR", "/x"),
                ("LEASEHOLD_PEERS", "1=a:1,a:2"),
                (
                    "LEASEHOLD_AUTH_PRINCIPALS",
                    &format!("ops:admin:{HASH_A}; cs:client:{HASH_B}:chunk/,jobs/"),
                ),
            ]),
        )
        .expect("valid");
        assert_eq!(c.node.auth.principals[1].prefixes, ["chunk/", "jobs/"]);
    }

    #[test]
    fn bad_principals_are_reported_by_entry_and_line() {
        let (_d, path) = file(&format!(
            "{BASE}[auth]\nprincipals = [\n  {{ name = \"a\", token_sha256 = \"{HASH_A}\", role = \"root\" }},\n]\n"
        ));
        let p = path.display().to_string();
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("bad role");
        assert_eq!(
            lines(&errors),
            [format!("auth.principals: entry 1: unknown role \"root\": expected admin, client or reader (file {p} line 7)")]
        );
        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"a\"\ntoken_sha256 = \"abc123\"\nrole = \"admin\"\n"
        ));
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("short hash");
        assert!(
            errors[0].to_string().starts_with(
                "auth.principals: entry 1: token_sha256 must be 64 hex digits (SHA-256), got 6 characters"
            ),
            "{:?}",
            lines(&errors)
        );
        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"a\"\ntoken = \"secret\"\nrole = \"admin\"\n"
        ));
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("clear token");
        assert!(
            errors[0].to_string().contains("never the token"),
            "{:?}",
            lines(&errors)
        );
        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"cs\"\ntoken_sha256 = \"{HASH_A}\"\nrole = \"client\"\n"
        ));
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("no prefixes");
        assert!(
            errors[0]
                .to_string()
                .contains("role client needs `prefixes`"),
            "{:?}",
            lines(&errors)
        );
        let errors = load(
            auth_flags(&[]),
            None,
            &env(&[
                ("LEASEHOLD_ID", "1"),
                ("LEASEHOLD_DATA_DIR", "/x"),
                ("LEASEHOLD_PEERS", "1=a:1,a:2"),
                (
                    "LEASEHOLD_AUTH_PRINCIPALS",
                    &format!("a:admin:{HASH_A} b:admin:{HASH_A}"),
                ),
            ]),
        )
        .expect_err("same token twice");
        assert_eq!(
            lines(&errors),
            ["auth.principals: \"a\" and \"b\" have the same token_sha256 (env LEASEHOLD_AUTH_PRINCIPALS)"]
        );
        assert!(parse_principal("ops:admin").is_err());
        assert!(parse_principal(&format!("ops:boss:{HASH_A}"))
            .expect_err("bad role")
            .contains("unknown role"));
    }

    #[test]
    fn principals_may_be_known_by_certificate_name() {
        let p = parse_principal("dash:reader:cn=dash board.example:").expect("cn only");
        assert_eq!(
            (
                p.token_sha256.is_none(),
                p.cert_cn.as_deref(),
                &p.prefixes[..]
            ),
            (true, Some("dash board.example"), &["".to_string()][..])
        );
        let p = parse_principal(&format!("ops:admin:{HASH_A}+cn=ops")).expect("both");
        assert_eq!(p.token_sha256.map(|d| d.to_hex()).as_deref(), Some(HASH_A));
        assert_eq!(p.cert_cn.as_deref(), Some("ops"));
        let p = parse_principal(&format!("ops:admin:{HASH_A}")).expect("the old form");
        assert!(p.cert_cn.is_none() && p.token_sha256.is_some());
        assert!(parse_principal("ops:admin:cn=leasehold node 1")
            .expect_err("a node's name")
            .contains("node certificate"));
        assert!(parse_principal("ops:admin:cn=").is_err());

        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"cs\"\ncert_cn = \"chunkserver 7\"\nrole = \"client\"\nprefixes = [\"chunk/\"]\n"
        ));
        let c = load(auth_flags(&[]), Some(path), &Env::new()).expect("cert principal");
        assert_eq!(
            c.node.auth.principals[0].cert_cn.as_deref(),
            Some("chunkserver 7")
        );

        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"ghost\"\nrole = \"admin\"\n"
        ));
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("neither");
        assert_eq!(errors.len(), 1, "{:?}", lines(&errors));
        assert!(
            errors[0].to_string().starts_with(
                "auth.principals: entry 1: principal \"ghost\": needs `token_sha256` or `cert_cn` (or both)"
            ),
            "{:?}",
            lines(&errors)
        );

        let (_d, path) = file(&format!(
            "{BASE}[[auth.principals]]\nname = \"a\"\ncert_cn = \"same\"\nrole = \"admin\"\n[[auth.principals]]\nname = \"b\"\ncert_cn = \"same\"\nrole = \"admin\"\n"
        ));
        let errors = load(auth_flags(&[]), Some(path), &Env::new()).expect_err("same CN");
        assert_eq!(errors.len(), 1, "{:?}", lines(&errors));
        assert!(
            errors[0]
                .to_string()
                .starts_with("auth.principals: \"a\" and \"b\" have the same cert_cn"),
            "{:?}",
            lines(&errors)
        );
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A config file with `body` in a fresh directory.
    fn file(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, body).expect("write");
        (dir, path)
    }

    /// Line 1 chooses plaintext, so that the lines below keep their numbers.
    const BASE: &str = r#"tls.plaintext = true
peers = ["1=127.0.0.1:7101,127.0.0.1:7001", "2=127.0.0.1:7102,127.0.0.1:7002"]
[node]
id = 1
data_dir = "/tmp/leasehold-test"
"#;

    fn lines(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_d, path) = file(&format!("{BASE}[raft]\nheartbeat = \"120ms\"\n"));
        let all = env(&[("LEASEHOLD_HEARTBEAT_MS", "130")]);
        let hb = |flags_: Settings, env_: &Env| {
            load(flags_, Some(path.clone()), env_)
                .expect("valid")
                .node
                .timing
                .heartbeat_ms
        };
        assert_eq!(
            hb(flags(&["--heartbeat-ms", "140"]), &all),
            140,
            "flag wins"
        );
        assert_eq!(hb(flags(&[]), &all), 130, "env beats file");
        assert_eq!(hb(flags(&[]), &Env::new()), 120, "file beats default");
        let (_d2, bare) = file(BASE);
        let c = load(flags(&[]), Some(bare), &Env::new()).expect("valid");
        assert_eq!(c.node.timing, RaftTiming::default(), "defaults");
        assert_eq!(c.node.raft_listen.to_string(), DEFAULT_RAFT_LISTEN);
        assert_eq!(c.node.api_listen.to_string(), DEFAULT_API_LISTEN);
        assert!(c.node.bootstrap);
    }

    #[test]
    fn every_setting_follows_the_same_precedence() {
        let (_d, path) = file(&format!(
            "{BASE}api_listen = \"127.0.0.1:9001\"\njoin = true\n[snapshot]\nevery_entries = 5\n"
        ));
        let e = env(&[
            ("LEASEHOLD_ID", "2"),
            ("LEASEHOLD_API_LISTEN", "127.0.0.1:9002"),
            ("LEASEHOLD_SNAPSHOT_EVERY_ENTRIES", "6"),
        ]);
        let c = load(flags(&[]), Some(path.clone()), &e).expect("valid");
        assert_eq!(c.node.node_id, 2);
        assert_eq!(c.node.api_listen.to_string(), "127.0.0.1:9002");
        assert_eq!(c.node.snapshot_every_entries, 6);
        assert!(!c.node.bootstrap, "join = true from the file");
        let c = load(
            flags(&[
                "--id",
                "1",
                "--api-listen",
                "127.0.0.1:9003",
                "--snapshot-every-entries",
                "7",
                "--join=false",
                "--peer",
                "1=h:1,h:2",
            ]),
            Some(path),
            &e,
        )
        .expect("valid");
        assert_eq!(c.node.node_id, 1);
        assert_eq!(c.node.api_listen.to_string(), "127.0.0.1:9003");
        assert_eq!(c.node.snapshot_every_entries, 7);
        assert!(c.node.bootstrap, "--join=false beats the file");
        assert_eq!(c.node.peers.len(), 1, "flags replace the whole peer list");
    }

    #[test]
    fn the_config_file_may_come_from_the_environment() {
        let (_d, path) = file(BASE);
        let e = env(&[(CONFIG_ENV, path.to_str().expect("utf-8"))]);
        let c = load(flags(&[]), None, &e).expect("valid");
        assert_eq!(c.file, Some(path));
        assert_eq!(c.node.node_id, 1);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_origin() {
        let (_d, path) = file(&format!(
            "{BASE}[raft]\nheartbeat = \"5ms\"\nelection_timeout_max = \"soon\"\n"
        ));
        let e = env(&[("LEASEHOLD_SNAPSHOT_EVERY_ENTRIES", "0")]);
        let errors = load(flags(&["--id", "0"]), Some(path.clone()), &e).expect_err("invalid");
        let got = lines(&errors);
        let p = path.display();
        assert_eq!(
            got,
            [
                format!("raft.election_timeout_max: invalid duration \"soon\": expected e.g. 10s, 500ms, 2m, 1m30s (file {p} line 8)"),
                "node.id: must be non-zero (flag --id)".to_string(),
                format!("peers: this node's id 0 is not in the peer list (a node that is not a founding member needs --join) (file {p} line 2)"),
                format!("raft.heartbeat: must be at least 10 ms (is 5 ms) (file {p} line 7)"),
                "snapshot.every_entries: must be positive (env LEASEHOLD_SNAPSHOT_EVERY_ENTRIES)".to_string(),
            ]
        );
    }

    #[test]
    fn two_bad_keys_give_two_lines() {
        let (_d, path) = file(&format!(
            "{BASE}[raft]\nheartbeat = \"1ms\"\n[snapshot]\nevery_entries = 0\n"
        ));
        let errors = load(flags(&[]), Some(path), &Env::new()).expect_err("invalid");
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            [Some("raft.heartbeat"), Some("snapshot.every_entries")]
        );
    }

    #[test]
    fn missing_required_settings_name_all_three_sources() {
        let errors = load(flags(&[]), None, &Env::new()).expect_err("nothing set");
        assert_eq!(
            lines(&errors),
            [
                "node.id: required: set --id, LEASEHOLD_ID or `node.id` in the config file",
                "node.data_dir: required: set --data-dir, LEASEHOLD_DATA_DIR or `node.data_dir` in the config file",
                "peers: required: set --peer, LEASEHOLD_PEERS or `peers` in the config file",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name_file_and_line() {
        let (_d, path) = file(&format!(
            "{BASE}colour = \"blue\"\n[raft]\nheartbeet = \"100ms\"\n[metrics]\nx = 1\n"
        ));
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("unknown");
        let p = path.display();
        assert_eq!(
            lines(&errors),
            [
                format!("node.colour: unknown key (file {p} line 6)"),
                format!("raft.heartbeet: unknown key (file {p} line 8)"),
                format!("metrics: unknown key (file {p} line 9)"),
            ]
        );
    }

    #[test]
    fn peers_under_a_section_get_a_hint() {
        let (_d, path) = file("[node]\nid = 1\ndata_dir = \"/x\"\npeers = [\"1=a:1,a:2\"]\n");
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("misplaced");
        assert_eq!(
            lines(&errors)[0],
            format!(
                "node.peers: unknown key; `peers` is a top-level key: move it before the first [section] (file {} line 4)",
                path.display()
            )
        );
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let (_d, path) = file("peers = []\n[node]\nid = 1\ndata_dir = \"/tmp/x\n");
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("malformed");
        let first = errors.first().expect("an error").to_string();
        assert!(first.starts_with("malformed TOML: "), "{first}");
        assert!(
            first.ends_with(&format!("(file {} line 4)", path.display())),
            "{first}"
        );
        let (_d, path) = file("[node\nid = 1\n");
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("malformed");
        assert!(errors[0].to_string().contains("line 1)"), "{:?}", errors);
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        let errors = load(
            flags(&[]),
            Some("/nonexistent/leasehold.toml".into()),
            &Env::new(),
        )
        .expect_err("missing file");
        assert!(errors[0]
            .to_string()
            .starts_with("cannot read the config file: "));
    }

    #[test]
    fn peers_are_strings_or_tables_and_env_lists_them() {
        let (_d, path) = file(
            r#"
[node]
id = 2
data_dir = "/tmp/x"
[tls]
plaintext = true
[[peers]]
id = 1
raft = "h1:7101"
api = "h1:7001"
[[peers]]
id = 2
raft = "h2:7101"
api = "h2:7001"
"#,
        );
        let c = load(flags(&[]), Some(path), &Env::new()).expect("valid");
        let got: Vec<_> = c
            .node
            .peers
            .iter()
            .map(|p| (p.id, p.node.raft_addr.as_str(), p.node.api_addr.as_str()))
            .collect();
        assert_eq!(got, [(1, "h1:7101", "h1:7001"), (2, "h2:7101", "h2:7001")]);
        let e = env(&[
            ("LEASEHOLD_ID", "3"),
            ("LEASEHOLD_DATA_DIR", "/tmp/x"),
            ("LEASEHOLD_PEERS", "1=a:1,a:2; 3=c:1,c:2  2=b:1,b:2"),
            ("LEASEHOLD_PLAINTEXT", "true"),
        ]);
        let c = load(flags(&[]), None, &e).expect("valid");
        let ids: Vec<_> = c.node.peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 3, 2]);
        let (_d, path) = file(
            "peers = [\"1=a:1,a:2\", { id = 2, raft = \"b:1\" }, { id = 3, raft = \"c:1\", api = \"c:2\", port = 1 }]\n[node]\nid = 1\ndata_dir = \"/x\"\n",
        );
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("bad peer");
        assert_eq!(
            lines(&errors),
            [format!(
                "peers: entry 2: missing `api` (file {} line 1)",
                path.display()
            )]
        );
    }

    #[test]
    fn durations_in_the_file_are_strings_with_units() {
        let (_d, path) = file(&format!(
            "{BASE}[raft]\nheartbeat = \"0.15s\"\nelection_timeout_min = \"1s\"\nelection_timeout_max = \"1.5s\"\n[unsafe_test]\nclock_jump = \"2s\"\n"
        ));
        let c = load(flags(&[]), Some(path), &Env::new()).expect("valid");
        assert_eq!(
            c.node.timing,
            RaftTiming {
                heartbeat_ms: 150,
                election_timeout_ms_min: 1_000,
                election_timeout_ms_max: 1_500,
            }
        );
        assert_eq!(c.unsafe_test_clock_jump_ms, 2_000);
        let (_d, path) = file(&format!("{BASE}[raft]\nheartbeat = 100\n"));
        let errors = load(flags(&[]), Some(path), &Env::new()).expect_err("bare number");
        assert!(
            errors[0].to_string().starts_with(
                "raft.heartbeat: expected a duration string such as \"600ms\" or \"1.5s\", found integer"
            ),
            "{:?}",
            errors
        );
        // Flags and variables take milliseconds or a duration.
        let c = load(
            flags(&[
                "--election-timeout-ms-max",
                "2s",
                "--data-dir",
                "/x",
                "--plaintext",
            ]),
            None,
            &env(&[("LEASEHOLD_ID", "1"), ("LEASEHOLD_PEERS", "1=a:1,a:2")]),
        )
        .expect("valid");
        assert_eq!(c.node.timing.election_timeout_ms_max, 2_000);
    }

    #[test]
    fn the_samples_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster/config");
        for id in 1..=3u64 {
            let path = dir.join(format!("node{id}.toml"));
            // As up.sh starts them: TLS files as flags.
            let (cert, key) = (format!("n{id}.pem"), format!("n{id}-key.pem"));
            let tls = [
                "--tls-ca-cert",
                "ca.pem",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ];
            let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("no TLS");
            assert_eq!(
                errors[0].key.as_deref(),
                Some("tls"),
                "{:?}",
                lines(&errors)
            );
            let c = load(flags(&tls), Some(path.clone()), &Env::new())
                .unwrap_or_else(|e| panic!("{}: {:?}", path.display(), lines(&e)));
            assert_eq!(c.node.node_id, id);
            assert_eq!(c.node.raft_listen.to_string(), format!("127.0.0.1:710{id}"));
            assert_eq!(c.node.api_listen.to_string(), format!("127.0.0.1:700{id}"));
            assert_eq!(c.node.peers.len(), 3);
            assert!(c.node.bootstrap);
            assert_eq!(c.node.timing, RaftTiming::default());
            let tls = c.node.tls.as_ref().expect("the samples run TLS");
            assert_eq!(tls.cert, PathBuf::from(&cert), "{tls:?}");
            assert!(!c.node.plaintext);
            assert_eq!(
                c.node.me().map(|p| p.node.api_addr.clone()),
                Some(format!("127.0.0.1:700{id}"))
            );
        }
    }

    #[test]
    fn transport_security_is_tls_files_or_explicit_plaintext() {
        let base = BASE.replacen("tls.plaintext = true", "", 1);
        let (_d, path) = file(&base);
        let errors = load(flags(&[]), Some(path.clone()), &Env::new()).expect_err("neither");
        let got = lines(&errors);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("tls: neither TLS nor plaintext")
                && got[0].contains("--plaintext")
                && got[0].contains("--tls-cert"),
            "{got:?}"
        );
        let c = load(flags(&["--plaintext"]), Some(path.clone()), &Env::new()).expect("flag");
        assert!(c.node.plaintext && c.node.tls.is_none());
        let e = env(&[("LEASEHOLD_PLAINTEXT", "true")]);
        assert!(
            load(flags(&[]), Some(path.clone()), &e)
                .expect("env")
                .node
                .plaintext
        );

        let tls_env = env(&[
            ("LEASEHOLD_TLS_CA_CERT", "/t/ca.pem"),
            ("LEASEHOLD_TLS_CERT", "/t/node-1.pem"),
            ("LEASEHOLD_TLS_KEY", "/t/node-1-key.pem"),
        ]);
        let c = load(
            flags(&["--tls-key", "/f/key.pem"]),
            Some(path.clone()),
            &tls_env,
        )
        .expect("TLS");
        let tls = c.node.tls.expect("tls");
        assert_eq!(tls.ca_cert, PathBuf::from("/t/ca.pem"));
        assert_eq!(tls.key, PathBuf::from("/f/key.pem"), "flag beats env");

        let (_d2, with_file) = file(&format!(
            "{base}[tls]\nca_cert = \"ca.pem\"\nplaintext = true\n"
        ));
        let got =
            lines(&load(flags(&[]), Some(with_file.clone()), &Env::new()).expect_err("partial"));
        let p = with_file.display();
        assert_eq!(
            got,
            [
                format!("tls.cert: required with tls.ca_cert: TLS needs tls.ca_cert, tls.cert and tls.key (set --tls-cert, LEASEHOLD_TLS_CERT or `tls.cert` in the config file) (file {p} line 7)"),
                format!("tls.key: required with tls.ca_cert: TLS needs tls.ca_cert, tls.cert and tls.key (set --tls-key, LEASEHOLD_TLS_KEY or `tls.key` in the config file) (file {p} line 7)"),
            ]
        );
        let both = load(
            flags(&["--tls-ca-cert", "a", "--tls-cert", "b", "--tls-key", "c"]),
            Some(with_file.clone()),
            &Env::new(),
        )
        .expect_err("TLS and plaintext");
        assert_eq!(
            lines(&both),
            [format!("tls.plaintext: cannot be combined with TLS certificates: choose one (file {p} line 8)")]
        );
    }

    #[test]
    fn every_key_has_a_distinct_variable_and_flag() {
        for (i, a) in KEYS.iter().enumerate() {
            assert!(a.2.starts_with("LEASEHOLD_"), "{a:?}");
            assert!(a.3.starts_with("--"), "{a:?}");
            for b in &KEYS[i + 1..] {
                assert!(a.1 != b.1 && a.2 != b.2 && a.3 != b.3, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn limits_are_layered_and_checked() {
        let (_d, path) = file(&format!(
            "{BASE}[limits]\nconnections_max = 50\nwatch_stall_timeout = \"2s\"\nwaiters_max = 7\n"
        ));
        let e = env(&[("LEASEHOLD_WAITERS_MAX", "8")]);
        let c = load(
            flags(&["--watch-streams-per-client-max", "3"]),
            Some(path.clone()),
            &e,
        )
        .expect("valid");
        let l = c.node.limits;
        assert_eq!(l.connections_max, 50, "file");
        assert_eq!(l.watch_stall_timeout_ms, 2_000, "file duration");
        assert_eq!(l.waiters_max, 8, "env beats file");
        assert_eq!(l.watch_streams_per_client_max, 3, "flag");
        assert_eq!(
            l.keepalive_streams_max,
            leasehold_server::limits::ApiLimits::default().keepalive_streams_max,
            "default"
        );
        let errors = load(
            flags(&["--connection-idle-timeout-ms", "5"]),
            Some(path),
            &e,
        )
        .expect_err("too short");
        let text = lines(&errors).join("\n");
        assert!(text.contains("limits.connection_idle_timeout"), "{text}");
        assert!(text.contains("at least 100 ms"), "{text}");
    }
}
