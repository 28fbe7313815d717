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
    let mut server = leasehold(&["server", "--config", config_arg, "--data-dir", data_arg])
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
        ]
    );
    assert!(!Path::new("/nonexistent").exists(), "nothing started");
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
