//! The client commands: acquire, release, get, list, watch, recall,
//! membership, status.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use leasehold_client::{AcquireOptions, Client, ClientBuilder, ClientTls, LeaseStatus, Mode};

use crate::duration::parse_duration;
use crate::exit;
use crate::output::{self, Format};
use crate::signal::wait_for_shutdown_signal;

/// Default endpoints when neither `--endpoints` nor `LEASEHOLD_ENDPOINTS`
/// is given: the ports `cluster/up.sh` and `leasehold dev` use.
pub const ENDPOINTS_DEFAULT: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// How to reach the cluster and how to print; shared by client commands,
/// accepted before or after the subcommand.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Client API endpoints, comma separated (any nodes of the cluster).
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_ENDPOINTS",
        value_delimiter = ',',
        default_value = ENDPOINTS_DEFAULT
    )]
    pub endpoints: Vec<String>,
    /// Output format: aligned table, or one JSON object per line (errors
    /// then too: one JSON object on stderr).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Bound on each request, retries across nodes included (a --wait
    /// comes on top), e.g. 10s, 1.5s, 500ms.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// CA certificate (PEM) the nodes' certificates must be signed by:
    /// connect over TLS. Default: $LEASEHOLD_DATA_DIR/tls/ca.pem (data dir
    /// default ./.leasehold-data) if it exists, with client.pem and
    /// client-key.pem beside it (what cluster/up.sh generates).
    #[arg(long, global = true, env = "LEASEHOLD_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) presented to the nodes (with --client-key).
    #[arg(long, global = true, env = "LEASEHOLD_CLIENT_CERT", value_name = "PEM")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, global = true, env = "LEASEHOLD_CLIENT_KEY", value_name = "PEM")]
    pub client_key: Option<PathBuf>,
    /// Connect without TLS (only nodes started with --plaintext accept it);
    /// skips the default CA lookup.
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_PLAINTEXT",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_parser = crate::config::parse_bool
    )]
    pub plaintext: bool,
    /// Bearer token sent with every request (for a cluster that requires
    /// tokens). Default: the content of --token-file, else of
    /// $LEASEHOLD_DATA_DIR/admin.token (./.leasehold-data/admin.token) if
    /// that exists, as `cluster/up.sh` and `leasehold dev` write it.
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the bearer token (its first line).
    #[arg(long, global = true, env = "LEASEHOLD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Where client commands look for `tls/ca.pem` (and `tls/client.pem`) when
/// no TLS flag is given: `$LEASEHOLD_DATA_DIR`, else this (relative to the
/// working directory), as cluster/up.sh lays it out.
pub const DATA_DIR_DEFAULT: &str = ".leasehold-data";

impl ConnArgs {
    /// The TLS settings the flags ask for (see [`ConnArgs::ca_cert`]);
    /// `None` for plaintext. `data_dir` is where the default lookup goes.
    pub fn tls(&self, data_dir: &Path) -> anyhow::Result<Option<ClientTls>> {
        Ok(ClientTls::resolve(
            self.ca_cert.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
            self.plaintext,
            data_dir,
        )?)
    }

    /// The data directory of the default TLS lookup.
    fn data_dir() -> PathBuf {
        std::env::var_os("LEASEHOLD_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT))
    }

    /// A client builder for the endpoints, with the TLS settings and the
    /// bearer token of this command line.
    pub fn builder(&self) -> anyhow::Result<ClientBuilder> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        let mut builder = ClientBuilder::new(endpoints);
        if let Some(tls) = self.tls(&Self::data_dir())? {
            builder = builder.tls(tls);
        }
        let token = crate::auth::resolve_token(self.token.as_deref(), self.token_file.as_deref())?;
        Ok(match token {
            Some(t) => builder.token(t),
            None => builder,
        })
    }

    /// Connects to the cluster (finding the leader).
    pub async fn connect(&self, client_name: &str) -> anyhow::Result<Client> {
        let client = self
            .builder()?
            .client_name(client_name)
            .call_timeout(self.timeout)
            .attempt_timeout(self.timeout.min(Duration::from_secs(3)))
            .connect()
            .await
            .context("connecting to the cluster")?;
        Ok(client)
    }
}

/// The default holder name: `leasehold-cli/<pid>`.
pub fn default_holder() -> String {
    format!("leasehold-cli/{}", std::process::id())
}

