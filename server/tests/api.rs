//! Every endpoint's happy path and bad inputs, against an in-process server on port 0,
//! once with SQLite and once with PostgreSQL.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::SinkExt as _;
use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;

fn assert_code<T: std::fmt::Debug>(
    r: Result<T, Failure>,
    status: u16,
    code: ErrorCode,
) -> ErrorBody {
    let f = r.expect_err("expected an error");
    assert_eq!(f.status.as_u16(), status, "{:?}", f.body);
    assert_eq!(f.body.code, code, "{:?}", f.body);
    f.body
}

async fn accounts_and_devices(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.limits.max_devices_per_account = 2).await;
    let alice = server.register("alice", 2).await;
    let bob = server.register("bob", 2).await;
    let anon = server.client(None);

    // Registration errors.
    let mut req = RegisterRequest {
        username: "alice".into(),
        invite: None,
        id_token: None,
        device_name: None,
        keys: keys(0, 0),
    };
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 409, ErrorCode::UsernameTaken);
    req.username = "Not Valid".into();
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 400, ErrorCode::BadRequest);
    req.username = "carol".into();
    req.keys.identity_key = Bytes(vec![]);
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 400, ErrorCode::BadRequest);
    req.keys = keys(201, 0);
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 413, ErrorCode::PayloadTooLarge);
    let raw = |body: &'static str, ct: &'static str| {
        anon.request(Method::POST, "/v1/accounts")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = decode::<RegisterResponse>(raw("{}", "application/json").await.unwrap()).await;
    assert_code(r, 400, ErrorCode::BadRequest);
    let r = decode::<RegisterResponse>(raw("{not json", "application/json").await.unwrap()).await;
    assert_code(r, 400, ErrorCode::BadRequest);
    let r = decode::<RegisterResponse>(raw("{}", "text/plain").await.unwrap()).await;
    assert_code(r, 415, ErrorCode::UnsupportedMediaType);
    let bad_b64 = r#"{"username":"dave","keys":{"identity_key":"!!","signed_prekey":{"id":1,"public_key":"AA==","signature":"AA=="},"kem_last_resort_prekey":{"id":1,"public_key":"AA==","signature":"AA=="}}}"#;
    let r = decode::<RegisterResponse>(raw(bad_b64, "application/json").await.unwrap()).await;
    let body = assert_code(r, 400, ErrorCode::BadRequest);
    assert!(body.message.contains("base64"), "{}", body.message);

    // Authentication.
    let (_, own): (_, DeviceList) = alice
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(own.username, "alice");
    assert_eq!(own.devices.len(), 1);
    assert_eq!(own.devices[0].name.as_deref(), Some("phone"));
    let r = anon
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);
    for header in ["Bearer", "Bearer x.y.z", "Basic abc", "Bearer 1.1.AAAA"] {
        let response = anon
            .request(Method::GET, "/v1/devices")
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_code(
            decode::<DeviceList>(response).await,
            401,
            ErrorCode::Unauthorized,
        );
    }
    let mut forged = alice.credential.clone().unwrap();
    forged.secret[0] ^= 1;
    let r = server
        .client(Some(&forged))
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);
    forged = bob.credential.clone().unwrap();
    forged.account = alice.account();
    let r = server
        .client(Some(&forged))
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);

    // Adding devices, up to the cap.
    let add = AddDeviceRequest {
        device_name: Some("laptop".into()),
        keys: keys(1, 0),
    };
    let (status, added): (_, AddDeviceResponse) = alice
        .call(Method::POST, "/v1/devices", Some(&add))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(added.device_id, DeviceId(2));
    let laptop = server.client(Some(&added.credential));
    let (_, own): (_, DeviceList) = laptop
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(own.devices.len(), 2);
    let r = alice
        .call::<_, AddDeviceResponse>(Method::POST, "/v1/devices", Some(&add))
        .await;
    assert_code(r, 409, ErrorCode::TooManyDevices);

    // Others see devices without names.
    let (_, theirs): (_, DeviceList) = bob
        .call::<(), _>(Method::GET, "/v1/users/alice/devices", None)
        .await
        .unwrap();
    assert_eq!(theirs.devices.len(), 2);
    assert!(theirs.devices.iter().all(|d| d.name.is_none()));
    let r = bob
        .call::<(), DeviceList>(Method::GET, "/v1/users/nobody/devices", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let r = anon
        .call::<(), DeviceList>(Method::GET, "/v1/users/alice/devices", None)
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);

    // Removing a device revokes it at once.
    alice
        .call_empty::<()>(Method::DELETE, "/v1/devices/2", None)
        .await
        .unwrap();
    let r = laptop
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);
    let r = alice
        .call_empty::<()>(Method::DELETE, "/v1/devices/2", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let r = alice
        .call_empty::<()>(Method::DELETE, "/v1/devices/abc", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    // Bob cannot remove Alice's device 1 (he has no device 1 other than his own... which
    // is his, so use a number he lacks).
    let r = bob
        .call_empty::<()>(Method::DELETE, "/v1/devices/7", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    // Device numbers are not reused.
    let (_, again): (_, AddDeviceResponse) = alice
        .call(Method::POST, "/v1/devices", Some(&add))
        .await
        .unwrap();
    assert_eq!(again.device_id, DeviceId(3));
    server.stop().await;
}
both!(accounts_and_devices);

/// Device linking through a provisioning channel, and account deletion.
async fn linking_and_deletion(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limits.provisioning_channels_per_minute = 3;
    })
    .await;
    let alice = server.register("alice", 2).await;
    let bob = server.register("bob", 2).await;
    let anon = server.client(None);

    // The new device opens a channel; anyone with its id reads the key.
    let open = OpenChannelRequest {
        public_key: Bytes(vec![5; 1217]),
    };
    let (status, opened): (_, OpenChannelResponse) = anon
        .call(Method::POST, "/v1/provisioning", Some(&open))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(opened.channel.len(), 22);
    let path = format!("/v1/provisioning/{}", opened.channel);
    let (_, state): (_, ChannelState) = anon.call::<(), _>(Method::GET, &path, None).await.unwrap();
    assert_eq!(
        (state.public_key, state.message),
        (open.public_key.clone(), None)
    );
    for bad in [
        "/v1/provisioning/AAAAAAAAAAAAAAAAAAAAAA",
        "/v1/provisioning/not-an-id",
    ] {
        let r = anon.call::<(), ChannelState>(Method::GET, bad, None).await;
        assert_code(r, 404, ErrorCode::NotFound);
    }
    let r = anon
        .call::<_, OpenChannelResponse>(
            Method::POST,
            "/v1/provisioning",
            Some(&OpenChannelRequest {
                public_key: Bytes(vec![0; 5000]),
            }),
        )
        .await;
    assert_code(r, 400, ErrorCode::BadRequest);

    // Linking before an answer, or with a made-up token, is refused alike.
    let link = |token: &str| LinkDeviceRequest {
        channel: opened.channel.clone(),
        link_token: token.into(),
        device_name: Some("laptop".into()),
        keys: keys(2, 100),
    };
    let token = "a-one-time-link-token-of-32-chars";
    let r = anon
        .call::<_, AddDeviceResponse>(Method::POST, "/v1/devices/link", Some(&link(token)))
        .await;
    assert_code(r, 404, ErrorCode::NotFound);

    // An existing device answers once (a credential is needed).
    let answer = AnswerChannelRequest {
        message: Bytes(vec![9; 2000]),
        link_token: token.into(),
    };
    let r = anon.call_empty(Method::PUT, &path, Some(&answer)).await;
    assert_code(r, 401, ErrorCode::Unauthorized);
    let short = AnswerChannelRequest {
        link_token: "short".into(),
        ..answer.clone()
    };
    let r = alice.call_empty(Method::PUT, &path, Some(&short)).await;
    assert_code(r, 400, ErrorCode::BadRequest);
    alice
        .call_empty(Method::PUT, &path, Some(&answer))
        .await
        .unwrap();
    let r = bob.call_empty(Method::PUT, &path, Some(&answer)).await;
    assert_code(r, 409, ErrorCode::Conflict);
    let (_, state): (_, ChannelState) = anon.call::<(), _>(Method::GET, &path, None).await.unwrap();
    assert_eq!(state.message, Some(answer.message.clone()));

    let r = anon
        .call::<_, AddDeviceResponse>(
            Method::POST,
            "/v1/devices/link",
            Some(&link("not-the-token-that-was-given")),
        )
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let (status, added): (_, AddDeviceResponse) = anon
        .call(Method::POST, "/v1/devices/link", Some(&link(token)))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(added.credential.account, alice.account());
    let laptop = server.client(Some(&added.credential));
    let (_, own): (_, DeviceList) = laptop
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(own.devices.len(), 2);
    assert_eq!(own.devices[1].name.as_deref(), Some("laptop"));
    // Each device's identity key is listed, for everyone.
    let (_, theirs): (_, DeviceList) = bob
        .call::<(), _>(Method::GET, "/v1/users/alice/devices", None)
        .await
        .unwrap();
    assert_eq!(theirs.devices[1].identity_key, keys(0, 0).identity_key);
    assert!(theirs.devices[1].name.is_none());
    // The channel is gone: the token works once.
    let r = anon
        .call::<_, AddDeviceResponse>(Method::POST, "/v1/devices/link", Some(&link(token)))
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    // Opening channels is rate limited for everyone together (3 a minute here).
    let mut limited = false;
    for _ in 0..3 {
        let r = anon
            .call::<_, OpenChannelResponse>(Method::POST, "/v1/provisioning", Some(&open))
            .await;
        if let Err(failure) = r {
            assert_eq!(failure.body.code, ErrorCode::RateLimited);
            limited = true;
        }
    }
    assert!(limited);

    // Deleting the account: every device's credential stops at once, the name is free.
    alice
        .call_empty::<()>(Method::DELETE, "/v1/accounts/me", None)
        .await
        .unwrap();
    for device in [&alice, &laptop] {
        let r = device
            .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await;
        assert_code(r, 401, ErrorCode::Unauthorized);
    }
    let r = bob
        .call::<(), DeviceList>(Method::GET, "/v1/users/alice/devices", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let new_alice = server.register("alice", 1).await;
    assert_ne!(new_alice.account(), alice.account());
    let (_, theirs): (_, DeviceList) = bob
        .call::<(), _>(Method::GET, "/v1/users/alice/devices", None)
        .await
        .unwrap();
    assert_eq!(theirs.devices.len(), 1);
    server.stop().await;
}
both!(linking_and_deletion);

async fn invites(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.open_registration = false).await;
    let anon = server.client(None);
    let mut req = RegisterRequest {
        username: "alice".into(),
        invite: None,
        id_token: None,
        device_name: None,
        keys: keys(0, 0),
    };
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 403, ErrorCode::InviteRequired);
    req.invite = Some("deadbeef".into());
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 403, ErrorCode::InviteRequired);
    // Make an invite the way `tacit-server invite create` does, on the same database.
    let url = match &server.db {
        Some(db) => db.url.clone(),
        None => format!(
            "sqlite://{}",
            server.data_dir.path().join("tacit.db").display()
        ),
    };
    let store = tacit_server::store::open(&url).await.unwrap();
    let config = Arc::new(tacit_server::config::Config::default());
    let token = tacit_server::service::Services::new(store.clone(), config)
        .create_invite(tacit_server::service::Origin::Host)
        .await
        .unwrap();
    store.close().await;
    req.invite = Some(token);
    let (status, _): (_, RegisterResponse) = anon
        .call(Method::POST, "/v1/accounts", Some(&req))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    req.username = "bob".into();
    let r = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&req))
        .await;
    assert_code(r, 403, ErrorCode::InviteRequired);
    server.stop().await;
}
both!(invites);

