//! Authentication and roles through real gRPC on a three-node cluster:
//! every call without a token or with an unknown one is UNAUTHENTICATED,
//! every call a principal's role or prefixes do not allow is
//! PERMISSION_DENIED, and after each refusal nothing changed (config,
//! membership, sessions and lease state read back). Followers refuse too,
//! and forward permitted calls with the caller's token.

use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use leasehold_server::auth::TOKEN_BYTES_MAX;
use leasehold_server::{AuthConfig, Principal, Role};
use leasehold_tests::grpc::{acquire_req, assert_refused, bearer, client, observe, Sess};
use leasehold_tests::{ClusterOptions, TestCluster};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN: &str = "admin-token-0123456789";
const CHUNK: &str = "chunkserver-token-0123456789";
const READER: &str = "dashboard-token-0123456789";
const TTL_MS: u64 = 120_000;

/// The three principals of the issue: an admin, a chunkserver limited to
/// `chunk/`, a reader of everything.
async fn start() -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions {
        auth: AuthConfig {
            principals: vec![
                Principal::with_token("ops", ADMIN, Role::Admin, &[]),
                Principal::with_token("chunkserver", CHUNK, Role::Client, &["chunk/"]),
                Principal::with_token("dashboard", READER, Role::Reader, &[""]),
            ],
            open: false,
        },
        ..ClusterOptions::default()
    })
    .await?;
    c.serving_leader().await?;
    Ok(c)
}

async fn open(api: &mut LeaseholdClient<Channel>, token: &str, name: &str) -> anyhow::Result<Sess> {
    let r = api
        .open_session(bearer(
            Some(token),
            pb::OpenSessionRequest {
                client_name: name.into(),
                ttl_ms: TTL_MS,
                request_id: 0,
            },
        ))
        .await?
        .into_inner();
    Ok(Sess {
        id: r.session_id,
        secret: r.session_secret.as_ref().try_into()?,
    })
}