/// Flags of `leasehold acquire`.
#[derive(Args, Debug)]
#[command(after_help = "\
Without --hold, acquire opens a session, acquires, prints the lease and exits: \
nothing renews the session afterwards, so it and the lease expire after the TTL. \
Release earlier with `leasehold release RESOURCE --session HANDLE` (the SESSION \
column as printed: `<id>.<secret>`). \
With --session HANDLE, acquire uses that existing session instead of opening one \
(renewing it once; keep it alive with `leasehold session keepalive HANDLE`). \
With --hold, the lease is renewed until Ctrl-C, then released; a recall \
releases it and exits 0; losing it (the session expired or was closed) exits 9.")]
pub struct AcquireArgs {
    /// The resource to lease.
    pub resource: String,
    /// Shared (reader) lease instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// Session time-to-live (e.g. 10s, 1.5s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
    /// Wait (queued, first come first served) at most this long for the
    /// resource (exit 5 when it stays held); without it, or with 0s, a held
    /// resource fails at once (exit 3).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Client name of the session (shown to others). Default:
    /// leasehold-cli/PID.
    #[arg(long)]
    pub holder: Option<String>,
    /// Acquire in this existing session, `<id>.<secret>` as an earlier
    /// acquire printed it, instead of opening a new one (its TTL and name
    /// stay as they are).
    #[arg(long, value_name = "HANDLE", conflicts_with_all = ["ttl", "holder"])]
    pub session: Option<leasehold_client::SessionHandle>,
    /// Text stored with the lease, shown by get and list.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Keep the lease (renewing it) until Ctrl-C, then release it.
    #[arg(long)]
    pub hold: bool,
}

/// Opens a session for `holder` and acquires `resource` in it; closes the
/// session again if the acquire fails (shared by `acquire` and `run`).
pub async fn open_and_acquire(
    conn: &ConnArgs,
    holder: Option<&str>,
    ttl: Duration,
    resource: &str,
    options: AcquireOptions,
) -> anyhow::Result<(
    leasehold_client::Client,
    leasehold_client::Session,
    leasehold_client::Lease,
)> {
    let holder = holder.map(str::to_string).unwrap_or_else(default_holder);
    let client = conn.connect(&holder).await?;
    let session = client
        .open_session(&holder, ttl)
        .await
        .context("opening a session")?;
    let asked = std::time::Instant::now();
    match session.acquire(resource, options).await {
        Ok(lease) => Ok((client, session, lease)),
        Err(e) => {
            let waited = asked.elapsed();
            let _ = session.close().await;
            match e {
                leasehold_client::ClientError::WaitTimedOut(_) => {
                    Err(wait_timed_out(&client, resource, waited).await.into())
                }
                e => Err(e.into()),
            }
        }
    }
}

/// Adopts the existing session `handle` and acquires `resource` in it; on
/// failure the session is left as it was (it is not ours to close).
pub async fn adopt_and_acquire(
    conn: &ConnArgs,
    handle: leasehold_client::SessionHandle,
    resource: &str,
    options: AcquireOptions,
) -> anyhow::Result<(
    leasehold_client::Client,
    leasehold_client::Session,
    leasehold_client::Lease,
)> {
    let client = conn.connect(&default_holder()).await?;
    let session = client
        .adopt_session(handle)
        .await
        .with_context(|| format!("session {}", handle.id))?;
    let asked = std::time::Instant::now();
    match session.acquire(resource, options).await {
        Ok(lease) => Ok((client, session, lease)),
        Err(e) => {
            let waited = asked.elapsed();
            session.detach();
            match e {
                leasehold_client::ClientError::WaitTimedOut(_) => {
                    Err(wait_timed_out(&client, resource, waited).await.into())
                }
                e => Err(e.into()),
            }
        }
    }
}