async fn keys_and_claims(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limits.claims_per_minute_per_requester = 6;
        c.limits.max_prekeys_per_upload = 10;
    })
    .await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 0).await;

    let (_, count): (_, PrekeyCount) = alice
        .call::<(), _>(Method::GET, "/v1/keys/count", None)
        .await
        .unwrap();
    assert_eq!(
        count,
        PrekeyCount {
            one_time_prekeys: 1,
            one_time_kem_prekeys: 1
        }
    );
    let upload = UploadKeysRequest {
        signed_prekey: Some(signed(2, 7)),
        one_time_prekeys: keys(3, 10).one_time_prekeys,
        one_time_kem_prekeys: keys(2, 10).one_time_kem_prekeys,
        ..Default::default()
    };
    alice
        .call_empty(Method::PUT, "/v1/keys", Some(&upload))
        .await
        .unwrap();
    let (_, count): (_, PrekeyCount) = alice
        .call::<(), _>(Method::GET, "/v1/keys/count", None)
        .await
        .unwrap();
    assert_eq!(
        count,
        PrekeyCount {
            one_time_prekeys: 4,
            one_time_kem_prekeys: 3
        }
    );

    // Bad uploads.
    let too_many = UploadKeysRequest {
        one_time_prekeys: keys(11, 100).one_time_prekeys,
        ..Default::default()
    };
    assert_code(
        alice
            .call_empty(Method::PUT, "/v1/keys", Some(&too_many))
            .await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    let mut dup = keys(2, 100).one_time_prekeys;
    dup[1].id = dup[0].id;
    let dup = UploadKeysRequest {
        one_time_prekeys: dup,
        ..Default::default()
    };
    assert_code(
        alice.call_empty(Method::PUT, "/v1/keys", Some(&dup)).await,
        400,
        ErrorCode::BadRequest,
    );
    let empty = UploadKeysRequest {
        identity_key: Some(Bytes(vec![])),
        ..Default::default()
    };
    assert_code(
        alice
            .call_empty(Method::PUT, "/v1/keys", Some(&empty))
            .await,
        400,
        ErrorCode::BadRequest,
    );
    let big = UploadKeysRequest {
        identity_key: Some(Bytes(vec![0; 5000])),
        ..Default::default()
    };
    assert_code(
        alice.call_empty(Method::PUT, "/v1/keys", Some(&big)).await,
        400,
        ErrorCode::BadRequest,
    );
    assert_code(
        server
            .client(None)
            .call_empty(Method::PUT, "/v1/keys", Some(&upload))
            .await,
        401,
        ErrorCode::Unauthorized,
    );

    // Claims: one-time keys once each, then the last-resort KEM key.
    let claim = ClaimBundlesRequest::default();
    let mut x25519 = Vec::new();
    let mut kem_last_resort = 0;
    for _ in 0..5 {
        let (_, b): (_, PrekeyBundles) = bob
            .call(Method::POST, "/v1/users/alice/bundles", Some(&claim))
            .await
            .unwrap();
        assert_eq!(b.bundles.len(), 1);
        let b = &b.bundles[0];
        assert_eq!(b.device_id, DeviceId(1));
        assert_eq!(b.signed_prekey.id, 2);
        if let Some(k) = &b.one_time_prekey {
            x25519.push(k.id);
        }
        if b.kem_prekey_is_last_resort {
            kem_last_resort += 1;
            assert_eq!(b.kem_prekey.public_key.as_slice(), &[3; 32]);
        }
    }
    x25519.sort_unstable();
    assert_eq!(x25519, vec![0, 10, 11, 12]);
    assert_eq!(kem_last_resort, 2);
    let (_, count): (_, PrekeyCount) = alice
        .call::<(), _>(Method::GET, "/v1/keys/count", None)
        .await
        .unwrap();
    assert_eq!(
        count,
        PrekeyCount {
            one_time_prekeys: 0,
            one_time_kem_prekeys: 0
        }
    );

    // Bad claims.
    let r = bob
        .call::<_, PrekeyBundles>(Method::POST, "/v1/users/nobody/bundles", Some(&claim))
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let some = ClaimBundlesRequest {
        device_ids: vec![DeviceId(9)],
    };
    let r = bob
        .call::<_, PrekeyBundles>(Method::POST, "/v1/users/alice/bundles", Some(&some))
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let r = server
        .client(None)
        .call::<_, PrekeyBundles>(Method::POST, "/v1/users/alice/bundles", Some(&claim))
        .await;
    assert_code(r, 401, ErrorCode::Unauthorized);
    // The sixth device bundle within a minute is refused for bob, not for alice.
    let one = ClaimBundlesRequest {
        device_ids: vec![DeviceId(1)],
    };
    let (_, _): (_, PrekeyBundles) = bob
        .call(Method::POST, "/v1/users/alice/bundles", Some(&one))
        .await
        .unwrap();
    let r = bob
        .call::<_, PrekeyBundles>(Method::POST, "/v1/users/alice/bundles", Some(&one))
        .await;
    assert_code(r, 429, ErrorCode::RateLimited);
    let (_, _): (_, PrekeyBundles) = alice
        .call(Method::POST, "/v1/users/bob/bundles", Some(&one))
        .await
        .unwrap();
    server.stop().await;
}
both!(keys_and_claims);

