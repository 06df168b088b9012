//! Administration through `/v1/admin/...` and on the server host (a store of its own, as
//! `tacit-server admin` has), against a server started by the harness in this process,
//! once with SQLite and once with PostgreSQL: every role boundary, disabling
//! (sockets closed within a second, every later request refused), removal, deletion and
//! registering again, invites with use counts, quotas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tacit_api::*;
use tacit_server::service::Admin;
use tacit_tests::*;

fn assert_code<T: std::fmt::Debug>(r: Result<T, Failure>, status: u16, code: ErrorCode) {
    let f = r.expect_err("expected an error");
    assert_eq!(f.status.as_u16(), status, "{:?}", f.body);
    assert_eq!(f.body.code, code, "{:?}", f.body);
}

/// Every admin operation: method, path, body.
fn operations() -> Vec<(Method, String, Option<serde_json::Value>)> {
    let invite = "ab".repeat(32);
    vec![
        (Method::GET, "/v1/admin/users".into(), None),
        (Method::GET, "/v1/admin/users?search=a&limit=5".into(), None),
        (Method::GET, "/v1/admin/users/dave".into(), None),
        (Method::POST, "/v1/admin/users/dave/disable".into(), None),
        (Method::POST, "/v1/admin/users/dave/enable".into(), None),
        (
            Method::DELETE,
            "/v1/admin/users/dave/devices/2".into(),
            None,
        ),
        (
            Method::PUT,
            "/v1/admin/users/dave/roles/auditor".into(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/admin/users/dave/roles/auditor".into(),
            None,
        ),
        (
            Method::PUT,
            "/v1/admin/users/dave/quota".into(),
            Some(json!({ "max_devices": 3 })),
        ),
        (Method::GET, "/v1/admin/invites".into(), None),
        (
            Method::POST,
            "/v1/admin/invites".into(),
            Some(json!({ "max_uses": 2 })),
        ),
        (Method::DELETE, format!("/v1/admin/invites/{invite}"), None),
        (Method::DELETE, "/v1/admin/users/dave".into(), None),
    ]
}

async fn status_of(
    client: &Client,
    method: &Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, ErrorCode) {
    let mut request = client.request(method.clone(), path);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let code = serde_json::from_str::<ErrorBody>(&text).map_or(ErrorCode::Unknown, |b| b.code);
    (status, code)
}

async fn role_boundaries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 1).await;
    let carol = server.register("carol", 1).await;
    let dave = server.register("dave", 1).await;
    let anon = server.client(None);
    let host = server.host().await;
    assert!(
        host.set_role(Admin::Host, "alice", Role::Admin, true)
            .await
            .unwrap()
    );
    assert!(
        host.set_role(Admin::Host, "carol", Role::Auditor, true)
            .await
            .unwrap()
    );

    // Nobody but an admin reaches an admin operation: a member and an auditor get 403
    // `forbidden`, and nothing changes.
    for (method, path, body) in operations() {
        for (who, client) in [("member", &bob), ("auditor", &carol)] {
            let (status, code) = status_of(client, &method, &path, body.as_ref()).await;
            assert_eq!(
                (status, code),
                (403, ErrorCode::Forbidden),
                "{who}: {method} {path}"
            );
        }
        let (status, code) = status_of(&anon, &method, &path, body.as_ref()).await;
        assert_eq!(
            (status, code),
            (401, ErrorCode::Unauthorized),
            "anonymous: {method} {path}"
        );
    }
    let (_, own): (_, DeviceList) = dave
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(own.devices.len(), 1, "dave is untouched");

    // The audit log: an auditor and an admin read it, a member does not.
    let (status, code) = status_of(&bob, &Method::GET, "/v1/admin/audit", None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    for reader in [&carol, &alice] {
        let (_, page): (_, AuditPage) = reader
            .call::<(), _>(Method::GET, "/v1/admin/audit?limit=1000", None)
            .await
            .unwrap();
        let actions: Vec<&str> = page
            .entries
            .iter()
            .filter_map(|e| e["event"]["action"].as_str())
            .collect();
        assert!(actions.contains(&"role-grant"), "{actions:?}");
    }

    // An admin reaches each operation (dave is deleted last).
    let dave_device = {
        let (_, added): (_, AddDeviceResponse) = dave
            .call(
                Method::POST,
                "/v1/devices",
                Some(&AddDeviceRequest {
                    device_name: None,
                    keys: keys(0, 0),
                }),
            )
            .await
            .unwrap();
        added.device_id
    };
    assert_eq!(dave_device, DeviceId(2));
    for (method, path, body) in operations() {
        let (status, code) = status_of(&alice, &method, &path, body.as_ref()).await;
        let expected_missing = path.contains("/v1/admin/invites/");
        if expected_missing {
            assert_eq!(
                (status, code),
                (404, ErrorCode::NotFound),
                "{method} {path}"
            );
        } else {
            assert!(
                (200..300).contains(&status),
                "admin: {method} {path}: {status} {code}"
            );
        }
    }
    assert_code(
        dave.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await,
        401,
        ErrorCode::Unauthorized,
    );
    // Revoking a role takes the access away at once.
    assert!(
        host.set_role(Admin::Host, "carol", Role::Auditor, false)
            .await
            .unwrap()
    );
    let (status, code) = status_of(&carol, &Method::GET, "/v1/admin/audit", None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    // Bad input gets a clear error.
    for path in [
        "/v1/admin/users?limit=0",
        "/v1/admin/users?limit=abc",
        "/v1/admin/users?bogus=1",
        "/v1/admin/audit?limit=1001",
    ] {
        let (status, code) = status_of(&alice, &Method::GET, path, None).await;
        assert_eq!((status, code), (400, ErrorCode::BadRequest), "{path}");
    }
    for path in ["/v1/admin/users/nobody", "/v1/admin/users/NOT VALID"] {
        let (status, code) = status_of(&alice, &Method::GET, path, None).await;
        assert_eq!((status, code), (404, ErrorCode::NotFound), "{path}");
    }
    let (status, code) = status_of(
        &alice,
        &Method::PUT,
        "/v1/admin/users/bob/roles/owner",
        None,
    )
    .await;
    assert_eq!((status, code), (404, ErrorCode::NotFound));
    let (status, code) = status_of(
        &alice,
        &Method::PUT,
        "/v1/admin/users/bob/quota",
        Some(&json!({ "max_devices": 0 })),
    )
    .await;
    assert_eq!((status, code), (400, ErrorCode::BadRequest));
    let (status, code) = status_of(
        &alice,
        &Method::POST,
        "/v1/admin/invites",
        Some(&json!({ "expires_in_secs": 0 })),
    )
    .await;
    assert_eq!((status, code), (400, ErrorCode::BadRequest));
    server.stop().await;
}
both!(role_boundaries);

/// Waits (up to 1 s) for the socket to close; returns how long it took.
async fn closed_within_a_second(socket: &mut Socket) -> Duration {
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
        Ok(Next::Closed(_)) => start.elapsed(),
        Ok(Next::Frame(f)) => panic!("expected the socket to close, got {f:?}"),
        Err(_) => panic!("the socket was still open after 1 s"),
    }
}

