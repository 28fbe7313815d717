//! `leasehold server` started from a config file, and its config errors.

use std::path::Path;
use std::process::{Output, Stdio};

use anyhow::Context;
use leasehold_tests::{wait_until, WAIT};
use tokio::process::Command;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// A `leasehold` command with no `LEASEHOLD_*` variables from the test's
/// own environment.
fn leasehold(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_clear().kill_on_drop(true);
    c
}

/// `leasehold certs init` into `tls`: a CA, node 1's certificate on
/// 127.0.0.1, and one client certificate per name; fails unless it exits 0.
async fn certs_init(tls: &Path, clients: &[&str]) -> anyhow::Result<()> {
    let dir = tls.to_str().context("utf-8 path")?;
    let mut args = vec!["certs", "init", "--dir", dir, "--node", "1=127.0.0.1"];
    for name in clients {
        args.extend(["--client", name]);
    }
    let o = output(leasehold(&args)).await?;
    anyhow::ensure!(
        o.status.code() == Some(0),
        "certs init: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Whether a `status --output json` call answered that its node leads and
/// serves.
fn serving_leader(o: &std::process::Output) -> Option<()> {
    let v: serde_json::Value =
        serde_json::from_slice(o.stdout.split(|&b| b == b'\n').next()?).ok()?;
    (v["role"] == "leader" && v["serving"] == "serving").then_some(())
}

/// `leasehold server` as a one-node TLS cluster (node 1, Raft on `raft`,
/// API on `api_addr`, data in `data`, certificates from `certs init` in
/// `tls`) with fast Raft timing, plus `extra` flags.
fn tls_server(
    raft: u16,
    api_addr: &str,
    data: &Path,
    tls: &Path,
    extra: &[&str],
) -> anyhow::Result<Command> {
    let peer = format!("1=127.0.0.1:{raft},{api_addr}");
    let raft_listen = format!("127.0.0.1:{raft}");
    let utf8 = |p: &Path| p.to_str().map(str::to_string).context("utf-8 path");
    let (data, ca) = (utf8(data)?, utf8(&tls.join("ca.pem"))?);
    let (cert, key) = (
        utf8(&tls.join("node-1.pem"))?,
        utf8(&tls.join("node-1-key.pem"))?,
    );
    let mut args = vec![
        "server",
        "--id",
        "1",
        "--peer",
        &peer,
        "--raft-listen",
        &raft_listen,
        "--api-listen",
        api_addr,
        "--data-dir",
        &data,
        "--heartbeat-ms",
        "50",
        "--election-timeout-ms-min",
        "150",
        "--election-timeout-ms-max",
        "300",
        "--tls-ca-cert",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    Ok(leasehold(&args))
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn output(mut c: Command) -> anyhow::Result<Output> {
    Ok(tokio::time::timeout(WAIT, c.output()).await??)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[tokio::test]
async fn a_node_starts_from_its_config_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (raft, api) = (free_port()?, free_port()?);
    let raft_addr = format!("127.0.0.1:{raft}");
    let api_addr = format!("127.0.0.1:{api}");
    let file_data = dir.path().join("from-file");
    let flag_data = dir.path().join("from-flag");
    let config = dir.path().join("node7.toml");
    write(
        &config,
        &format!(
            r#"
[node]
id = 7
raft_listen = "{raft_addr}"
api_listen = "{api_addr}"
data_dir = "{}"

[[peers]]
id = 7
raft = "{raft_addr}"
api = "{api_addr}"

[raft]
heartbeat = "50ms"
election_timeout_min = "150ms"
election_timeout_max = "0.3s"

[auth]
open = true
"#,
            file_data.display()
        ),
    )?;
    let config_arg = config.to_str().context("utf-8 path")?;
    let data_arg = flag_data.to_str().context("utf-8 path")?;
    let mut server = leasehold(&[
        "server",
        "--config",
        config_arg,
        "--data-dir",
        data_arg,
        "--plaintext",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;

    // It comes up as node 7 at the configured address, leading the
    // single-member cluster of its peer list.
    let view = wait_until("the node leads at its configured address", WAIT, || async {
        let o = output(leasehold(&[
            "status",
            "--endpoints",
            &api_addr,
            "--output",
            "json",
        ]))
        .await
        .ok()?;
        let v: serde_json::Value =
            serde_json::from_slice(o.stdout.split(|&b| b == b'\n').next()?).ok()?;
        (v["role"] == "leader" && v["serving"] == "serving").then_some(v)
    })
    .await?;
    assert_eq!(view["node_id"], 7, "{view}");
    assert_eq!(view["leader_id"], 7, "{view}");
    assert_eq!(view["leader_api_addr"], api_addr.as_str(), "{view}");
    // The flag beat the file's data_dir.
    assert!(flag_data.exists(), "--data-dir used");
    assert!(!file_data.exists(), "the file's data_dir overridden");

    let pid = server.id().context("server pid")?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let status = tokio::time::timeout(WAIT, server.wait()).await??;
    assert_eq!(status.code(), Some(0), "clean shutdown on SIGTERM");
    Ok(())
}

#[tokio::test]
async fn config_errors_are_all_reported_and_exit_2() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bad.toml");
    write(
        &config,
        "peers = [\"1=127.0.0.1:1,127.0.0.1:2\"]\n[node]\nid = 1\ndata_dir = \"/nonexistent\"\nflavour = 3\n[raft]\nheartbeat = \"2ms\"\n",
    )?;
    let path = config.to_str().context("utf-8 path")?;
    let mut c = leasehold(&["server"]);
    c.env("LEASEHOLD_CONFIG", path)
        .env("LEASEHOLD_AUTH_OPEN", "true")
        .env("LEASEHOLD_SNAPSHOT_EVERY_ENTRIES", "0");
    let o = output(c).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("leasehold: config error: node.flavour: unknown key (file {path} line 5)"),
            format!("leasehold: config error: raft.heartbeat: must be at least 10 ms (is 2 ms) (file {path} line 7)"),
            "leasehold: config error: snapshot.every_entries: must be positive (env LEASEHOLD_SNAPSHOT_EVERY_ENTRIES)".to_string(),
            format!("leasehold: config error: tls: {}", leasehold_server::config::NEITHER_TLS_NOR_PLAINTEXT),
        ]
    );
    assert!(!Path::new("/nonexistent").exists(), "nothing started");
    Ok(())
}

#[tokio::test]
async fn certs_init_writes_private_keys_and_refuses_to_overwrite() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    let tls_arg = tls.to_str().context("utf-8 path")?;
    let init = |extra: &[&str]| {
        let mut args = vec![
            "certs",
            "init",
            "--dir",
            tls_arg,
            "--node",
            "1=127.0.0.1",
            "--node",
            "2=node2,10.0.0.2",
            "--client",
            "client",
        ];
        args.extend_from_slice(extra);
        leasehold(&args)
    };
    let o = output(init(&[])).await?;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for name in [
        "ca",
        "ca-key",
        "node-1",
        "node-1-key",
        "node-2",
        "node-2-key",
        "client",
        "client-key",
    ] {
        let path = tls.join(format!("{name}.pem"));
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("{name}.pem written"))?
            .permissions()
            .mode()
            & 0o777;
        let want = if name.ends_with("key") { 0o600 } else { 0o644 };
        assert_eq!(mode, want, "{name}.pem mode {mode:o}");
    }
    let ca_before = std::fs::read(tls.join("ca.pem"))?;

    let o = output(init(&[])).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ca.pem exists"), "{stderr}");
    assert_eq!(
        std::fs::read(tls.join("ca.pem"))?,
        ca_before,
        "not overwritten"
    );

    let o = output(init(&["--force"])).await?;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(
        std::fs::read(tls.join("ca.pem"))?,
        ca_before,
        "overwritten with --force"
    );

    let o = output(leasehold(&[
        "certs", "init", "--dir", tls_arg, "--node", "x",
    ]))
    .await?;
    assert_eq!(o.status.code(), Some(2), "a bad --node is a usage error");
    Ok(())
}

#[tokio::test]
async fn a_tls_node_serves_client_commands_that_find_the_ca_in_the_data_dir() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let tls = data.join("tls");
    let (raft, api) = (free_port()?, free_port()?);
    let api_addr = format!("127.0.0.1:{api}");
    certs_init(&tls, &["client"]).await?;
    let mut server = tls_server(
        raft,
        &api_addr,
        &data.join("node-1"),
        &tls,
        &["--auth-open"],
    )?
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;

    // No TLS flag: the CA and client certificate come from
    // $LEASEHOLD_DATA_DIR/tls, as after cluster/up.sh.
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--endpoints", &api_addr, "--output", "json"];
        args.extend_from_slice(extra);
        let mut c = leasehold(&args);
        c.env("LEASEHOLD_DATA_DIR", &data);
        c
    };
    wait_until("the TLS node leads", WAIT, || async {
        serving_leader(&output(status(&[])).await.ok()?)
    })
    .await?;
    let o = output(status(&["--plaintext"])).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "plaintext against TLS: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("requires TLS"), "{stderr}");

    let pid = server.id().context("server pid")?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let status = tokio::time::timeout(WAIT, server.wait()).await??;
    assert_eq!(status.code(), Some(0), "clean shutdown on SIGTERM");
    Ok(())
}