async fn concurrent_claims(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limits.claims_per_minute_per_requester = 1000;
        c.rate_limits.claims_per_minute_per_target = 1000;
    })
    .await;
    let _alice = server.register("alice", 5).await;
    let mut claimers = Vec::new();
    for i in 0..8 {
        claimers.push(server.register(&format!("claimer{i}"), 0).await);
    }
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let c = claimers[i % claimers.len()].clone();
            tokio::spawn(async move {
                let (_, b): (_, PrekeyBundles) = c
                    .call(
                        Method::POST,
                        "/v1/users/alice/bundles",
                        Some(&ClaimBundlesRequest::default()),
                    )
                    .await
                    .unwrap();
                b
            })
        })
        .collect();
    let mut x25519 = BTreeMap::new();
    let mut kem = BTreeMap::new();
    for t in tasks {
        let b = t.await.unwrap();
        let b = &b.bundles[0];
        if let Some(k) = &b.one_time_prekey {
            *x25519.entry(k.id).or_insert(0) += 1;
        }
        if !b.kem_prekey_is_last_resort {
            *kem.entry(b.kem_prekey.id).or_insert(0) += 1;
        }
    }
    let once: BTreeMap<u32, i32> = (0..5).map(|id| (id, 1)).collect();
    assert_eq!(
        x25519, once,
        "each one-time X25519 key handed out exactly once"
    );
    assert_eq!(kem, once, "each one-time KEM key handed out exactly once");
    server.stop().await;
}
both!(concurrent_claims);

