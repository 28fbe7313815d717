//! Connections to the cluster: endpoint addresses, one lazily connected
//! channel per node, the known leader, and unary calls retried across nodes
//! with capped backoff inside a per-call deadline.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use leasehold_proto::LEADER_METADATA_KEY;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::config::{ClientConfig, TOKEN_BYTES_MAX};
use crate::error::{diagnose, is_connection_failure, ClientError};

/// The gRPC stub every call uses: a channel whose requests carry the
/// client's credentials.
pub(crate) type Stub = LeaseholdClient<InterceptedService<Channel, Credentials>>;

/// The metadata key of the bearer token.
const AUTHORIZATION_METADATA_KEY: &str = "authorization";

/// Adds `authorization: Bearer <token>` to every request (nothing without
/// a token). The value is marked sensitive (never indexed by HTTP/2 header
/// compression) and never printed.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    /// The whole metadata value, `Bearer <token>`.
    authorization: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.authorization.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("Credentials")
            .field("token", &token)
            .finish()
    }
}

impl Credentials {
    /// Credentials presenting `token` (checked: 1 to [`TOKEN_BYTES_MAX`]
    /// visible ASCII characters), or none.
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let Some(token) = token else {
            return Ok(Credentials::default());
        };
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return Err(ClientError::Config(format!(
                "token: must be 1 to {TOKEN_BYTES_MAX} bytes (is {})",
                token.len()
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Config(
                "token: must be printable ASCII without spaces".into(),
            ));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Config("token: not a valid metadata value".into()))?;
        value.set_sensitive(true);
        Ok(Credentials {
            authorization: Some(value),
        })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_METADATA_KEY, value.clone());
        }
        Ok(request)
    }
}

/// Normalizes an endpoint given as `host:port` or `http://host:port` to the
/// URI form tonic connects to (`http://host:port`, no trailing slash).
pub fn normalize_endpoint(addr: &str) -> Result<String, ClientError> {
    let addr = addr.trim().trim_end_matches('/');
    if addr.is_empty() {
        return Err(ClientError::Config("empty endpoint".into()));
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let rest = uri
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    if rest.is_empty() || rest.contains('/') {
        return Err(ClientError::Config(format!(
            "endpoint {addr:?} is not of the form host:port"
        )));
    }
    let parsed = uri
        .parse::<tonic::transport::Uri>()
        .map_err(|e| ClientError::Config(format!("endpoint {addr:?}: {e}")))?;
    if !matches!(parsed.host(), Some(h) if !h.is_empty()) || parsed.port_u16().is_none() {
        return Err(ClientError::Config(format!(
            "endpoint {addr:?} is not of the form host:port"
        )));
    }
    Ok(uri)
}

/// The leader's client address carried by a follower's `UNAVAILABLE`
/// answer in the `x-leasehold-leader` metadata, normalized; `None` when
/// absent, empty or malformed.
pub fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?;
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    normalize_endpoint(text).ok()
}

/// Capped exponential backoff: `initial`, doubling, at most `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// The next pause.
    next: Duration,
    /// The cap.
    max: Duration,
}

impl Backoff {
    /// A backoff from `initial` (at least 1 ms) doubling up to `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial.max(Duration::from_millis(1)).min(max),
            max,
        }
    }

    /// The next pause.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let p = self.next;
        self.next = p.saturating_mul(2).min(self.max);
        p
    }

    /// Starts again from `initial` after a success.
    pub(crate) fn reset(&mut self, initial: Duration) {
        self.next = initial.max(Duration::from_millis(1)).min(self.max);
    }
}

/// Mutable routing state.
#[derive(Debug, Default)]
struct Routing {
    /// The leader's normalized client address, when known.
    leader: Option<String>,
    /// Where the next round starts among the configured endpoints, so that
    /// consecutive calls do not all hammer the first dead node.
    rotation: usize,
    /// One channel per address ever used (configured or learned).
    channels: HashMap<String, Channel>,
}

/// Channels to every node and the routing rules.
#[derive(Debug)]
pub(crate) struct Transport {
    /// Settings (timeouts, backoff).
    pub(crate) config: ClientConfig,
    /// The configured endpoints, normalized.
    endpoints: Vec<String>,
    /// Leader, rotation, channels.
    routing: Mutex<Routing>,
    /// What every request carries to say who calls.
    credentials: Credentials,
}