async fn disabling(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 1).await;
    let host = server.host().await;
    host.set_role(Admin::Host, "alice", Role::Admin, true)
        .await
        .unwrap();
    let url = server.ws_url();

    // Through the API: bob's socket closes within a second, and every request of his is
    // refused as disabled; his name stays taken.
    let mut socket = bob.connect(&url).await;
    assert!(socket.backlog().await.is_empty());
    alice
        .call_empty::<()>(Method::POST, "/v1/admin/users/bob/disable", None)
        .await
        .unwrap();
    let took = closed_within_a_second(&mut socket).await;
    eprintln!("API disable closed the socket in {took:?}");
    assert_code(
        bob.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await,
        403,
        ErrorCode::AccountDisabled,
    );
    assert_code(
        bob.call::<(), PrekeyCount>(Method::GET, "/v1/keys/count", None)
            .await,
        403,
        ErrorCode::AccountDisabled,
    );
    let again = server.client(None);
    let r = again
        .call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: "bob".into(),
                invite: None,
                id_token: None,
                device_name: None,
                keys: keys(0, 0),
            }),
        )
        .await;
    assert_code(r, 409, ErrorCode::UsernameTaken);
    let (_, user): (_, AdminUser) = alice
        .call::<(), _>(Method::GET, "/v1/admin/users/bob", None)
        .await
        .unwrap();
    assert!(user.disabled_at.is_some());
    // Enabled again, bob works at once.
    alice
        .call_empty::<()>(Method::POST, "/v1/admin/users/bob/enable", None)
        .await
        .unwrap();
    bob.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();

    // On the server host (another store, as `tacit-server admin` has): the running server
    // learns it from the database and closes the socket within a second too.
    let mut socket = bob.connect(&url).await;
    assert!(socket.backlog().await.is_empty());
    assert!(
        host.set_user_disabled(Admin::Host, "bob", true)
            .await
            .unwrap()
    );
    let took = closed_within_a_second(&mut socket).await;
    eprintln!("host disable closed the socket in {took:?}");
    assert_code(
        bob.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await,
        403,
        ErrorCode::AccountDisabled,
    );
    assert!(
        !host
            .set_user_disabled(Admin::Host, "bob", true)
            .await
            .unwrap(),
        "once"
    );
    assert!(
        host.set_user_disabled(Admin::Host, "bob", false)
            .await
            .unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match bob
            .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await
        {
            Ok(_) => break,
            Err(f) if Instant::now() < deadline => {
                assert_eq!(f.body.code, ErrorCode::AccountDisabled);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(f) => panic!("still refused 2 s after enabling: {:?}", f.body),
        }
    }
    server.stop().await;
}
both!(disabling);