async fn messages(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.max_envelope_bytes = 1024;
        c.limits.max_mailbox_depth = 3;
    })
    .await;
    let alice = server.register("alice", 0).await;
    let (_, a2): (_, AddDeviceResponse) = alice
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
    let alice2 = server.client(Some(&a2.credential));
    let bob = server.register("bob", 0).await;
    let (_, b2): (_, AddDeviceResponse) = bob
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
    let bob2 = server.client(Some(&b2.credential));

    // Device-set mismatches store nothing and say what to fix.
    let body = assert_code(
        alice.send("m1", "bob", &[(1, b"x")], &[(2, b"y")]).await,
        409,
        ErrorCode::DeviceMismatch,
    );
    let m = body.mismatch.unwrap();
    assert_eq!(
        m.missing,
        vec![DeviceAddress {
            username: "bob".into(),
            device_id: DeviceId(2)
        }]
    );
    assert!(m.stale.is_empty());
    let body = assert_code(
        alice
            .send("m1", "bob", &[(1, b"x"), (2, b"x"), (9, b"x")], &[])
            .await,
        409,
        ErrorCode::DeviceMismatch,
    );
    let m = body.mismatch.unwrap();
    assert_eq!(
        m.missing,
        vec![DeviceAddress {
            username: "alice".into(),
            device_id: DeviceId(2)
        }]
    );
    assert_eq!(
        m.stale,
        vec![DeviceAddress {
            username: "bob".into(),
            device_id: DeviceId(9)
        }]
    );
    let (_, batch): (_, EnvelopeBatch) = bob
        .call::<(), _>(Method::GET, "/v1/messages", None)
        .await
        .unwrap();
    assert!(batch.envelopes.is_empty());

    // A complete send, and its retry.
    let sent = alice
        .send(
            "m1",
            "bob",
            &[(1, b"to-bob-1"), (2, b"to-bob-2")],
            &[(2, b"to-alice-2")],
        )
        .await
        .unwrap();
    assert!(!sent.duplicate);
    let retry = alice
        .send(
            "m1",
            "bob",
            &[(1, b"to-bob-1"), (2, b"to-bob-2")],
            &[(2, b"to-alice-2")],
        )
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.server_timestamp, sent.server_timestamp);
    for (client, expected) in [
        (&bob, &b"to-bob-1"[..]),
        (&bob2, b"to-bob-2"),
        (&alice2, b"to-alice-2"),
    ] {
        let (_, batch): (_, EnvelopeBatch) = client
            .call::<(), _>(Method::GET, "/v1/messages", None)
            .await
            .unwrap();
        assert_eq!(batch.envelopes.len(), 1, "one envelope despite the retry");
        let e = &batch.envelopes[0];
        assert_eq!(e.ciphertext.0.as_slice(), expected);
        assert_eq!((e.sender.as_str(), e.sender_device), ("alice", DeviceId(1)));
        assert_eq!(e.server_timestamp, sent.server_timestamp);
        client
            .call_empty(
                Method::POST,
                "/v1/messages/ack",
                Some(&AckRequest { ids: vec![e.id] }),
            )
            .await
            .unwrap();
        let (_, batch): (_, EnvelopeBatch) = client
            .call::<(), _>(Method::GET, "/v1/messages", None)
            .await
            .unwrap();
        assert!(batch.envelopes.is_empty());
    }
    // A message to oneself goes to one's other devices.
    alice
        .send("note", "alice", &[(2, b"note")], &[])
        .await
        .unwrap();
    let (_, batch): (_, EnvelopeBatch) = alice2
        .call::<(), _>(Method::GET, "/v1/messages", None)
        .await
        .unwrap();
    assert_eq!(batch.envelopes[0].ciphertext.0.as_slice(), b"note");
    let ids = batch.envelopes.iter().map(|e| e.id).collect();
    alice2
        .call_empty(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
        .await
        .unwrap();
    assert_code(
        alice
            .send("note2", "alice", &[(2, b"n")], &[(2, b"n")])
            .await,
        409,
        ErrorCode::DeviceMismatch,
    );

    // Bad inputs.
    let all = |ct: &'static [u8]| [(1, ct), (2, ct)];
    assert_code(
        alice.send("e", "bob", &all(b""), &[(2, b"y")]).await,
        400,
        ErrorCode::BadRequest,
    );
    let big = vec![0u8; 1025];
    assert_code(
        alice
            .send("e", "bob", &[(1, &big), (2, b"x")], &[(2, b"y")])
            .await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    assert_code(
        alice.send("", "bob", &all(b"x"), &[(2, b"y")]).await,
        400,
        ErrorCode::BadRequest,
    );
    assert_code(
        alice
            .send(&"x".repeat(65), "bob", &all(b"x"), &[(2, b"y")])
            .await,
        400,
        ErrorCode::BadRequest,
    );
    assert_code(
        alice.send("e", "nobody", &all(b"x"), &[(2, b"y")]).await,
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        alice.send("e", "bob", &[], &[(2, b"y")]).await,
        400,
        ErrorCode::BadRequest,
    );
    assert_code(
        alice
            .send("e", "bob", &[(1, b"x"), (1, b"x")], &[(2, b"y")])
            .await,
        400,
        ErrorCode::BadRequest,
    );
    assert_code(
        server.client(None).send("e", "bob", &all(b"x"), &[]).await,
        401,
        ErrorCode::Unauthorized,
    );
    let many = AckRequest {
        ids: (0..1001).collect(),
    };
    assert_code(
        bob.call_empty(Method::POST, "/v1/messages/ack", Some(&many))
            .await,
        400,
        ErrorCode::BadRequest,
    );

    // Mailbox depth.
    for i in 0..3 {
        alice
            .send(&format!("f{i}"), "bob", &all(b"x"), &[(2, b"y")])
            .await
            .unwrap();
    }
    assert_code(
        alice.send("f3", "bob", &all(b"x"), &[(2, b"y")]).await,
        507,
        ErrorCode::MailboxFull,
    );
    server.stop().await;
}
both!(messages);

async fn websocket(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let url = server.ws_url();

    let mut s1 = bob.connect(&url).await;
    assert!(s1.backlog().await.is_empty());
    alice.send("m1", "bob", &[(1, b"one")], &[]).await.unwrap();
    let e1 = s1.envelope().await;
    assert_eq!(e1.ciphertext.0.as_slice(), b"one");
    // Unacknowledged, it survives a new connection, which replaces the old one.
    let mut s2 = bob.connect(&url).await;
    assert!(matches!(s1.next().await, Next::Closed(Some(4000))));
    let backlog = s2.backlog().await;
    assert_eq!(backlog, vec![e1.clone()]);
    alice.send("m2", "bob", &[(1, b"two")], &[]).await.unwrap();
    let e2 = s2.envelope().await;
    s2.ack_sync(vec![e1.id, e2.id]).await;
    // Bad frames answer with an error frame and keep the socket.
    s2.ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{\"type\":\"nope\"}".into(),
        ))
        .await
        .unwrap();
    match s2.frame().await {
        ServerFrame::Error(body) => assert_eq!(body.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    s2.send(&ClientFrame::Ack {
        ids: (0..1001).collect(),
    })
    .await;
    assert!(matches!(s2.frame().await, ServerFrame::Error(_)));
    drop(s2);
    let mut s3 = bob.connect(&url).await;
    assert!(
        s3.backlog().await.is_empty(),
        "acknowledged envelopes are gone"
    );

    // Without a valid credential there is no socket.
    let mut forged = bob.credential.clone().unwrap();
    forged.secret[3] ^= 1;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {forged}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    // A plain GET is not an upgrade.
    let r = bob
        .call::<(), EnvelopeBatch>(Method::GET, "/v1/ws", None)
        .await;
    assert_code(r, 400, ErrorCode::BadRequest);

    // Removing the device closes its socket.
    let (_, added): (_, AddDeviceResponse) = bob
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
    let bob2 = server.client(Some(&added.credential));
    let mut s4 = bob2.connect(&url).await;
    assert!(s4.backlog().await.is_empty());
    bob.call_empty::<()>(
        Method::DELETE,
        &format!("/v1/devices/{}", added.device_id),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(s4.next().await, Next::Closed(Some(4001))));

    // Shutdown closes the remaining socket with 1001 and run() returns.
    let stopping = tokio::spawn(server.stop());
    assert!(matches!(s3.next().await, Next::Closed(Some(1001))));
    stopping.await.unwrap();
}
both!(websocket);

async fn operations(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.max_body_bytes = 4096;
        c.limits.max_envelope_bytes = 1024;
        c.metrics.token = Some(tacit_server::config::Redacted(
            "scrape-token-0123456789".into(),
        ));
    })
    .await;
    let alice = server.register("alice", 3).await;
    let anon = server.client(None);
    let text = |path: &'static str| {
        let anon = anon.clone();
        async move {
            let r = anon
                .request(Method::GET, path)
                .bearer_auth("scrape-token-0123456789")
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(text("/healthz").await.0, StatusCode::OK);
    assert_eq!(text("/readyz").await.0, StatusCode::OK);
    let (status, metrics) = text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "tacit_http_requests_total{route=\"/v1/accounts\",status=\"201\"} 1",
        "tacit_http_request_duration_seconds_bucket",
        "tacit_websockets_open 0",
        "tacit_mailbox_envelopes 0",
        "tacit_mailbox_depth_max 0",
        "tacit_one_time_prekeys{kind=\"x25519\"} 3",
        "tacit_one_time_prekeys{kind=\"ml_kem\"} 3",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    // Unknown routes and methods answer with the error body.
    let r = anon
        .call::<(), ErrorBody>(Method::GET, "/v2/nothing", None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    let r = anon
        .call::<(), ErrorBody>(Method::PATCH, "/v1/messages", None)
        .await;
    assert_code(r, 405, ErrorCode::MethodNotAllowed);
    // Oversized bodies are refused before anything else.
    let big = format!("{{\"ids\":[{}]}}", vec!["1"; 3000].join(","));
    let response = alice
        .request(Method::POST, "/v1/messages/ack")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_code(
        decode::<ErrorBody>(response).await,
        413,
        ErrorCode::PayloadTooLarge,
    );

    // The OpenAPI document lists exactly the routes that exist.
    let (status, doc) = text("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 40);
    for (path, ops) in paths {
        let concrete = path
            .replace("{username}", "alice")
            .replace("{device_id}", "77")
            .replace("{role}", "admin")
            .replace("{id}", &"ab".repeat(32));
        for method in ops.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let response = alice
                .request(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("route not found"),
                "{method} {path}: {status} {body}"
            );
            assert!(
                status != StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {path}"
            );
        }
    }
    server.stop().await;
}
both!(operations);

/// TLS is the default: a self-signed certificate is generated into the data directory and
/// a client that trusts (pins) it can connect.
#[tokio::test]
async fn tls_by_default() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.plain_http = false).await;
    let cert_path = server.data_dir.path().join("tls/cert.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cert_path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate generated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pem = std::fs::read(&cert_path).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("https://{}/healthz", server.addr))
            .send()
            .await
        {
            assert_eq!(r.status(), StatusCode::OK);
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "TLS connection failed");
    // Plain HTTP on the TLS port does not work.
    let plain = reqwest::get(format!("http://{}/healthz", server.addr)).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    // An untrusting client is refused.
    assert!(
        reqwest::get(format!("https://{}/healthz", server.addr))
            .await
            .is_err()
    );
    server.stop().await;
}

/// Many envelopes at once overflow a socket's in-memory queue; the socket then reads its
/// mailbox, and every envelope still arrives exactly once, in order.
async fn push_overflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let mut socket = bob.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let sends: Vec<_> = (0..300)
        .map(|i| {
            let alice = alice.clone();
            tokio::spawn(async move {
                alice
                    .send(&format!("o{i}"), "bob", &[(1, b"x")], &[])
                    .await
                    .unwrap();
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    let mut ids = Vec::new();
    while ids.len() < 300 {
        ids.push(socket.envelope().await.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, no repeats");
    socket.ack_sync(ids).await;
    drop(socket);
    let mut socket = bob.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    server.stop().await;
}
both!(push_overflow);

/// A socket that answers no heartbeat is closed after the timeout.
#[tokio::test]
async fn silent_socket_times_out() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.websocket.heartbeat_interval_secs = 1;
        c.websocket.heartbeat_timeout_secs = 2;
    })
    .await;
    let bob = server.register("bob", 0).await;
    let mut socket = bob.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    // Read nothing (so no pong is sent) for longer than the timeout.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    match socket.next().await {
        Next::Closed(code) => assert_eq!(code, Some(1001)),
        Next::Frame(f) => panic!("unexpected {f:?}"),
    }
    server.stop().await;
}
