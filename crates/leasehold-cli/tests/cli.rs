//! The `leasehold` binary against a real three-node cluster on loopback.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
use tokio::process::Command;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// A `leasehold` command aimed at `cluster`.
fn cli(cluster: &TestCluster, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("LEASEHOLD_ENDPOINTS", cluster.api_endpoints().join(","))
        .env_remove("RUST_LOG")
        // No token from the test's environment or a local cluster.
        .env_remove("LEASEHOLD_TOKEN")
        .env_remove("LEASEHOLD_TOKEN_FILE")
        .env("LEASEHOLD_DATA_DIR", "/nonexistent/leasehold-data")
        .kill_on_drop(true);
    c
}

/// Runs a command to completion (bounded by [`WAIT`]).
async fn output(mut c: Command) -> anyhow::Result<Output> {
    Ok(tokio::time::timeout(WAIT, c.output()).await??)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, with both streams in the error when it differs.
fn expect_code(o: &Output, code: i32) -> anyhow::Result<()> {
    if o.status.code() != Some(code) {
        bail!(
            "exit {:?}, wanted {code}\nstdout: {}\nstderr: {}",
            o.status,
            stdout(o),
            stderr(o)
        );
    }
    Ok(())
}

/// Parses a duration as the CLI prints it (`312ms`, `1s5ms`, `2m`).
fn leasehold_duration(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            unit.push('s');
        }
        let n: u64 = digits
            .parse()
            .with_context(|| format!("bad duration {text:?}"))?;
        digits.clear();
        total += match unit.as_str() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3_600 * n),
            _ => bail!("bad duration {text:?}"),
        };
    }
    if !digits.is_empty() {
        bail!("bad duration {text:?}");
    }
    Ok(total)
}

/// The single JSON object a `--output json` command printed.
fn json(o: &Output) -> anyhow::Result<serde_json::Value> {
    let out = stdout(o);
    let line = out.lines().next().context("no output")?;
    Ok(serde_json::from_str(line)?)
}