#[tokio::test]
async fn without_principals_or_auth_open_a_server_refuses_to_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_str().context("utf-8 path")?;
    let o = output(leasehold(&[
        "server",
        "--id",
        "1",
        "--peer",
        "1=127.0.0.1:1,127.0.0.1:2",
        "--data-dir",
        data_arg,
        "--plaintext",
    ]))
    .await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["leasehold: config error: auth: no principals are configured: add [[auth.principals]] or set auth.open = true (--auth-open) to run with an open API"]
    );
    assert!(!data.exists(), "nothing started");
    Ok(())
}

#[tokio::test]
async fn a_principal_needs_a_token_or_a_certificate_name_to_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_str().context("utf-8 path")?;
    let config = dir.path().join("ghost.toml");
    write(
        &config,
        "[[auth.principals]]\nname = \"ghost\"\nrole = \"admin\"\n",
    )?;
    let path = config.to_str().context("utf-8 path")?;
    let base = [
        "server",
        "--id",
        "1",
        "--peer",
        "1=127.0.0.1:1,127.0.0.1:2",
        "--data-dir",
        data_arg,
        "--plaintext",
    ];
    let mut args = base.to_vec();
    args.extend(["--config", path]);
    let o = output(leasehold(&args)).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [format!("leasehold: config error: auth.principals: entry 1: principal \"ghost\": needs `token_sha256` or `cert_cn` (or both): how else would it authenticate? (file {path} line 1)")]
    );
    // The flag form (a usage error, clap's message): a node certificate's
    // name is refused as a cert_cn.
    let mut args = base.to_vec();
    args.extend(["--auth-principal", "ops:admin:cn=leasehold node 1"]);
    let o = output(leasehold(&args)).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cert_cn \"leasehold node 1\" is a node certificate's name"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing started");
    Ok(())
}