/// Every RPC, with the given token; each must be refused with `code`.
async fn every_call_refused(
    api: &mut LeaseholdClient<Channel>,
    token: Option<&str>,
    victim: Sess,
    words: &[&str],
) -> anyhow::Result<()> {
    let code = Code::Unauthenticated;
    let t = token;
    let open = pb::OpenSessionRequest {
        client_name: "intruder".into(),
        ttl_ms: TTL_MS,
        request_id: 0,
    };
    assert_refused(api.open_session(bearer(t, open)).await, code, words);
    let close = pb::CloseSessionRequest {
        session_id: victim.id,
        session_secret: victim.secret(),
    };
    assert_refused(api.close_session(bearer(t, close)).await, code, words);
    let ka = pb::KeepAliveRequest {
        session_ids: vec![victim.id],
        session_secrets: vec![victim.secret()],
    };
    assert_refused(
        api.keep_alive(bearer(t, tokio_stream::iter(vec![ka])))
            .await,
        code,
        words,
    );
    let acquire = acquire_req(victim, "chunk/9", false, 0);
    assert_refused(api.acquire(bearer(t, acquire)).await, code, words);
    let release = pb::ReleaseRequest {
        session_id: victim.id,
        resource: "chunk/1".into(),
        session_secret: victim.secret(),
    };
    assert_refused(api.release(bearer(t, release)).await, code, words);
    let get = pb::GetRequest {
        resource: "chunk/1".into(),
    };
    assert_refused(api.get(bearer(t, get)).await, code, words);
    let list = pb::ListRequest {
        prefix: String::new(),
        page_size: 10,
        page_token: String::new(),
    };
    assert_refused(api.list(bearer(t, list)).await, code, words);
    let sessions = pb::ListSessionsRequest {
        page_size: 10,
        page_token: String::new(),
    };
    assert_refused(api.list_sessions(bearer(t, sessions)).await, code, words);
    let watch = pb::WatchRequest {
        prefix: String::new(),
        start_revision: 0,
    };
    assert_refused(api.watch(bearer(t, watch)).await, code, words);
    let recall = pb::RecallRequest {
        resource: "chunk/1".into(),
        reason: "intrusion".into(),
    };
    assert_refused(api.recall(bearer(t, recall)).await, code, words);
    assert_refused(
        api.status(bearer(t, pb::StatusRequest {})).await,
        code,
        words,
    );
    let set = pb::SetConfigRequest {
        config: Some(pb::LeaseConfig {
            ttl_ms_min: 60_000,
            ttl_ms_max: 600_000,
            ..Default::default()
        }),
    };
    assert_refused(api.set_config(bearer(t, set)).await, code, words);
    let members = pb::ChangeMembershipRequest {
        voters: Vec::new(),
        catch_up_timeout_ms: 0,
    };
    assert_refused(api.change_membership(bearer(t, members)).await, code, words);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_without_a_known_token_are_unauthenticated_and_change_nothing() -> anyhow::Result<()>
{
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let mut api = client(&c.api_endpoint(leader)?).await?;
    let holder = open(&mut api, CHUNK, "chunkserver-1").await?;
    api.acquire(bearer(
        Some(CHUNK),
        acquire_req(holder, "chunk/1", false, 0),
    ))
    .await?;
    let before = observe(&mut api, ADMIN).await?;
    let refused_before = c.node(leader)?.metrics().auth_unauthenticated_total;

    every_call_refused(&mut api, None, holder, &["missing bearer token"]).await?;
    every_call_refused(&mut api, Some("not-a-token"), holder, &["unknown token"]).await?;
    let long = "x".repeat(TOKEN_BYTES_MAX + 1);
    every_call_refused(&mut api, Some(&long), holder, &["longer than 256 bytes"]).await?;
    // Not a bearer token at all.
    let mut basic = Request::new(pb::StatusRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic b3BzOnNlY3JldA==".parse()?);
    assert_refused(
        api.status(basic).await,
        Code::Unauthenticated,
        &["expected `Bearer <token>`"],
    );

    assert_eq!(
        observe(&mut api, ADMIN).await?,
        before,
        "a refused call changed state"
    );
    assert_eq!(
        c.node(leader)?.metrics().auth_unauthenticated_total - refused_before,
        3 * 13 + 1,
        "every refusal is counted"
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_may_do_its_calls_and_nothing_more() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let mut api = client(&c.api_endpoint(leader)?).await?;

    // The admin may use any resource; the chunkserver only chunk/.
    let ops = open(&mut api, ADMIN, "ops").await?;
    api.acquire(bearer(
        Some(ADMIN),
        acquire_req(ops, "jobs/nightly", false, 0),
    ))
    .await?;
    let cs = open(&mut api, CHUNK, "chunkserver-1").await?;
    api.acquire(bearer(Some(CHUNK), acquire_req(cs, "chunk/1", false, 0)))
        .await?;
    let before = observe(&mut api, ADMIN).await?;

    // Client outside its prefixes.
    assert_refused(
        api.acquire(bearer(Some(CHUNK), acquire_req(cs, "jobs/other", false, 0)))
            .await,
        Code::PermissionDenied,
        &[
            "\"chunkserver\"",
            "Acquire",
            "\"jobs/other\"",
            "[\"chunk/\"]",
        ],
    );
    // Even with the admin's session and its secret.
    let release = pb::ReleaseRequest {
        session_id: ops.id,
        resource: "jobs/nightly".into(),
        session_secret: ops.secret(),
    };
    assert_refused(
        api.release(bearer(Some(CHUNK), release)).await,
        Code::PermissionDenied,
        &["\"chunkserver\"", "Release", "\"jobs/nightly\""],
    );
    let get = pb::GetRequest {
        resource: "jobs/nightly".into(),
    };
    assert_refused(
        api.get(bearer(Some(CHUNK), get)).await,
        Code::PermissionDenied,
        &["Get", "\"jobs/nightly\""],
    );
    let list_all = pb::ListRequest {
        prefix: String::new(),
        page_size: 10,
        page_token: String::new(),
    };
    assert_refused(
        api.list(bearer(Some(CHUNK), list_all.clone())).await,
        Code::PermissionDenied,
        &["List", "prefix \"\""],
    );
    let watch_all = pb::WatchRequest {
        prefix: String::new(),
        start_revision: 0,
    };
    assert_refused(
        api.watch(bearer(Some(CHUNK), watch_all.clone())).await,
        Code::PermissionDenied,
        &["Watch", "prefix \"\""],
    );
    // Inside its prefix, reads are allowed.
    let mine = api
        .list(bearer(
            Some(CHUNK),
            pb::ListRequest {
                prefix: "chunk/".into(),
                page_size: 10,
                page_token: String::new(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(mine.resources.len(), 1);
    let watch_mine = pb::WatchRequest {
        prefix: "chunk/".into(),
        start_revision: 0,
    };
    drop(api.watch(bearer(Some(CHUNK), watch_mine)).await?);

    // Client and reader calling the admin calls.
    for (token, name, role) in [
        (CHUNK, "chunkserver", "client"),
        (READER, "dashboard", "reader"),
    ] {
        let needs = format!("needs role admin or higher (has {role})");
        let recall = pb::RecallRequest {
            resource: "chunk/1".into(),
            reason: "not yours".into(),
        };
        let who = format!("{name:?}");
        assert_refused(
            api.recall(bearer(Some(token), recall)).await,
            Code::PermissionDenied,
            &[&who, "Recall", &needs],
        );
        let set = pb::SetConfigRequest {
            config: Some(pb::LeaseConfig {
                ttl_ms_min: 60_000,
                ttl_ms_max: 600_000,
                ..Default::default()
            }),
        };
        assert_refused(
            api.set_config(bearer(Some(token), set)).await,
            Code::PermissionDenied,
            &[&who, "SetConfig", &needs],
        );
        let members = pb::ChangeMembershipRequest {
            voters: before.members[..1].to_vec(),
            catch_up_timeout_ms: 0,
        };
        assert_refused(
            api.change_membership(bearer(Some(token), members)).await,
            Code::PermissionDenied,
            &[&who, "ChangeMembership", &needs],
        );
    }

    // The reader: no sessions, no acquires (not even one-call leases).
    let needs_client = "needs role client or higher (has reader)";
    let open_req = pb::OpenSessionRequest {
        client_name: "dashboard".into(),
        ttl_ms: TTL_MS,
        request_id: 0,
    };
    assert_refused(
        api.open_session(bearer(Some(READER), open_req)).await,
        Code::PermissionDenied,
        &["\"dashboard\"", "OpenSession", needs_client],
    );
    let mut one_call = acquire_req(0, "chunk/2", false, 0);
    one_call.ttl_ms = TTL_MS;
    one_call.client_name = "dashboard".into();
    assert_refused(
        api.acquire(bearer(Some(READER), one_call)).await,
        Code::PermissionDenied,
        &["Acquire", needs_client],
    );
    let close = pb::CloseSessionRequest {
        session_id: cs.id,
        session_secret: cs.secret(),
    };
    assert_refused(
        api.close_session(bearer(Some(READER), close)).await,
        Code::PermissionDenied,
        &["CloseSession", needs_client],
    );
    let ka = pb::KeepAliveRequest {
        session_ids: vec![cs.id],
        session_secrets: vec![cs.secret()],
    };
    assert_refused(
        api.keep_alive(bearer(Some(READER), tokio_stream::iter(vec![ka])))
            .await,
        Code::PermissionDenied,
        &["KeepAlive", needs_client],
    );

    // Nothing any refusal touched changed.
    assert_eq!(
        observe(&mut api, ADMIN).await?,
        before,
        "a refused call changed state"
    );

    // The reader reads everything.
    api.list(bearer(Some(READER), list_all)).await?;
    let got = api
        .get(bearer(
            Some(READER),
            pb::GetRequest {
                resource: "jobs/nightly".into(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(got.state.map(|s| s.holders.len()), Some(1));
    api.list_sessions(bearer(
        Some(READER),
        pb::ListSessionsRequest {
            page_size: 10,
            page_token: String::new(),
        },
    ))
    .await?;
    api.status(bearer(Some(READER), pb::StatusRequest {}))
        .await?;
    let mut events = api
        .watch(bearer(Some(READER), watch_all))
        .await?
        .into_inner();

    // The chunkserver keeps its session alive and releases its lease.
    let ka = pb::KeepAliveRequest {
        session_ids: vec![cs.id],
        session_secrets: vec![cs.secret()],
    };
    let mut renewals = api
        .keep_alive(bearer(Some(CHUNK), tokio_stream::iter(vec![ka])))
        .await?
        .into_inner();
    let renewed = renewals.next().await.expect("a keepalive answer")?;
    assert_eq!(renewed.sessions.len(), 1);

    // The admin recalls and sets the config: allowed.
    let recall = pb::RecallRequest {
        resource: "chunk/1".into(),
        reason: "maintenance".into(),
    };
    let recalled = api.recall(bearer(Some(ADMIN), recall)).await?.into_inner();
    assert_eq!(recalled.holders, [cs.id]);
    let mut config = before.config.expect("a config");
    config.ttl_ms_max += 1_000;
    api.set_config(bearer(
        Some(ADMIN),
        pb::SetConfigRequest {
            config: Some(config),
        },
    ))
    .await?;
    let after = observe(&mut api, ADMIN).await?;
    assert_eq!(after.config.map(|c| c.ttl_ms_max), Some(config.ttl_ms_max));
    // The reader's watch saw the recall.
    let event = events.next().await.expect("an event")?;
    assert_eq!(event.resource, "chunk/1");
    assert_eq!(event.kind, pb::EventKind::Recalled as i32);

    let release = pb::ReleaseRequest {
        session_id: cs.id,
        resource: "chunk/1".into(),
        session_secret: cs.secret(),
    };
    api.release(bearer(Some(CHUNK), release)).await?;
    let close = pb::CloseSessionRequest {
        session_id: cs.id,
        session_secret: cs.secret(),
    };
    api.close_session(bearer(Some(CHUNK), close)).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_refuse_too_and_forward_the_callers_token() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let follower = c.other_than(leader)?;
    let mut api = client(&c.api_endpoint(follower)?).await?;
    let before = observe(&mut api, ADMIN).await?;
    let forwarded_before = c.node(follower)?.metrics().forwarded_total;

    // Refused at the follower: nothing is forwarded, nothing changes.
    let set = pb::SetConfigRequest {
        config: Some(pb::LeaseConfig {
            ttl_ms_min: 60_000,
            ttl_ms_max: 600_000,
            ..Default::default()
        }),
    };
    assert_refused(
        api.set_config(bearer(Some(CHUNK), set)).await,
        Code::PermissionDenied,
        &["\"chunkserver\"", "SetConfig"],
    );
    assert_refused(
        api.set_config(bearer(None, set)).await,
        Code::Unauthenticated,
        &["missing bearer token"],
    );
    let mut one_call = acquire_req(0, "jobs/x", false, 0);
    one_call.ttl_ms = TTL_MS;
    one_call.client_name = "cs".into();
    assert_refused(
        api.acquire(bearer(Some(CHUNK), one_call)).await,
        Code::PermissionDenied,
        &["Acquire", "\"jobs/x\""],
    );
    let f = c.node(follower)?.metrics();
    assert_eq!(
        f.forwarded_total, forwarded_before,
        "a refused call was forwarded"
    );
    assert_eq!(f.auth_denied_total, 2);
    assert_eq!(f.auth_unauthenticated_total, 1);
    assert_eq!(
        observe(&mut api, ADMIN).await?,
        before,
        "a refused call changed state"
    );

    // Permitted calls through the follower reach the leader with the
    // caller's token, and the leader checks it again (it would answer
    // UNAUTHENTICATED without it).
    let leader_checked = c.node(leader)?.metrics();
    let cs = open(&mut api, CHUNK, "chunkserver-1").await?;
    let lease = api
        .acquire(bearer(Some(CHUNK), acquire_req(cs, "chunk/7", false, 0)))
        .await?
        .into_inner()
        .lease
        .expect("a lease");
    assert_eq!(lease.session_id, cs.id);
    assert!(c.node(follower)?.metrics().forwarded_total >= forwarded_before + 2);
    let l = c.node(leader)?.metrics();
    assert_eq!(
        l.auth_unauthenticated_total,
        leader_checked.auth_unauthenticated_total
    );
    assert_eq!(l.auth_denied_total, leader_checked.auth_denied_total);
    c.shutdown().await
}