/// Waits until `resource` has a holder; returns its session id.
async fn holder_of(client: &leasehold_client::Client, resource: &str) -> anyhow::Result<u64> {
    wait_until("a holder", WAIT, || async {
        let s = client.get(resource).await.ok()?;
        s.holders.first().map(|h| h.session_id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_get_release_and_exit_codes() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;

    // acquire prints a token (table and json).
    let o = output(cli(
        &cluster,
        &["acquire", "cli/a", "--holder", "alice", "--ttl", "5s"],
    ))
    .await?;
    expect_code(&o, 0)?;
    let table = stdout(&o);
    assert!(table.starts_with("RESOURCE"), "{table}");
    assert!(
        table.contains("cli/a") && table.contains("exclusive"),
        "{table}"
    );
    let o = output(cli(
        &cluster,
        &[
            "acquire",
            "cli/b",
            "--holder",
            "bob",
            "--ttl",
            "5s",
            "--output",
            "json",
            "--metadata",
            "host-b",
        ],
    ))
    .await?;
    expect_code(&o, 0)?;
    let v = json(&o)?;
    let token = v["fencing_token"].as_u64().context("token")?;
    let session = v["session_id"].as_u64().context("session")?;
    let handle = v["session"].as_str().context("session handle")?.to_string();
    assert!(handle.starts_with(&format!("{session}.")), "{handle}");
    assert!(token > 0);
    assert_eq!(v["resource"], "cli/b");
    assert_eq!(v["ttl_ms"], 5_000);

    // A second exclusive acquire exits 3 and names the holder.
    let o = output(cli(&cluster, &["acquire", "cli/b", "--holder", "carol"])).await?;
    expect_code(&o, 3)?;
    let err = stderr(&o);
    assert!(err.starts_with("leasehold: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&session.to_string()) && err.contains("bob"),
        "{err}"
    );

    // Waiting for it times out: exit 5, with the time really waited and
    // the holder named.
    let asked = Instant::now();
    let o = output(cli(&cluster, &["acquire", "cli/b", "--wait", "300ms"])).await?;
    let bound = asked.elapsed();
    expect_code(&o, 5)?;
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let waited = err
        .strip_prefix("leasehold: waited ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(d, _)| d)
        .with_context(|| format!("no waited time in {err:?}"))?;
    let waited = leasehold_duration(waited)?;
    assert!(
        waited >= Duration::from_millis(300) && waited <= bound,
        "waited {waited:?} (asked 300ms, the command took {bound:?}): {err}"
    );
    let held_by =
        format!("for cli/b; still held by session {session} (\"bob\", exclusive, token {token})");
    assert!(err.contains(&held_by), "{err}");

    // --wait 0s does not wait: a conflict at once (exit 3), like no --wait.
    let o = output(cli(&cluster, &["acquire", "cli/b", "--wait", "0s"])).await?;
    expect_code(&o, 3)?;
    let err = stderr(&o);
    assert!(
        err.contains(&session.to_string()) && err.contains("bob"),
        "{err}"
    );

    // get shows the holder.
    let o = output(cli(&cluster, &["get", "cli/b"])).await?;
    expect_code(&o, 0)?;
    let out = stdout(&o);
    assert!(
        out.contains("bob") && out.contains(&session.to_string()) && out.contains("host-b"),
        "{out}"
    );
    let o = output(cli(&cluster, &["get", "cli/b", "--output", "json"])).await?;
    let v = json(&o)?;
    assert_eq!(v["holders"][0]["session_id"], session);
    assert_eq!(v["holders"][0]["fencing_token"], token);

    // list follows pages and shows both.
    let o = output(cli(&cluster, &["list", "cli/"])).await?;
    expect_code(&o, 0)?;
    let out = stdout(&o);
    assert!(out.contains("cli/a") && out.contains("cli/b"), "{out}");

    // Someone else's release: the id alone, or a forged secret, is refused
    // with PERMISSION_DENIED (8) and the lease stays.
    let forged = format!("{session}.{}", "00".repeat(16));
    let o = output(cli(&cluster, &["release", "cli/b", "--session", &forged])).await?;
    expect_code(&o, 8)?;
    let o = output(cli(
        &cluster,
        &["release", "cli/b", "--session", &session.to_string()],
    ))
    .await?;
    expect_code(&o, 2)?;
    let o = output(cli(&cluster, &["get", "cli/b"])).await?;
    assert!(stdout(&o).contains("bob"), "{}", stdout(&o));

    // release with the printed session handle.
    let o = output(cli(&cluster, &["release", "cli/b", "--session", &handle])).await?;
    expect_code(&o, 0)?;
    let o = output(cli(&cluster, &["get", "cli/b"])).await?;
    assert!(stdout(&o).contains("free"), "{}", stdout(&o));

    // Releasing again: not held (3); an unknown session: not found (4).
    let o = output(cli(&cluster, &["release", "cli/b", "--session", &handle])).await?;
    expect_code(&o, 3)?;
    let unknown = format!("999999.{}", "00".repeat(16));
    let o = output(cli(&cluster, &["release", "cli/b", "--session", &unknown])).await?;
    expect_code(&o, 4)?;

    // Invalid argument (7), usage (2), unavailable (6).
    let long = "x".repeat(600);
    let o = output(cli(&cluster, &["acquire", &long])).await?;
    expect_code(&o, 7)?;
    let o = output(cli(&cluster, &["acquire", "r", "--ttl", "soon"])).await?;
    expect_code(&o, 2)?;
    let o = output(cli(
        &cluster,
        &[
            "get",
            "r",
            "--endpoints",
            "127.0.0.1:1",
            "--timeout",
            "300ms",
        ],
    ))
    .await?;
    expect_code(&o, 6)?;

    // status: every endpoint's view, one leader.
    let o = output(cli(&cluster, &["status", "--output", "json"])).await?;
    expect_code(&o, 0)?;
    let views: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(views.len(), 3);
    assert_eq!(views.iter().filter(|v| v["role"] == "leader").count(), 1);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_passes_the_token_and_exits_with_the_command() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("env");
    let script = format!(
        "echo \"$LEASEHOLD_FENCING_TOKEN $LEASEHOLD_RESOURCE $LEASEHOLD_SESSION\" > {}; exit 7",
        file.display()
    );
    let o = output(cli(
        &cluster,
        &["run", "cli/run", "--ttl", "3s", "--", "sh", "-c", &script],
    ))
    .await?;
    expect_code(&o, 7)?;
    let seen = std::fs::read_to_string(&file)?;
    let parts: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{seen}");
    assert!(parts[0].parse::<u64>()? > 0, "{seen}");
    assert_eq!(parts[1], "cli/run");
    assert!(parts[2].parse::<u64>()? > 0, "{seen}");
    // Released when the command exited.
    let client = leasehold_client::Client::connect(cluster.api_endpoints()).await?;
    assert!(client.get("cli/run").await?.holders.is_empty());

    // A held resource: exit 3, the command never runs.
    let session = client
        .open_session("holder", Duration::from_secs(5))
        .await?;
    let _lease = session
        .acquire("cli/held", leasehold_client::AcquireOptions::default())
        .await?;
    let o = output(cli(
        &cluster,
        &["run", "cli/held", "--", "sh", "-c", "exit 0"],
    ))
    .await?;
    expect_code(&o, 3)?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_stops_the_command_when_recalled_or_lost() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let client = leasehold_client::Client::connect(cluster.api_endpoints()).await?;

    // Recalled: `leasehold recall` stops the command with SIGTERM.
    let mut child = cli(
        &cluster,
        &[
            "run",
            "cli/recall",
            "--ttl",
            "3s",
            "--kill-after",
            "2s",
            "--",
            "sleep",
            "60",
        ],
    )
    .spawn()?;
    holder_of(&client, "cli/recall").await?;
    let started = Instant::now();
    let o = output(cli(&cluster, &["recall", "cli/recall", "--reason", "test"])).await?;
    expect_code(&o, 0)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    // The recall code (10), not the command's 143.
    assert_eq!(status.code(), Some(10), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(client.get("cli/recall").await?.holders.is_empty());

    // A command that traps SIGTERM and exits 0 after the recall: `run`
    // still exits with the recall code.
    let mut run = cli(
        &cluster,
        &[
            "run",
            "cli/trap",
            "--ttl",
            "3s",
            "--kill-after",
            "5s",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 60 & wait",
        ],
    );
    // stderr to a file, not a pipe: a pipe stays open as long as any
    // process of the command (the sleep) is alive.
    let dir = tempfile::tempdir()?;
    let err_file = dir.path().join("stderr");
    run.stderr(std::fs::File::create(&err_file)?);
    let mut child = run.spawn()?;
    holder_of(&client, "cli/trap").await?;
    let o = output(cli(&cluster, &["recall", "cli/trap", "--reason", "drain"])).await?;
    expect_code(&o, 0)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    let err = std::fs::read_to_string(&err_file)?;
    assert_eq!(status.code(), Some(10), "{status:?}: {err}");
    assert!(err.contains("recalled (drain)"), "{err}");
    assert!(client.get("cli/trap").await?.holders.is_empty());

    // Lost: the session is closed behind its back; a command ignoring
    // SIGTERM is killed after --kill-after.
    let mut child = cli(
        &cluster,
        &[
            "run",
            "cli/lost",
            "--ttl",
            "3s",
            "--kill-after",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 60",
        ],
    )
    .spawn()?;
    let session = holder_of(&client, "cli/lost").await?;
    let started = Instant::now();
    // Its secret stays with `run`: the test ends the session the way the
    // leader would (an expiry), not through the API.
    cluster
        .propose(leasehold_core::Command::ExpireSessions {
            sessions: vec![session],
        })
        .await?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    // The lost code (9), not the command's 137.
    assert_eq!(status.code(), Some(9), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // acquire --hold whose lease is lost exits with the same code.
    let mut hold = cli(
        &cluster,
        &["acquire", "cli/hold-lost", "--hold", "--ttl", "3s"],
    );
    hold.stdout(std::process::Stdio::null());
    hold.stderr(std::process::Stdio::piped());
    let child = hold.spawn()?;
    let session = holder_of(&client, "cli/hold-lost").await?;
    cluster
        .propose(leasehold_core::Command::ExpireSessions {
            sessions: vec![session],
        })
        .await?;
    let o = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    expect_code(&o, 9)?;
    assert!(stderr(&o).contains("lost"), "{}", stderr(&o));
    cluster.shutdown().await
}

/// Whether process `pid` no longer runs: gone, or a zombie not yet reaped.
fn not_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits until `file` holds a pid; returns it.
async fn pid_in(file: &std::path::Path) -> anyhow::Result<i32> {
    wait_until("a pid in the file", WAIT, || async {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
    .await
}

/// Kills a leftover process (cleanup after a failed assertion).
fn kill_leftover(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_stops_the_commands_whole_process_group() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let client = leasehold_client::Client::connect(cluster.api_endpoints()).await?;
    let dir = tempfile::tempdir()?;

    // sh forks sleep in the background and waits for it: SIGTERM to sh
    // alone would leave the sleep running without the lease.
    let file = dir.path().join("grandchild");
    let script = format!("sleep 60 & echo $! > {}; wait", file.display());
    let mut child = cli(
        &cluster,
        &[
            "run",
            "cli/group",
            "--ttl",
            "3s",
            "--kill-after",
            "5s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .spawn()?;
    let grandchild = pid_in(&file).await?;
    holder_of(&client, "cli/group").await?;
    let o = output(cli(&cluster, &["recall", "cli/group"])).await?;
    expect_code(&o, 0)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    let gone = wait_until("the grandchild to stop", WAIT, || async {
        not_running(grandchild).then_some(())
    })
    .await;
    kill_leftover(grandchild);
    gone?;
    assert_eq!(status.code(), Some(10), "{status:?}");

    // A grandchild that ignores SIGTERM gets SIGKILL after --kill-after,
    // even though the command itself exited on SIGTERM.
    let file = dir.path().join("stubborn");
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 60' & wait",
        file.display()
    );
    let mut child = cli(
        &cluster,
        &[
            "run",
            "cli/group2",
            "--ttl",
            "3s",
            "--kill-after",
            "500ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .spawn()?;
    let grandchild = pid_in(&file).await?;
    holder_of(&client, "cli/group2").await?;
    let o = output(cli(&cluster, &["recall", "cli/group2"])).await?;
    expect_code(&o, 0)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    let gone = wait_until("the stubborn grandchild to stop", WAIT, || async {
        not_running(grandchild).then_some(())
    })
    .await;
    kill_leftover(grandchild);
    gone?;
    assert_eq!(status.code(), Some(10), "{status:?}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_and_hold_run_until_interrupted() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let client = leasehold_client::Client::connect(cluster.api_endpoints()).await?;
    let mut watch = cli(&cluster, &["watch", "cli/w", "--output", "json"]);
    watch.stdout(std::process::Stdio::piped());
    let mut child = watch.spawn()?;
    // The watch must be open before the event, and it may open between an
    // acquire and its release: acquire and release until the watcher prints
    // an acquisition, then expect the matching release right after it.
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let deadline = Instant::now() + WAIT;
    let acquired = 'found: loop {
        let lease = client
            .acquire_once("cli/w1", Duration::from_secs(5), Default::default())
            .await?;
        lease.release().await?;
        while let Ok(line) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            let v: serde_json::Value = serde_json::from_str(&line?.context("watch ended")?)?;
            assert_eq!(v["resource"], "cli/w1", "{v}");
            if v["kind"] == "acquired" {
                break 'found v;
            }
            // A release whose acquisition came before the watch opened.
            assert_eq!(v["kind"], "released", "{v}");
        }
        if Instant::now() > deadline {
            bail!("watch printed no acquisition");
        }
    };
    let next = tokio::time::timeout(WAIT, lines.next_line())
        .await??
        .context("watch ended")?;
    let released: serde_json::Value = serde_json::from_str(&next)?;
    assert_eq!(released["kind"], "released", "{released}");
    assert_eq!(released["resource"], "cli/w1");
    assert_eq!(
        released["fencing_token"], acquired["fencing_token"],
        "{acquired} then {released}"
    );
    interrupt(&child)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    assert_eq!(status.code(), Some(0));

    // acquire --hold keeps the lease past its TTL, and releases on Ctrl-C.
    let mut hold = cli(&cluster, &["acquire", "cli/hold", "--hold", "--ttl", "2s"]);
    hold.stdout(std::process::Stdio::null());
    let mut child = hold.spawn()?;
    holder_of(&client, "cli/hold").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(client.get("cli/hold").await?.holders.len(), 1, "renewed");
    interrupt(&child)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    assert!(client.get("cli/hold").await?.holders.is_empty(), "released");
    cluster.shutdown().await
}

/// Sends SIGINT (what Ctrl-C sends) to a child.
fn interrupt(child: &tokio::process::Child) -> anyhow::Result<()> {
    let pid = child.id().context("pid")?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
    Ok(())
}

/// The JSON objects a `--output json` command printed, one per line.
fn json_lines(o: &Output) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(stdout(o)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// The one JSON error object a failing `--output json` command printed.
fn json_error(o: &Output) -> anyhow::Result<serde_json::Value> {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    anyhow::ensure!(lines.len() == 1, "not one line: {err:?}");
    Ok(serde_json::from_str(lines[0])?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_are_listed_kept_alive_reused_and_closed() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let client = leasehold_client::Client::connect(cluster.api_endpoints()).await?;

    // Global flags before the subcommand, a fractional TTL.
    let o = output(cli(
        &cluster,
        &[
            "--output", "json", "acquire", "ops/a", "--holder", "ops", "--ttl", "2.5s",
        ],
    ))
    .await?;
    expect_code(&o, 0)?;
    let v = json(&o)?;
    assert_eq!(v["ttl_ms"], 2_500);
    let id = v["session_id"].as_u64().context("session id")?;
    let handle = v["session"].as_str().context("handle")?.to_string();
    let secret = handle.split_once('.').context("handle")?.1.to_string();

    // session list: id, client, TTL, remaining TTL, holdings; no secret.
    let o = output(cli(&cluster, &["session", "list", "--output", "json"])).await?;
    expect_code(&o, 0)?;
    assert!(!stdout(&o).contains(&secret), "{}", stdout(&o));
    let listed = json_lines(&o)?;
    let mine = listed
        .iter()
        .find(|s| s["session_id"] == id)
        .with_context(|| format!("session {id} not listed: {listed:?}"))?;
    assert_eq!(mine["client_name"], "ops");
    assert_eq!(mine["ttl_ms"], 2_500);
    assert_eq!(mine["held"], serde_json::json!(["ops/a"]));
    assert_eq!(mine["waiting"], serde_json::json!([]));
    let remaining = mine["remaining_ttl_ms"].as_u64().context("remaining")?;
    assert!(remaining > 0 && remaining <= 2_500, "{mine}");
    let o = output(cli(&cluster, &["session", "list"])).await?;
    let table = stdout(&o);
    assert!(table.starts_with("SESSION"), "{table}");
    assert!(
        table.contains("ops/a") && !table.contains(&secret),
        "{table}"
    );

    // session keepalive keeps it (and its lease) past its TTL, until Ctrl-C.
    let mut keep = cli(&cluster, &["session", "keepalive", &handle]);
    keep.stdout(std::process::Stdio::piped());
    keep.stderr(std::process::Stdio::null());
    let mut child = keep.spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().context("piped stdout")?,
    ));
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await??
        .context("keepalive printed nothing")?;
    assert!(first.starts_with("KEPT"), "{first}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = client.get("ops/a").await?;
    assert_eq!(held.holders.first().map(|h| h.session_id), Some(id), "kept");

    // acquire --session: a second lease in the same session.
    let o = output(cli(
        &cluster,
        &["acquire", "ops/b", "--session", &handle, "--output", "json"],
    ))
    .await?;
    expect_code(&o, 0)?;
    assert_eq!(json(&o)?["session_id"], id);
    assert_eq!(json(&o)?["session"], handle.as_str());
    assert_eq!(client.get("ops/b").await?.holders[0].session_id, id);
    interrupt(&child)?;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    assert_eq!(status.code(), Some(0));

    // A wrong secret: 8; JSON errors on stderr.
    let forged = format!("{id}.{}", "00".repeat(16));
    let o = output(cli(&cluster, &["session", "keepalive", &forged])).await?;
    expect_code(&o, 8)?;
    let o = output(cli(
        &cluster,
        &["acquire", "ops/c", "--session", &forged, "--output", "json"],
    ))
    .await?;
    expect_code(&o, 8)?;
    let e = json_error(&o)?;
    assert_eq!(e["code"], "permission_denied", "{e}");
    assert_eq!(e["exit"], 8);

    // session close releases both; closing again: not found (4).
    let o = output(cli(
        &cluster,
        &["--output", "json", "session", "close", &handle],
    ))
    .await?;
    expect_code(&o, 0)?;
    assert_eq!(json(&o)?["released"], serde_json::json!(["ops/a", "ops/b"]));
    assert!(client.get("ops/a").await?.holders.is_empty());
    let o = output(cli(&cluster, &["session", "list", "--output", "json"])).await?;
    assert!(json_lines(&o)?.iter().all(|s| s["session_id"] != id));
    let o = output(cli(
        &cluster,
        &["session", "close", &handle, "--output", "json"],
    ))
    .await?;
    expect_code(&o, 4)?;
    let e = json_error(&o)?;
    assert_eq!(e["code"], "not_found", "{e}");
    assert_eq!(e["exit"], 4);
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains(&id.to_string())),
        "{e}"
    );
    let o = output(cli(&cluster, &["session", "keepalive", &handle])).await?;
    expect_code(&o, 4)?;

    // keepalive --for ends by itself, leaving the session open; a session
    // lost while kept exits 9.
    let session = client.open_session("kept", Duration::from_secs(2)).await?;
    let kept = session.handle().to_string();
    session.detach();
    let o = output(cli(
        &cluster,
        &["session", "keepalive", &kept, "--for", "0.5s"],
    ))
    .await?;
    expect_code(&o, 0)?;
    let kept_id = kept.split_once('.').context("handle")?.0.parse::<u64>()?;
    let mut keep = cli(&cluster, &["session", "keepalive", &kept]);
    keep.stdout(std::process::Stdio::piped());
    keep.stderr(std::process::Stdio::piped());
    let mut child = keep.spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().context("piped stdout")?,
    ));
    tokio::time::timeout(WAIT, lines.next_line())
        .await??
        .context("keepalive printed nothing")?;
    cluster
        .propose(leasehold_core::Command::ExpireSessions {
            sessions: vec![kept_id],
        })
        .await?;
    let o = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    expect_code(&o, 9)?;
    assert!(stderr(&o).contains("lost"), "{}", stderr(&o));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_sessions_pages_and_checks_its_arguments() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let leader = cluster.serving_leader().await?;
    let follower = cluster.api_endpoint(cluster.other_than(leader)?)?;
    // Through a follower: the call is forwarded to the leader.
    let client = leasehold_client::Client::connect([follower]).await?;
    let mut opened = Vec::new();
    for i in 0..5 {
        let s = client
            .open_session(&format!("pager-{i}"), Duration::from_secs(10))
            .await?;
        opened.push(s);
    }
    let lease = opened[1]
        .acquire("pages/x", leasehold_client::AcquireOptions::exclusive())
        .await?;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client.list_sessions_page(2, token.as_deref()).await?;
        assert!(page.sessions.len() <= 2, "{page:?}");
        pages += 1;
        seen.extend(page.sessions);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3, "5 sessions in pages of 2");
    let ids: Vec<u64> = seen.iter().map(|s| s.session_id).collect();
    let want: Vec<u64> = opened.iter().map(|s| s.id()).collect();
    assert_eq!(ids, want, "every session once, in id order");
    assert_eq!(seen[1].held, ["pages/x"]);
    assert_eq!(seen[1].client_name, "pager-1");
    assert!(seen.iter().all(|s| s.remaining_ttl.is_some()), "{seen:?}");
    assert_eq!(client.list_sessions().await?.len(), 5);

    for (size, token) in [(1_001, None), (0, Some("not-a-token"))] {
        let e = client
            .list_sessions_page(size, token)
            .await
            .expect_err("invalid");
        assert_eq!(e.kind(), "invalid_argument", "{e}");
    }
    lease.release().await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_status_completion_and_plain_logs() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;

    let o = output(cli(&cluster, &["config", "get", "--output", "json"])).await?;
    expect_code(&o, 0)?;
    let before = json(&o)?;
    assert!(before["ttl_ms_max"].as_u64().context("ttl_ms_max")? > 0);

    // Only the fields given change.
    let o = output(cli(
        &cluster,
        &[
            "--output",
            "json",
            "config",
            "set",
            "--ttl-min",
            "2.5s",
            "--drift-ppm",
            "20000",
        ],
    ))
    .await?;
    expect_code(&o, 0)?;
    let after = json(&o)?;
    assert_eq!(after["ttl_ms_min"], 2_500);
    assert_eq!(after["drift_ppm"], 20_000);
    for same in ["ttl_ms_max", "grace_margin_ms", "vote_window_ms"] {
        assert_eq!(after[same], before[same], "{same}");
    }
    let o = output(cli(&cluster, &["config", "get"])).await?;
    let table = stdout(&o);
    assert!(table.starts_with("TTL_MIN"), "{table}");
    assert!(
        table.contains("2s500ms") && table.contains("20000"),
        "{table}"
    );
    // The service checks the result: ttl-min above ttl-max is refused.
    let o = output(cli(&cluster, &["config", "set", "--ttl-min", "2d"])).await?;
    expect_code(&o, 7)?;
    assert!(stderr(&o).contains("ttl"), "{}", stderr(&o));

    // status: members with the leader marked, and the configuration.
    let o = output(cli(&cluster, &["status"])).await?;
    expect_code(&o, 0)?;
    let table = stdout(&o);
    assert!(
        table.contains("MEMBER") && table.contains("TTL_MIN") && table.contains("20000"),
        "{table}"
    );
    for addr in cluster.api_endpoints() {
        assert!(table.contains(&addr), "{addr} in {table}");
    }
    let o = output(cli(&cluster, &["status", "--output", "json"])).await?;
    let views = json_lines(&o)?;
    assert_eq!(views.len(), 3);
    for v in &views {
        let members = v["members"].as_array().context("members")?;
        assert_eq!(members.len(), 3, "{v}");
        assert_eq!(v["config"]["drift_ppm"], 20_000, "{v}");
        assert_eq!(v["config_error"], "", "{v}");
    }
    let leader_view = views
        .iter()
        .find(|v| v["role"] == "leader")
        .context("a leader")?;
    let marked: Vec<&serde_json::Value> = leader_view["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| m["leader"] == true)
        .collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["node_id"], leader_view["node_id"]);

    // Completion scripts.
    for shell in ["bash", "zsh", "fish"] {
        let o = output(cli(&cluster, &["completion", shell])).await?;
        expect_code(&o, 0)?;
        let script = stdout(&o);
        assert!(
            script.contains("leasehold") && script.contains("keepalive"),
            "{shell}: {script}"
        );
    }
    let o = output(cli(&cluster, &["completion", "tcsh"])).await?;
    expect_code(&o, 2)?;

    // A usage error with --output json is JSON too.
    let o = output(cli(
        &cluster,
        &["--output", "json", "acquire", "r", "--ttl", "soon"],
    ))
    .await?;
    expect_code(&o, 2)?;
    let e = json_error(&o)?;
    assert_eq!(e["code"], "usage", "{e}");
    assert_eq!(e["exit"], 2);

    // Logs into a pipe carry no ANSI colour codes.
    let mut c = cli(&cluster, &["get", "r"]);
    c.env("RUST_LOG", "debug");
    let o = output(c).await?;
    expect_code(&o, 0)?;
    let err = stderr(&o);
    assert!(err.contains("DEBUG"), "logs expected: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI in {err:?}");
    cluster.shutdown().await
}

/// `leasehold member`: a failed follower replaced by a fresh node, the
/// result listed with roles and the leader, and refusals as one line with
/// their exit codes (3: refused, nothing changed; 7: bad argument).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_replace_list_and_refusals() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default()).await?;
    let leader = cluster.serving_leader().await?;
    let failed = cluster.other_than(leader)?;
    cluster.stop(failed).await?;
    cluster.start_new_node(4).await?;
    cluster
        .wait_admission(4, leasehold_server::Admission::AwaitingMembership)
        .await?;
    let new = cluster.member(4)?;
    let spec = format!("4={},{}", new.raft_addr, new.api_addr);

    let o = output(cli(
        &cluster,
        &[
            "member",
            "replace",
            &failed.to_string(),
            &spec,
            "--output",
            "json",
        ],
    ))
    .await?;
    expect_code(&o, 0)?;
    let voters: Vec<u64> = json_lines(&o)?
        .iter()
        .filter_map(|v| v["node_id"].as_u64())
        .collect();
    let want: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != failed)
        .collect();
    assert_eq!(voters, want);

    let o = output(cli(&cluster, &["member", "list", "--output", "json"])).await?;
    expect_code(&o, 0)?;
    let listed = json_lines(&o)?;
    assert_eq!(
        listed
            .iter()
            .filter_map(|v| v["node_id"].as_u64())
            .collect::<Vec<_>>(),
        want
    );
    assert!(listed.iter().all(|v| v["role"] == "voter"));
    let leaders: Vec<u64> = listed
        .iter()
        .filter(|v| v["leader"] == true)
        .filter_map(|v| v["node_id"].as_u64())
        .collect();
    assert_eq!(leaders, [cluster.serving_leader().await?]);

    // A member at an address nothing answers on: refused, one line, exit 3.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let o = output(cli(
        &cluster,
        &[
            "member",
            "add",
            &format!("9={dead},{dead}"),
            "--catch-up-timeout",
            "500ms",
        ],
    ))
    .await?;
    expect_code(&o, 3)?;
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("node 9") && err.contains(&dead.to_string()),
        "{err}"
    );
    // Not a member: exit 7.
    let o = output(cli(&cluster, &["member", "remove", "42"])).await?;
    expect_code(&o, 7)?;
    assert!(
        stderr(&o).contains("node 42 is not a member"),
        "{}",
        stderr(&o)
    );
    // Nothing changed.
    let o = output(cli(&cluster, &["member", "list", "--output", "json"])).await?;
    assert_eq!(json_lines(&o)?.len(), want.len());
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_come_from_the_flag_a_file_or_the_local_admin_token() -> anyhow::Result<()> {
    use leasehold_tests::Role;
    let admin = "cli-admin-token-0123456789";
    let cluster = TestCluster::start(ClusterOptions::with_principals(&[
        ("ops", admin, Role::Admin, &[]),
        (
            "chunkserver",
            "cli-chunk-token-0123456789",
            Role::Client,
            &["chunk/"],
        ),
    ]))
    .await?;
    cluster.serving_leader().await?;
    // No token: exit 11, one line.
    let o = output(cli(&cluster, &["get", "chunk/1"])).await?;
    expect_code(&o, 11)?;
    assert_eq!(
        stderr(&o).trim(),
        "leasehold: connecting to the cluster: unauthenticated: missing bearer token (send `authorization: Bearer <token>` metadata)"
    );
    // --token, LEASEHOLD_TOKEN.
    expect_code(
        &output(cli(&cluster, &["get", "chunk/1", "--token", admin])).await?,
        0,
    )?;
    let mut c = cli(&cluster, &["get", "chunk/1"]);
    c.env("LEASEHOLD_TOKEN", admin);
    expect_code(&output(c).await?, 0)?;
    // --token-file, and the admin token of the local data directory.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("admin.token"), format!("{admin}\n"))?;
    let file = dir.path().join("admin.token");
    let file = file.to_str().context("utf-8 path")?;
    expect_code(
        &output(cli(&cluster, &["get", "chunk/1", "--token-file", file])).await?,
        0,
    )?;
    let mut c = cli(&cluster, &["get", "chunk/1"]);
    c.env("LEASEHOLD_DATA_DIR", dir.path());
    expect_code(&output(c).await?, 0)?;
    // A client outside its prefixes: exit 8, naming principal and prefix.
    let o = output(cli(
        &cluster,
        &["acquire", "jobs/1", "--token", "cli-chunk-token-0123456789"],
    ))
    .await?;
    expect_code(&o, 8)?;
    assert!(
        stderr(&o).contains("principal \"chunkserver\" may not call Acquire: resource \"jobs/1\" is outside its prefixes [\"chunk/\"]"),
        "{}",
        stderr(&o)
    );
    let o = output(cli(&cluster, &["get", "chunk/1", "--token", "wrong"])).await?;
    expect_code(&o, 11)?;
    assert!(stderr(&o).contains("unknown token"), "{}", stderr(&o));
    cluster.shutdown().await
}