#[tokio::test]
async fn a_cli_call_authenticated_only_by_its_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    let (raft, api) = (free_port()?, free_port()?);
    let api_addr = format!("127.0.0.1:{api}");
    let path = |p: &Path| p.to_str().map(str::to_string).context("utf-8 path");
    certs_init(&tls, &["dash", "cs", "stranger"]).await?;
    let _server = tls_server(
        raft,
        &api_addr,
        &dir.path().join("node-1"),
        &tls,
        &[
            "--auth-principal",
            "dashboard:reader:cn=dash:",
            "--auth-principal",
            "chunkserver:client:cn=cs:chunk/",
        ],
    )?
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;

    // No token anywhere (an empty data dir): the certificate is the
    // credential.
    let as_cert = |name: &str, args: &[&str]| -> anyhow::Result<Command> {
        let mut all = vec![
            "--endpoints".to_string(),
            api_addr.clone(),
            "--ca-cert".into(),
            path(&tls.join("ca.pem"))?,
            "--client-cert".into(),
            path(&tls.join(format!("{name}.pem")))?,
            "--client-key".into(),
            path(&tls.join(format!("{name}-key.pem")))?,
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut c = leasehold(&refs);
        c.env("LEASEHOLD_DATA_DIR", dir.path());
        Ok(c)
    };
    wait_until("the reader's status by certificate", WAIT, || async {
        let o = output(as_cert("dash", &["status", "--output", "json"]).ok()?)
            .await
            .ok()?;
        serving_leader(&o)
    })
    .await?;
    let o = output(as_cert("cs", &["acquire", "chunk/1", "--ttl", "30s"])?).await?;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = output(as_cert("dash", &["get", "chunk/1", "--output", "json"])?).await?;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = output(as_cert("cs", &["acquire", "jobs/1", "--ttl", "30s"])?).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "permission denied: {stderr}");
    assert!(stderr.contains("\"chunkserver\""), "{stderr}");
    let o = output(as_cert("stranger", &["get", "chunk/1"])?).await?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(11), "unauthenticated: {stderr}");
    assert!(stderr.contains("\"stranger\""), "{stderr}");
    Ok(())
}