async fn removal_and_deletion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 1).await;
    let host = server.host().await;
    host.set_role(Admin::Host, "alice", Role::Admin, true)
        .await
        .unwrap();
    let url = server.ws_url();
    let (_, added): (_, AddDeviceResponse) = bob
        .call(
            Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                device_name: Some("lost phone".into()),
                keys: keys(0, 0),
            }),
        )
        .await
        .unwrap();
    let lost = server.client(Some(&added.credential));
    let mut lost_socket = lost.connect(&url).await;
    assert!(lost_socket.backlog().await.is_empty());

    // The lost phone is removed: its socket closes at once, its credential is refused, and
    // a send that still names it is told it is stale (it receives nothing more).
    alice
        .call_empty::<()>(
            Method::DELETE,
            &format!("/v1/admin/users/bob/devices/{}", added.device_id),
            None,
        )
        .await
        .unwrap();
    closed_within_a_second(&mut lost_socket).await;
    assert_code(
        lost.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await,
        401,
        ErrorCode::Unauthorized,
    );
    let r = alice
        .send(
            "m1",
            "bob",
            &[(1, b"one"), (added.device_id.0, b"two")],
            &[],
        )
        .await;
    let f = r.expect_err("a send to the removed device");
    assert_eq!(f.body.code, ErrorCode::DeviceMismatch);
    assert_eq!(
        f.body.mismatch.unwrap().stale,
        vec![DeviceAddress {
            username: "bob".into(),
            device_id: added.device_id
        }]
    );
    // Not the last device.
    let (status, code) = status_of(
        &alice,
        &Method::DELETE,
        "/v1/admin/users/bob/devices/1",
        None,
    )
    .await;
    assert_eq!((status, code), (409, ErrorCode::Conflict));

    // Bob lost every device: his account is deleted, and he registers again under his name
    // with a new identity key, which his contacts see in his device list.
    let (_, before): (_, DeviceList) = alice
        .call::<(), _>(Method::GET, "/v1/users/bob/devices", None)
        .await
        .unwrap();
    alice
        .call_empty::<()>(Method::DELETE, "/v1/admin/users/bob", None)
        .await
        .unwrap();
    assert_code(
        bob.call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await,
        401,
        ErrorCode::Unauthorized,
    );
    let mut new_keys = keys(1, 0);
    new_keys.identity_key = Bytes(vec![0x42; 32]);
    let (status, _): (_, RegisterResponse) = server
        .client(None)
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: "bob".into(),
                invite: None,
                id_token: None,
                device_name: None,
                keys: new_keys,
            }),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    let (_, after): (_, DeviceList) = alice
        .call::<(), _>(Method::GET, "/v1/users/bob/devices", None)
        .await
        .unwrap();
    assert_ne!(
        before.devices[0].identity_key,
        after.devices[0].identity_key
    );
    server.stop().await;
}
both!(removal_and_deletion);

