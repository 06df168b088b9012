//! Sign-in with an OpenID Connect provider, over HTTP against the harness server (SQLite
//! and PostgreSQL), with a discovery document and JWKS this test serves on loopback and
//! tokens it signs or forges: each accepted or refused with its clear error, each refusal
//! audited with its reason; back-channel logout closes a socket within a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tacit_api::*;
use tacit_tests::*;

const RSA_DER: &[u8] = include_bytes!("../../server/src/oidc/testdata/rsa2048-pkcs1.der");
const RSA_PUBLIC_DER: &[u8] =
    include_bytes!("../../server/src/oidc/testdata/rsa2048-public-pkcs1.der");
const RSA_N: &str = include_str!("../../server/src/oidc/testdata/rsa2048-n.txt");
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn rsa(kid: &str) -> Signer {
    Signer {
        kid: kid.into(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(RSA_DER),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"}),
    }
}

fn ec(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let p = pair.public_key_raw();
    Signer {
        kid: kid.into(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])}),
    }
}

fn ed(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(pair.public_key_raw())}),
    }
}

/// Discovery and JWKS on loopback; the key list can change while it runs.
async fn provider(keys: Vec<Value>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(keys));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let k = keys.clone();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move { Json(json!({"keys": k.lock().unwrap().clone()})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (issuer, keys)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn id_claims(issuer: &str, sub: &str, name: &str, sid: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "aud": "tacit", "sub": sub, "iat": now, "exp": now + 300,
           "preferred_username": name, "sid": sid, "groups": ["tacit-admins"]})
}

fn sign(s: &Signer, claims: &Value) -> String {
    let mut header = Header::new(s.alg);
    header.kid = Some(s.kid.clone());
    jsonwebtoken::encode(&header, claims, &s.key).unwrap()
}

fn register_body(username: &str, token: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.into(),
        invite: None,
        id_token: Some(token.into()),
        device_name: Some("laptop".into()),
        keys: keys(1, 0),
    }
}

async fn audited(server: &TestServer, action: &str, detail: &str) -> i64 {
    server
        .count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = '{action}' AND details LIKE '%{detail}%'"
        ))
        .await
}

