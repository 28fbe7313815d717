//! [`ClientBuilder`]: the client's settings, with defaults.

use std::time::Duration;

use crate::client::Client;
use crate::deadline::HolderClock;
use crate::error::ClientError;

/// Default bound on one call, retries included.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default bound on one attempt at one node (a hung node costs this much).
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default bound on opening a TCP connection to a node.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Default first pause after every node failed once.
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(50);
/// Default longest pause between rounds of attempts.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(1);
/// Default client name sent with sessions.
pub const CLIENT_NAME_DEFAULT: &str = "leasehold-client";

/// Longest bearer token the client sends, in bytes (the servers' limit).
pub const TOKEN_BYTES_MAX: usize = 256;

/// A bearer token; never printed (its `Debug` is redacted), so that
/// settings holding one can derive `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(crate) String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Every setting of a [`Client`].
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    /// Node addresses, `host:port` or `http://host:port`.
    pub(crate) endpoints: Vec<String>,
    /// Client name used by one-call leases.
    pub(crate) client_name: String,
    /// Drift bound and margin of holder deadlines.
    pub(crate) clock: HolderClock,
    /// Bound on one call, retries included (an acquire's wait is added).
    pub(crate) call_timeout: Duration,
    /// Bound on one attempt at one node (an acquire's wait is added).
    pub(crate) attempt_timeout: Duration,
    /// Bound on opening a TCP connection.
    pub(crate) connect_timeout: Duration,
    /// First pause between rounds of attempts.
    pub(crate) backoff_initial: Duration,
    /// Longest pause between rounds of attempts.
    pub(crate) backoff_max: Duration,
    /// TLS of the connections (`https://`); `None`: plaintext (`http://`).
    pub(crate) tls: Option<ClientTls>,
    /// Bearer token sent with every call (`None`: none, for an open API).
    pub(crate) token: Option<Token>,
}

/// The directory under a data directory where [`ClientTls::resolve`] looks
/// for certificates by default.
pub const DEFAULT_TLS_DIR: &str = "tls";
/// The CA certificate's file name there.
pub const DEFAULT_CA_CERT_FILE: &str = "ca.pem";
/// The client certificate's file name there.
pub const DEFAULT_CLIENT_CERT_FILE: &str = "client.pem";
/// The client key's file name there.
pub const DEFAULT_CLIENT_KEY_FILE: &str = "client-key.pem";

/// Largest PEM file [`ClientTls::load`] reads, in bytes.
pub const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// TLS settings of a client: the CA that signed the nodes' certificates
/// and, optionally, a client certificate to present (nodes verify it
/// against their CA).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM of the CA the nodes' certificates must chain to.
    ca_cert_pem: Vec<u8>,
    /// PEM of the client certificate and its key, if one is presented.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never prints the key.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_cert", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// TLS trusting the CA in `ca_cert_pem`, with no client certificate.
    pub fn new(ca_cert_pem: impl Into<Vec<u8>>) -> Self {
        ClientTls {
            ca_cert_pem: ca_cert_pem.into(),
            identity: None,
        }
    }

    /// Presents this client certificate (PEM) and key (PEM).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the CA certificate and, when both are given, a client
    /// certificate and key from PEM files; checks that they parse.
    pub fn load(
        ca_cert: &std::path::Path,
        client_cert: Option<&std::path::Path>,
        client_key: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let read = |what: &str, path: &std::path::Path| -> Result<Vec<u8>, ClientError> {
            let bad = |e: std::io::Error| {
                ClientError::Config(format!("cannot read {what} {}: {e}", path.display()))
            };
            let len = std::fs::metadata(path).map_err(bad)?.len();
            if len > PEM_BYTES_MAX {
                return Err(ClientError::Config(format!(
                    "{what} {} is larger than {PEM_BYTES_MAX} bytes",
                    path.display()
                )));
            }
            std::fs::read(path).map_err(bad)
        };
        let mut tls = ClientTls::new(read("CA certificate", ca_cert)?);
        match (client_cert, client_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(read("client certificate", cert)?, read("client key", key)?);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ClientError::Config(
                    "a client certificate needs its key (client key missing)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ClientError::Config(
                    "a client key needs its certificate (client certificate missing)".into(),
                ))
            }
        }
        tls.tonic_config()?;
        Ok(tls)
    }

    /// The TLS a command-line client asks for, as `leasehold` and
    /// `leasehold-gfs` resolve their flags: `plaintext` → none (and no TLS
    /// file may be given); a CA → TLS with it (and the client certificate
    /// and key if given); nothing → `DATA_DIR/tls/ca.pem` if it exists, with
    /// `client.pem` and `client-key.pem` beside it when both exist (the
    /// layout `leasehold certs init` writes and cluster/up.sh uses), else
    /// plaintext.
    pub fn resolve(
        ca_cert: Option<&std::path::Path>,
        client_cert: Option<&std::path::Path>,
        client_key: Option<&std::path::Path>,
        plaintext: bool,
        data_dir: &std::path::Path,
    ) -> Result<Option<ClientTls>, ClientError> {
        let any_file = ca_cert.is_some() || client_cert.is_some() || client_key.is_some();
        if plaintext {
            if any_file {
                return Err(ClientError::Config(
                    "--plaintext excludes --ca-cert, --client-cert and --client-key \
                     (or their LEASEHOLD_* variables)"
                        .into(),
                ));
            }
            return Ok(None);
        }
        if let Some(ca_cert) = ca_cert {
            return ClientTls::load(ca_cert, client_cert, client_key).map(Some);
        }
        if any_file {
            return Err(ClientError::Config(
                "--client-cert and --client-key need --ca-cert (the cluster's CA)".into(),
            ));
        }
        let dir = data_dir.join(DEFAULT_TLS_DIR);
        let ca_cert = dir.join(DEFAULT_CA_CERT_FILE);
        if !ca_cert.exists() {
            return Ok(None);
        }
        let cert = dir.join(DEFAULT_CLIENT_CERT_FILE);
        let key = dir.join(DEFAULT_CLIENT_KEY_FILE);
        let identity = cert.exists() && key.exists();
        ClientTls::load(
            &ca_cert,
            identity.then_some(cert.as_path()),
            identity.then_some(key.as_path()),
        )
        .map(Some)
    }

    /// tonic's configuration; fails when the PEM does not parse.
    pub(crate) fn tonic_config(&self) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_cert_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        // Building a connector parses everything: report bad PEM now.
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(config.clone())
            .map_err(|e| ClientError::Config(format!("TLS: {}", crate::error::chain(&e))))?;
        Ok(config)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: Vec::new(),
            client_name: CLIENT_NAME_DEFAULT.to_string(),
            clock: HolderClock::default(),
            call_timeout: CALL_TIMEOUT_DEFAULT,
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            backoff_initial: BACKOFF_INITIAL_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            tls: None,
            token: None,
        }
    }
}