async fn invites_and_quotas(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.open_registration = false).await;
    let host = server.host().await;
    let token = host
        .create_invite(tacit_server::service::Origin::Host)
        .await
        .unwrap();
    let anon = server.client(None);
    let register = |name: &str, invite: &str| RegisterRequest {
        username: name.into(),
        invite: Some(invite.into()),
        id_token: None,
        device_name: None,
        keys: keys(0, 0),
    };
    let (_, alice): (_, RegisterResponse) = anon
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&register("alice", &token)),
        )
        .await
        .unwrap();
    let alice = server.client(Some(&alice.credential));
    host.set_role(Admin::Host, "alice", Role::Admin, true)
        .await
        .unwrap();

    // An invite for two registrations admits two.
    let (_, created): (_, CreateInviteResponse) = alice
        .call(
            Method::POST,
            "/v1/admin/invites",
            Some(&CreateInviteRequest {
                expires_in_secs: Some(3600),
                max_uses: Some(2),
            }),
        )
        .await
        .unwrap();
    for name in ["bob", "carol"] {
        anon.call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&register(name, &created.token)),
        )
        .await
        .unwrap();
    }
    assert_code(
        anon.call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&register("dave", &created.token)),
        )
        .await,
        403,
        ErrorCode::InviteRequired,
    );
    let (_, list): (_, InviteList) = alice
        .call::<(), _>(Method::GET, "/v1/admin/invites", None)
        .await
        .unwrap();
    let listed = list
        .invites
        .iter()
        .find(|i| i.id == created.invite.id)
        .unwrap();
    assert_eq!((listed.uses, listed.max_uses), (2, 2));
    assert!(listed.expires_at.is_some());
    // A revoked invite admits nobody.
    let (_, other): (_, CreateInviteResponse) = alice
        .call(
            Method::POST,
            "/v1/admin/invites",
            Some(&CreateInviteRequest::default()),
        )
        .await
        .unwrap();
    alice
        .call_empty::<()>(
            Method::DELETE,
            &format!("/v1/admin/invites/{}", other.invite.id),
            None,
        )
        .await
        .unwrap();
    assert_code(
        anon.call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&register("dave", &other.token)),
        )
        .await,
        403,
        ErrorCode::InviteRequired,
    );

    // A quota of one device: alice cannot add a second until it is lifted.
    alice
        .call_empty(
            Method::PUT,
            "/v1/admin/users/alice/quota",
            Some(&SetQuotaRequest {
                max_devices: Some(1),
                blob_quota_bytes: Some(100),
            }),
        )
        .await
        .unwrap();
    let add = AddDeviceRequest {
        device_name: None,
        keys: keys(0, 0),
    };
    assert_code(
        alice
            .call::<_, AddDeviceResponse>(Method::POST, "/v1/devices", Some(&add))
            .await,
        409,
        ErrorCode::TooManyDevices,
    );
    let (_, user): (_, AdminUser) = alice
        .call::<(), _>(Method::GET, "/v1/admin/users/alice", None)
        .await
        .unwrap();
    assert_eq!(
        (user.max_devices, user.blob_quota_bytes),
        (Some(1), Some(100))
    );
    alice
        .call_empty(
            Method::PUT,
            "/v1/admin/users/alice/quota",
            Some(&SetQuotaRequest::default()),
        )
        .await
        .unwrap();
    alice
        .call::<_, AddDeviceResponse>(Method::POST, "/v1/devices", Some(&add))
        .await
        .unwrap();

    // Every change is in the audit log, which verifies.
    let (_, page): (_, AuditPage) = alice
        .call::<(), _>(Method::GET, "/v1/admin/audit?limit=1000", None)
        .await
        .unwrap();
    let actions: Vec<&str> = page
        .entries
        .iter()
        .filter_map(|e| e["event"]["action"].as_str())
        .collect();
    for action in [
        "invite-create",
        "invite-revoke",
        "quota-set",
        "role-grant",
        "account-register",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    host.audit_verify(&[], None).await.unwrap();
    server.stop().await;
}
both!(invites_and_quotas);