impl Transport {
    /// A transport over `config.endpoints` (normalized, at least one).
    pub(crate) fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let mut endpoints = Vec::new();
        for e in &config.endpoints {
            let n = normalize_endpoint(e)?;
            if !endpoints.contains(&n) {
                endpoints.push(n);
            }
        }
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        let credentials = Credentials::new(config.token.as_ref().map(|t| t.0.as_str()))?;
        Ok(Transport {
            config,
            endpoints,
            routing: Mutex::new(Routing::default()),
            credentials,
        })
    }

    fn routing(&self) -> MutexGuard<'_, Routing> {
        self.routing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configured endpoints, normalized.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The leader's address, when known.
    pub(crate) fn leader(&self) -> Option<String> {
        self.routing().leader.clone()
    }

    /// Records (or forgets) the leader.
    pub(crate) fn set_leader(&self, leader: Option<String>) {
        let mut r = self.routing();
        if r.leader != leader {
            tracing::debug!(?leader, "leader changed");
            r.leader = leader;
        }
    }

    /// Forgets the leader if it is `addr` (it just failed).
    pub(crate) fn forget_leader(&self, addr: &str) {
        let mut r = self.routing();
        if r.leader.as_deref() == Some(addr) {
            r.leader = None;
        }
    }

    /// The stub for `addr` (a normalized address), on a cached lazily
    /// connected channel.
    pub(crate) fn stub(&self, addr: &str) -> Result<Stub, ClientError> {
        let mut r = self.routing();
        if let Some(c) = r.channels.get(addr) {
            return Ok(stub_on(c.clone(), self.credentials.clone()));
        }
        let authority = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        let uri = match &self.config.tls {
            Some(_) => format!("https://{authority}"),
            None if addr.starts_with("https://") => {
                return Err(ClientError::Config(format!(
                    "endpoint {addr:?} asks for TLS but no CA certificate is configured"
                )))
            }
            None => format!("http://{authority}"),
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| ClientError::Config(format!("endpoint {addr:?}: {e}")))?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint
                .tls_config(tls.tonic_config()?)
                .map_err(|e| ClientError::Config(format!("TLS: {}", crate::error::chain(&e))))?;
        }
        let endpoint = endpoint
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        r.channels.insert(addr.to_string(), channel.clone());
        Ok(stub_on(channel, self.credentials.clone()))
    }

    /// The order in which one round tries nodes: the leader first when
    /// known, then every configured endpoint starting at the rotation.
    pub(crate) fn round(&self) -> Vec<String> {
        let mut r = self.routing();
        let n = self.endpoints.len();
        let start = r.rotation % n;
        r.rotation = r.rotation.wrapping_add(1);
        let mut order = Vec::with_capacity(n + 1);
        if let Some(l) = &r.leader {
            order.push(l.clone());
        }
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            if !order.contains(e) {
                order.push(e.clone());
            }
        }
        order
    }

    /// Runs `call` against the leader (or any node: followers forward unary
    /// calls), retrying on `UNAVAILABLE` and connection failures across the
    /// nodes with capped backoff until `budget` is spent. A follower's
    /// leader hint is followed at once. Each attempt may take at most
    /// `attempt_timeout` (then it counts as a connection failure).
    ///
    /// Safe only for calls that may be repeated: every unary call of the
    /// API is idempotent per session (a repeated acquire answers the lease
    /// already held), except a one-call lease, whose duplicate private
    /// session simply expires.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        budget: Duration,
        attempt_timeout: Duration,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Stub, String) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let deadline = started + budget;
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut last = String::from("no node tried");
        loop {
            let mut queue: VecDeque<String> = self.round().into();
            let mut tried: Vec<String> = Vec::new();
            while let Some(addr) = queue.pop_front() {
                if tried.contains(&addr) {
                    continue;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tried.push(addr.clone());
                let stub = self.stub(&addr)?;
                let limit = attempt_timeout.min(deadline - now);
                match tokio::time::timeout(limit, call(stub, addr.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(status)) => {
                        let hint = leader_hint(&status);
                        let tls = self.config.tls.is_some();
                        if let Some(message) = diagnose(&status, &addr, tls).await {
                            return Err(ClientError::Config(message));
                        }
                        if !is_connection_failure(&status) {
                            return Err(status.into());
                        }
                        tracing::debug!(what, node = %addr, code = ?status.code(),
                            message = status.message(), ?hint, "call failed; trying elsewhere");
                        last = format!("{addr}: {}", status.message());
                        match hint {
                            Some(h) if h != addr => {
                                self.set_leader(Some(h.clone()));
                                if !tried.contains(&h) {
                                    queue.push_front(h);
                                }
                            }
                            _ => self.forget_leader(&addr),
                        }
                    }
                    Err(_) => {
                        tracing::debug!(what, node = %addr, ?limit, "attempt timed out");
                        last = format!("{addr}: no answer within {limit:?}");
                        self.forget_leader(&addr);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unavailable {
                    message: format!("{what}: no node answered within {budget:?} (last: {last})"),
                    after: now - started,
                });
            }
            let pause = backoff.next_pause().min(deadline - now);
            tokio::time::sleep(pause).await;
        }
    }
}