async fn oidc_tokens(backend: Backend) {
    let (r, e, d) = (rsa("rsa-1"), ec("ec-1"), ed("ed-1"));
    let (issuer, published) = provider(vec![r.jwk.clone(), e.jwk.clone(), d.jwk.clone()]).await;
    let settings: tacit_server::config::OidcSettings = toml::from_str(&format!(
        "issuer = \"{issuer}\"\nclient_id = \"tacit\"\nallowed_domains = [\"example.com\"]\n\
         groups_claim = \"groups\"\njwks_refresh_min_secs = 0\ninvites = false\n\
         [role_map]\ntacit-admins = \"admin\"\n"
    ))
    .unwrap();
    let server = TestServer::start_with(backend, |c| c.oidc = Some(settings)).await;
    let anon = server.client(None);

    // The client's configuration.
    let (_, config): (_, OidcConfig) = anon
        .call::<(), _>(Method::GET, "/v1/oidc/config", None)
        .await
        .unwrap();
    assert_eq!(config.issuer, issuer);
    assert_eq!(config.username_claim, "preferred_username");
    assert!(!config.invites);

    // Invite registration is closed (invites = false).
    let f = anon
        .call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: "mallory".into(),
                invite: None,
                id_token: None,
                device_name: None,
                keys: keys(1, 0),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(f.body.code, ErrorCode::BadRequest, "{:?}", f.body);

    // Valid: registration with an RS256 token; the claim's domain is stripped.
    let token = sign(
        &r,
        &id_claims(&issuer, "sub-alice", "Alice@example.com", "s1"),
    );
    let (status, reg): (_, RegisterResponse) = anon
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&register_body("alice", &token)),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    assert_eq!(audited(&server, "account-register", "oidc").await, 1);
    // The groups gave the admin role.
    let alice = Client {
        credential: Some(reg.credential.clone()),
        ..anon.clone()
    };
    alice
        .call::<(), AdminUserList>(Method::GET, "/v1/admin/users", None)
        .await
        .unwrap();

    // Replayed registration token.
    let f = anon
        .call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&register_body("alice", &token)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (f.status.as_u16(), f.body.code),
        (409, ErrorCode::IdTokenReplayed)
    );
    assert_eq!(
        audited(&server, "oidc-token-refused", "\"replayed\"").await,
        1
    );

    // A device signed in with a second token (ES256), found by sub, replaces the account's
    // devices: refused without consent (nothing changes, the token stays unused)...
    let second = sign(&e, &id_claims(&issuer, "sub-alice", "renamed-at-idp", "s2"));
    let sso_device = |replace_devices: bool| SsoDeviceRequest {
        id_token: second.clone(),
        device_name: Some("phone".into()),
        keys: keys(1, 100),
        replace_devices,
    };
    let f = anon
        .call::<_, SsoDeviceResponse>(Method::POST, "/v1/devices/sso", Some(&sso_device(false)))
        .await
        .unwrap_err();
    assert_eq!((f.status.as_u16(), f.body.code), (409, ErrorCode::Conflict));
    assert!(f.body.message.contains("replace_devices"), "{:?}", f.body);
    alice
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    // ... and with it, device 1 is signed out (its credential refused) and audited.
    let (status, added): (_, SsoDeviceResponse) = anon
        .call(Method::POST, "/v1/devices/sso", Some(&sso_device(true)))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    assert_eq!(
        (added.username.as_str(), added.device_id),
        ("alice", DeviceId(2))
    );
    assert_eq!(added.replaced_devices, vec![DeviceId(1)]);
    assert_eq!(audited(&server, "device-add", "oidc").await, 1);
    assert_eq!(audited(&server, "device-remove", "oidc").await, 1);
    let f = alice
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap_err();
    assert_eq!(f.status.as_u16(), 401);
    let phone = Client {
        credential: Some(added.credential.clone()),
        ..anon.clone()
    };
    // The recovered device adds another (a second device of the new identity).
    let (_, _third): (_, AddDeviceResponse) = phone
        .call(
            Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                device_name: None,
                keys: keys(1, 150),
            }),
        )
        .await
        .unwrap();
    // An EdDSA token registers another user.
    let bob = sign(&d, &id_claims(&issuer, "sub-bob", "bob", "s3"));
    anon.call::<_, RegisterResponse>(
        Method::POST,
        "/v1/accounts",
        Some(&register_body("bob", &bob)),
    )
    .await
    .unwrap();

    // Refusals, each with its reason in the message and in the audit log.
    let now = now();
    let carol = |patch: Value| {
        let mut c = id_claims(&issuer, "sub-carol", "carol", "s4");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let c = carol(json!({}));
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &c,
        &EncodingKey::from_secret(RSA_PUBLIC_DER).unwrap(),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64(c.to_string().as_bytes())
    );
    let valid = sign(&r, &c);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = b64(carol(json!({"sub": "sub-alice"})).to_string().as_bytes());
    let tampered = parts.join(".");
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&r, &carol(json!({"iat": now - 500, "exp": now - 200}))),
        ),
        ("not_yet_valid", sign(&r, &carol(json!({"nbf": now + 600})))),
        (
            "issuer",
            sign(&r, &carol(json!({"iss": "https://evil.example"}))),
        ),
        ("audience", sign(&r, &carol(json!({"aud": "other-client"})))),
        ("unknown_key", sign(&ec("never-published"), &c)),
        ("algorithm", none),
        ("algorithm", hs256),
        ("signature", tampered),
        (
            "username_invalid",
            sign(&r, &carol(json!({"preferred_username": "C a r o l"}))),
        ),
        (
            "username_mismatch",
            sign(&r, &carol(json!({"preferred_username": "caroline"}))),
        ),
    ];
    let mut seen = std::collections::HashMap::<&str, i64>::new();
    for (reason, token) in cases {
        let f = anon
            .call::<_, RegisterResponse>(
                Method::POST,
                "/v1/accounts",
                Some(&register_body("carol", &token)),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (f.status.as_u16(), f.body.code),
            (401, ErrorCode::IdTokenRefused),
            "{reason}"
        );
        assert!(
            f.body.message.contains(reason),
            "{reason}: {}",
            f.body.message
        );
        let n = seen.entry(reason).or_default();
        *n += 1;
        assert_eq!(
            audited(&server, "oidc-token-refused", &format!("\"{reason}\"")).await,
            *n,
            "{reason}"
        );
    }
    let f = anon
        .call::<_, RegisterResponse>(
            Method::POST,
            "/v1/accounts",
            Some(&register_body(
                "carol",
                &sign(&r, &carol(json!({"preferred_username": "caroline"}))),
            )),
        )
        .await
        .unwrap_err();
    assert!(
        f.body.message.contains("\"caroline\""),
        "{}",
        f.body.message
    );
    // A key the provider publishes later: refetched, then accepted.
    let rotated = ec("ec-2");
    let early = sign(&rotated, &c);
    published.lock().unwrap().push(rotated.jwk.clone());
    anon.call::<_, RegisterResponse>(
        Method::POST,
        "/v1/accounts",
        Some(&register_body("carol", &early)),
    )
    .await
    .unwrap();

    // Back-channel logout: malformed ones answer 400 invalid_request.
    let device2 = Client {
        credential: Some(added.credential.clone()),
        ..anon.clone()
    };
    let mut socket = device2.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let logout = |claims: &Value| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        header.typ = Some("logout+jwt".into());
        jsonwebtoken::encode(&header, claims, &r.key).unwrap()
    };
    let good = json!({"iss": issuer, "aud": "tacit", "iat": now, "exp": now + 120,
        "jti": "jti-1", "sub": "sub-alice", "events": {LOGOUT_EVENT: {}}});
    let post = |token: String| {
        let anon = anon.clone();
        async move {
            let response = anon
                .request(Method::POST, "/v1/oidc/backchannel-logout")
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            (status, cache, body)
        }
    };
    let mut no_events = good.clone();
    no_events.as_object_mut().unwrap().remove("events");
    let mut nonce = good.clone();
    nonce["nonce"] = json!("n-1");
    nonce["jti"] = json!("jti-2");
    for bad in [no_events, nonce] {
        let (status, cache, body) = post(logout(&bad)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(cache.as_deref(), Some("no-store"));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"],
            "invalid_request"
        );
    }
    // Valid: alice is disabled, her socket closes within a second.
    let token = logout(&good);
    let (status, cache, _) = post(token.clone()).await;
    assert_eq!((status, cache.as_deref()), (200, Some("no-store")));
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
        Ok(Next::Closed(_)) => eprintln!("logout closed the socket in {:?}", start.elapsed()),
        other => panic!("the socket did not close within 1 s: {:?}", other.is_ok()),
    }
    let f = device2
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap_err();
    assert_eq!(f.body.code, ErrorCode::AccountDisabled);
    assert_eq!(audited(&server, "oidc-logout", "\"count\":\"2\"").await, 1);
    assert_eq!(audited(&server, "user-disable", "oidc-logout").await, 1);
    // The same jti again: replayed.
    let (status, _, body) = post(token).await;
    assert_eq!(status, 400, "{body}");
    // Disabled: no device through the provider either.
    let f = anon
        .call::<_, SsoDeviceResponse>(
            Method::POST,
            "/v1/devices/sso",
            Some(&SsoDeviceRequest {
                id_token: sign(&r, &id_claims(&issuer, "sub-alice", "alice", "s5")),
                device_name: None,
                keys: keys(1, 200),
                replace_devices: true,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(f.body.code, ErrorCode::AccountDisabled);
    server.stop().await;
}
both!(oidc_tokens);

/// `backchannel_logout = "remove-devices"`: a logout token naming a session removes the
/// devices signed in with it (socket closed within a second); the others keep working.
async fn remove_devices(backend: Backend) {
    let r = rsa("rsa-1");
    let (issuer, _) = provider(vec![r.jwk.clone()]).await;
    let settings: tacit_server::config::OidcSettings = toml::from_str(&format!(
        "issuer = \"{issuer}\"\nclient_id = \"tacit\"\nbackchannel_logout = \"remove-devices\"\n"
    ))
    .unwrap();
    let server = TestServer::start_with(backend, |c| c.oidc = Some(settings)).await;
    let anon = server.client(None);
    let (_, reg): (_, RegisterResponse) = anon
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&register_body(
                "dave",
                &sign(&r, &id_claims(&issuer, "sub-dave", "dave", "s1")),
            )),
        )
        .await
        .unwrap();
    // The second device is added by the first (no provider session of its own); the
    // logout names the first one's session.
    let in_session = Client {
        credential: Some(reg.credential),
        ..anon.clone()
    };
    let (_, added): (_, AddDeviceResponse) = in_session
        .call(
            Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                device_name: None,
                keys: keys(1, 100),
            }),
        )
        .await
        .unwrap();
    let added_device = Client {
        credential: Some(added.credential),
        ..anon.clone()
    };
    let mut socket = in_session.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let now = now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.typ = Some("logout+jwt".into());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": issuer, "aud": "tacit", "iat": now, "exp": now + 120,
            "jti": "jti-dave", "sid": "s1", "events": {LOGOUT_EVENT: {}}}),
        &r.key,
    )
    .unwrap();
    let response = anon
        .request(Method::POST, "/v1/oidc/backchannel-logout")
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
        Ok(Next::Closed(_)) => {}
        other => panic!("the socket did not close within 1 s: {:?}", other.is_ok()),
    }
    let f = in_session
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap_err();
    assert_eq!(f.status.as_u16(), 401);
    let (_, own): (_, DeviceList) = added_device
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(own.devices.len(), 1);
    assert_eq!(audited(&server, "oidc-logout", "remove-devices").await, 1);
    assert_eq!(audited(&server, "device-remove", "oidc-logout").await, 1);
    server.stop().await;
}
both!(remove_devices);