/// The error of a wait that timed out after `waited`: the time really
/// waited, and who holds `resource` now (asked after the timeout: the
/// service's own message names neither).
async fn wait_timed_out(client: &Client, resource: &str, waited: Duration) -> exit::Coded {
    // Whole milliseconds: the finer digits are noise.
    let waited = Duration::from_millis(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
    let holders = match client.get(resource).await {
        Ok(state) if state.holders.is_empty() => format!(
            "held until the wait ended, free now ({} waiting)",
            state.waiters
        ),
        Ok(state) => format!("still held by {}", describe_holders(&state.holders)),
        Err(e) => format!("still held (who holds it is unknown: {e})"),
    };
    exit::Coded {
        code: exit::WAIT_TIMED_OUT,
        message: format!(
            "waited {} for {resource}; {holders}",
            crate::duration::format_duration(waited)
        ),
    }
}

/// Holders as a conflict names them: `session 12 ("bob", exclusive,
/// token 13)`, comma separated.
fn describe_holders(holders: &[leasehold_client::LeaseInfo]) -> String {
    holders
        .iter()
        .map(|h| {
            format!(
                "session {} ({:?}, {}, token {})",
                h.session_id, h.client_name, h.mode, h.fencing_token
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Options of an acquire from its flags. A zero `wait` means "do not
/// wait", as no `wait` does (the service would queue for a millisecond).
pub fn acquire_options(
    shared: bool,
    wait: Option<Duration>,
    metadata: Option<&str>,
) -> AcquireOptions {
    AcquireOptions {
        mode: if shared {
            Mode::Shared
        } else {
            Mode::Exclusive
        },
        wait: wait.filter(|w| !w.is_zero()),
        metadata: metadata.unwrap_or_default().as_bytes().to_vec(),
    }
}

/// `leasehold acquire`.
pub async fn acquire(args: AcquireArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let options = acquire_options(args.shared, args.wait, args.metadata.as_deref());
    let adopted = args.session.is_some();
    let (_client, session, lease) = match args.session {
        Some(handle) => adopt_and_acquire(conn, handle, &args.resource, options).await?,
        None => {
            open_and_acquire(
                conn,
                args.holder.as_deref(),
                args.ttl,
                &args.resource,
                options,
            )
            .await?
        }
    };
    output::print(
        conn.output,
        output::ACQUIRED_HEADER,
        &[output::acquired(
            lease.resource(),
            lease.mode(),
            lease.fencing_token(),
            session.ttl(),
            &session.handle(),
        )],
    )?;
    if !args.hold {
        lease.detach();
        session.detach();
        return Ok(exit::OK);
    }
    eprintln!(
        "leasehold: holding {}; Ctrl-C releases it",
        output::printable(&args.resource)
    );
    let code = tokio::select! {
        r = wait_for_shutdown_signal() => { r?; exit::OK }
        status = lease.lost() => match status {
            LeaseStatus::Recalled { reason } => {
                eprintln!(
                    "leasehold: lease on {} recalled ({}); releasing",
                    output::printable(&args.resource),
                    output::printable(&reason)
                );
                exit::OK
            }
            LeaseStatus::Lost { why } => {
                // Nothing left to release: the session expires on its own.
                eprintln!(
                    "leasehold: lease on {} lost: {}",
                    output::printable(&args.resource),
                    output::printable(&why.to_string())
                );
                return Ok(exit::LEASE_LOST);
            }
            LeaseStatus::Held => exit::OK,
        },
    };
    let token = lease.release().await.context("releasing")?;
    if adopted {
        // Someone else's session: left open, to its own keepalive or expiry.
        session.detach();
    } else {
        session.close().await.context("closing the session")?;
    }
    tracing::debug!(token, "released");
    Ok(code)
}

/// Flags of `leasehold release`.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The resource.
    pub resource: String,
    /// The holding session's handle, `<id>.<secret>`, exactly as `acquire`
    /// printed it (the secret proves the session is yours).
    #[arg(long)]
    pub session: leasehold_client::SessionHandle,
}

/// `leasehold release`.
pub async fn release(args: ReleaseArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let token = client.release(&args.session, &args.resource).await?;
    let record = output::Record {
        cells: vec![
            args.resource.clone(),
            args.session.id.to_string(),
            token.to_string(),
        ],
        json: serde_json::json!({
            "resource": args.resource,
            "session_id": args.session.id,
            "fencing_token": token,
            "released": true,
        }),
    };
    output::print(conn.output, &["RELEASED", "SESSION", "TOKEN"], &[record])?;
    Ok(exit::OK)
}

/// Flags of `leasehold get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The resource.
    pub resource: String,
}

/// `leasehold get`.
pub async fn get(args: GetArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let state = client.get(&args.resource).await?;
    match conn.output {
        Format::Json => println!("{}", output::resource_json(&state)),
        Format::Table if state.holders.is_empty() => {
            println!(
                "{}: free ({} waiting)",
                output::printable(&state.resource),
                state.waiters
            );
        }
        Format::Table => {
            let records: Vec<_> = state.holders.iter().map(output::holder).collect();
            print!(
                "{}",
                output::render(Format::Table, output::HOLDER_HEADER, &records)
            );
            println!("waiting: {}", state.waiters);
        }
    }
    Ok(exit::OK)
}

/// Flags of `leasehold list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only resources whose names start with this.
    #[arg(default_value = "")]
    pub prefix: String,
}

/// `leasehold list` (follows every page).
pub async fn list(args: ListArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let resources = client.list(&args.prefix).await?;
    let records: Vec<_> = resources.iter().map(output::listed).collect();
    output::print(conn.output, output::LIST_HEADER, &records)?;
    Ok(exit::OK)
}

/// Flags of `leasehold watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only resources whose names start with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Start from this revision (still in the node's history); default:
    /// only new events.
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
}

/// `leasehold watch`: prints events until Ctrl-C.
pub async fn watch(args: WatchArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    let client = conn.connect(&default_holder()).await?;
    let mut stream = client.watch(&args.prefix, args.from_revision).await?;
    if conn.output == Format::Table {
        print!("{}", output::event_header());
    }
    let stop = wait_for_shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; return Ok(exit::OK); }
            event = stream.next() => match event {
                Some(Ok(e)) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(output::event_line(conn.output, &e).as_bytes())?;
                    out.flush()?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(exit::OK),
            },
        }
    }
}