/// A stub on `channel` that refuses to send a request the server would
/// refuse as oversize (`request_bytes_max`).
fn stub_on(channel: tonic::transport::Channel, credentials: Credentials) -> Stub {
    LeaseholdClient::with_interceptor(channel, credentials)
        .max_encoding_message_size(leasehold_proto::REQUEST_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic::Code;

    #[test]
    fn endpoints_normalize() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7001").ok().as_deref(),
            Some("http://127.0.0.1:7001")
        );
        assert_eq!(
            normalize_endpoint(" http://node-1:7001/ ").ok().as_deref(),
            Some("http://node-1:7001")
        );
        assert_eq!(
            normalize_endpoint("https://node-1:7001").ok().as_deref(),
            Some("https://node-1:7001")
        );
        for bad in ["", "  ", "http://", "host:1/path", "a b:1", "host", "host:"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn unavailable_with(value: &'static str) -> Status {
        let mut md = MetadataMap::new();
        md.insert(LEADER_METADATA_KEY, MetadataValue::from_static(value));
        Status::with_metadata(Code::Unavailable, "not the leader", md)
    }

    #[test]
    fn leader_hint_reads_the_metadata() {
        assert_eq!(
            leader_hint(&unavailable_with("127.0.0.1:7002")).as_deref(),
            Some("http://127.0.0.1:7002")
        );
        assert_eq!(
            leader_hint(&unavailable_with("http://10.0.0.3:7003")).as_deref(),
            Some("http://10.0.0.3:7003")
        );
        assert_eq!(leader_hint(&unavailable_with("")), None);
        assert_eq!(leader_hint(&unavailable_with("not an/address")), None);
        assert_eq!(leader_hint(&Status::unavailable("no leader")), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let got: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(got, [50, 100, 200, 300, 300]);
        b.reset(Duration::from_millis(50));
        assert_eq!(b.next_pause(), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn rounds_put_the_leader_first_and_rotate() {
        let config = ClientConfig {
            endpoints: vec![
                "a:1".into(),
                "b:1".into(),
                "http://c:1".into(),
                "a:1".into(),
            ],
            ..ClientConfig::default()
        };
        let t = Transport::new(config).expect("valid endpoints");
        assert_eq!(t.endpoints().len(), 3);
        assert_eq!(t.round(), ["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(t.round(), ["http://b:1", "http://c:1", "http://a:1"]);
        t.set_leader(Some("http://c:1".into()));
        assert_eq!(t.round(), ["http://c:1", "http://a:1", "http://b:1"]);
        t.forget_leader("http://c:1");
        assert_eq!(t.leader(), None);
    }

    #[tokio::test]
    async fn unreachable_nodes_give_unavailable_within_the_budget() {
        // Port 1 on loopback refuses connections at once.
        let config = ClientConfig {
            endpoints: vec!["127.0.0.1:1".into()],
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..ClientConfig::default()
        };
        let t = Transport::new(config).expect("valid endpoints");
        let started = Instant::now();
        let r: Result<(), ClientError> = t
            .call(
                "status",
                Duration::from_millis(300),
                Duration::from_secs(1),
                |mut stub, _| async move {
                    stub.status(leasehold_proto::v1::StatusRequest {})
                        .await
                        .map(|_| ())
                },
            )
            .await;
        let e = r.expect_err("nothing listens");
        assert!(e.is_retryable(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