/// Builds a [`Client`] with non-default settings.
///
/// ```
/// # use std::time::Duration;
/// # use leasehold_client::ClientBuilder;
/// let builder = ClientBuilder::new(["127.0.0.1:7001", "127.0.0.1:7002"])
///     .drift_ppm(20_000)
///     .margin(Duration::from_millis(10))
///     .call_timeout(Duration::from_secs(5));
/// // builder.connect().await? gives the client.
/// # drop(builder);
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The settings being built.
    config: ClientConfig,
}

impl ClientBuilder {
    /// A builder for a client of the nodes at `endpoints` (`host:port`,
    /// `http://` optional), every other setting at its default.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            config: ClientConfig {
                endpoints: endpoints.into_iter().map(Into::into).collect(),
                ..ClientConfig::default()
            },
        }
    }

    /// Drift bound ρ of holder deadlines, in parts per million (default
    /// 10,000 = 1%; clamped to 100,000). The client raises it to the
    /// cluster's `drift_ppm` whenever an answer reports a larger one.
    pub fn drift_ppm(mut self, drift_ppm: u32) -> Self {
        self.config.clock = HolderClock::new(drift_ppm, self.config.clock.margin());
        self
    }

    /// Scheduling margin subtracted from holder deadlines (default 5 ms).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.config.clock = HolderClock::new(self.config.clock.drift_ppm(), margin);
        self
    }

    /// Client name of one-call leases (sessions name themselves).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.config.client_name = name.into();
        self
    }

    /// Bound on one call, retries across nodes included (default 10 s). An
    /// acquire that waits gets its wait on top.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Bound on one attempt at one node before trying another (default 3 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout;
        self
    }

    /// Bound on opening a TCP connection to a node (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Bearer token sent with every call (`authorization: Bearer <token>`),
    /// for a cluster that requires tokens; checked when the client is
    /// built (1 to [`TOKEN_BYTES_MAX`] printable ASCII characters). The
    /// token names a principal whose role and prefixes the servers check.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(Token(token.into()));
        self
    }

    /// [`ClientBuilder::token`] when `token` is some; nothing otherwise.
    pub fn maybe_token(mut self, token: Option<&Token>) -> Self {
        if let Some(t) = token {
            self.config.token = Some(t.clone());
        }
        self
    }

    /// Backoff between rounds of attempts: from `initial`, doubling, at
    /// most `max` (default 50 ms to 1 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max.max(initial);
        self
    }

    /// Connects over TLS (`https://`), trusting `tls`'s CA and presenting
    /// its client certificate if any. Without it the client speaks
    /// plaintext (`http://`), which only a node started with plaintext
    /// accepts.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Connects: finds a node that answers (and the leader, when one is
    /// known) within the call timeout, and starts the keepalive task.
    pub async fn connect(self) -> Result<Client, ClientError> {
        Client::from_config(self.config).await
    }

    /// Like [`connect`](Self::connect) but does not contact any node: the
    /// first call finds the leader. Needs a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Client, ClientError> {
        Client::from_config_lazy(self.config)
    }
}