/// Flags of `leasehold recall`.
#[derive(Args, Debug)]
pub struct RecallArgs {
    /// The resource.
    pub resource: String,
    /// Why (shown to the holders).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `leasehold recall`.
pub async fn recall(args: RecallArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let holders = client.recall(&args.resource, &args.reason).await?;
    let list = if holders.is_empty() {
        "-".to_string()
    } else {
        holders
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let record = output::Record {
        cells: vec![args.resource.clone(), list],
        json: serde_json::json!({ "resource": args.resource, "holders": holders }),
    };
    output::print(conn.output, &["RECALLED", "HOLDERS"], &[record])?;
    Ok(exit::OK)
}

/// Flags of `leasehold membership`.
#[derive(Args, Debug)]
pub struct MembershipArgs {
    /// A voter of the new membership, ID=RAFT_ADDR,API_ADDR; repeat for
    /// every voter. Nodes left out are removed from the cluster.
    #[arg(long = "voter", required = true)]
    pub voters: Vec<leasehold_server::PeerSpec>,
}

/// `leasehold membership`: replaces the voter set.
pub async fn membership(args: MembershipArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let voters: Vec<leasehold_client::Member> = args
        .voters
        .iter()
        .map(|p| leasehold_client::Member {
            node_id: p.id,
            raft_addr: p.node.raft_addr.clone(),
            api_addr: p.node.api_addr.clone(),
            learner: false,
        })
        .collect();
    let now = client.change_membership(&voters).await?;
    let records: Vec<output::Record> = now
        .iter()
        .map(|m| output::Record {
            cells: vec![m.node_id.to_string(), m.raft_addr.clone(), m.api_addr.clone()],
            json: serde_json::json!({ "node_id": m.node_id, "raft_addr": m.raft_addr, "api_addr": m.api_addr }),
        })
        .collect();
    output::print(conn.output, &["VOTER", "RAFT", "API"], &records)?;
    Ok(exit::OK)
}

/// Flags of `leasehold status` (only the global ones).
#[derive(Args, Debug)]
pub struct StatusArgs {}

/// `leasehold status`: every endpoint's own view, then the members and the
/// configuration as the leader (or else the first node that answered) sees
/// them. Exits 6 if none answers.
pub async fn status(_args: StatusArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn
        .builder()?
        .attempt_timeout(conn.timeout.min(Duration::from_secs(3)))
        .connect_lazy()?;
    let views = client.status_all().await;
    let records: Vec<_> = views.iter().map(|(e, v)| output::node(e, v)).collect();
    let best = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .max_by_key(|v| (v.is_leader(), v.term));
    match conn.output {
        Format::Json => output::print(Format::Json, output::STATUS_HEADER, &records)?,
        Format::Table => {
            let mut text = output::render(Format::Table, output::STATUS_HEADER, &records);
            if let Some(view) = best {
                text.push('\n');
                text.push_str(&output::render(
                    Format::Table,
                    output::MEMBER_HEADER,
                    &output::members(view),
                ));
                if let Some(config) = &view.config {
                    text.push('\n');
                    text.push_str(&output::render(
                        Format::Table,
                        output::CONFIG_HEADER,
                        &[output::config(config)],
                    ));
                }
            }
            print!("{text}");
        }
    }
    if views.iter().all(|(_, v)| v.is_err()) {
        if let Some((_, Err(e))) = views.into_iter().next() {
            return Err(anyhow::Error::new(e).context("no endpoint answered"));
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_wait_means_no_wait() {
        assert_eq!(
            acquire_options(false, Some(Duration::ZERO), None).wait,
            None
        );
        assert_eq!(acquire_options(false, None, None).wait, None);
        assert_eq!(
            acquire_options(true, Some(Duration::from_millis(300)), None).wait,
            Some(Duration::from_millis(300))
        );
    }

    #[test]
    fn holders_are_named_like_a_conflict() {
        let holder = |session_id, client_name: &str, fencing_token| leasehold_client::LeaseInfo {
            resource: "r".into(),
            session_id,
            mode: Mode::Shared,
            fencing_token,
            metadata: vec![],
            client_name: client_name.into(),
            remaining_ttl: None,
            recalled: false,
            recall_reason: None,
        };
        assert_eq!(
            describe_holders(&[holder(12, "bob", 13), holder(14, "eve", 13)]),
            "session 12 (\"bob\", shared, token 13), session 14 (\"eve\", shared, token 13)"
        );
    }
}
