//! The verifier against a discovery document and JWKS served on loopback by the test,
//! with tokens the test signs (RS256, ES256, EdDSA) and forges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{Kind, Oidc, Refusal, VerifyError};
use crate::config::OidcSettings;

const RSA_DER: &[u8] = include_bytes!("testdata/rsa2048-pkcs1.der");
const RSA_PUBLIC_DER: &[u8] = include_bytes!("testdata/rsa2048-public-pkcs1.der");
const RSA_N: &str = include_str!("testdata/rsa2048-n.txt");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of the test provider and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn rsa(kid: &str) -> Signer {
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(RSA_DER),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"}),
    }
}

fn ec(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn ed(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&pair.serialize_der()),
        // As oidc-provider publishes them.
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(pair.public_key_raw())}),
    }
}

/// The provider's two documents, served on loopback; the JWKS can change under it.
struct Provider {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

async fn provider(keys: Vec<Value>) -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(keys));
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let (k, f) = (keys.clone(), jwks_fetches.clone());
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move {
                f.fetch_add(1, Ordering::SeqCst);
                let keys = k.lock().unwrap().clone();
                Json(json!({ "keys": keys }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Provider {
        issuer,
        keys,
        jwks_fetches,
    }
}

fn settings(issuer: &str, extra: &str) -> OidcSettings {
    toml::from_str(&format!(
        "issuer = \"{issuer}\"\nclient_id = \"tacit\"\n{extra}"
    ))
    .unwrap()
}

fn now() -> i64 {
    crate::service::now().0 / 1000
}

fn claims(issuer: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "aud": "tacit", "sub": "sub-alice", "iat": now, "exp": now + 300,
           "preferred_username": "Alice@Example.com", "sid": "session-1",
           "groups": ["tacit-admins", "staff"]})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(signer.alg);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

fn reason(result: Result<super::Verified, VerifyError>) -> Refusal {
    match result {
        Err(VerifyError::Refused { reason, message }) => {
            assert!(!message.is_empty());
            reason
        }
        Err(e) => panic!("not a refusal: {e}"),
        Ok(v) => panic!("accepted: {:?}", v.subject),
    }
}

#[tokio::test]
async fn each_algorithm_verifies_and_gives_username_and_roles() {
    let (r, e, d) = (rsa("rsa-1"), ec("ec-1"), ed("ed-1"));
    let p = provider(vec![r.jwk.clone(), e.jwk.clone(), d.jwk.clone()]).await;
    let oidc = Oidc::new(settings(
        &p.issuer,
        "allowed_domains = [\"example.com\"]\ngroups_claim = \"groups\"\n\
         [role_map]\ntacit-admins = \"admin\"",
    ));
    for signer in [&r, &e, &d] {
        let token = sign(signer, &claims(&p.issuer));
        let v = oidc.verify(&token, Kind::IdToken, now()).await.unwrap();
        assert_eq!(v.subject.as_deref(), Some("sub-alice"));
        assert_eq!(v.sid.as_deref(), Some("session-1"));
        assert_eq!(oidc.username(&v).unwrap(), "alice");
        assert_eq!(oidc.roles(&v), vec![tacit_api::Role::Admin]);
    }
    // The keys were fetched once, then served from the cache.
    assert_eq!(p.jwks_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn time_issuer_and_audience_refusals() {
    let r = rsa("rsa-1");
    let p = provider(vec![r.jwk.clone()]).await;
    let oidc = Oidc::new(settings(&p.issuer, ""));
    let now = now();
    let with = |patch: Value| {
        let mut c = claims(&p.issuer);
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign(&r, &c)
    };
    let cases = [
        (
            json!({"exp": now - 120, "iat": now - 400}),
            Refusal::Expired,
        ),
        (json!({"nbf": now + 300}), Refusal::NotYetValid),
        (
            json!({"iat": now + 300, "exp": now + 900}),
            Refusal::IssuedInFuture,
        ),
        (json!({"iat": now - 3600, "exp": now + 300}), Refusal::Stale),
        (json!({"iss": "https://evil.example"}), Refusal::Issuer),
        (json!({"aud": "someone-else"}), Refusal::Audience),
        (
            json!({"aud": ["tacit", "other"], "azp": "other"}),
            Refusal::Audience,
        ),
        (json!({"preferred_username": "x"}), Refusal::UsernameInvalid),
    ];
    for (patch, expected) in cases {
        let token = with(patch.clone());
        let got = match oidc.verify(&token, Kind::IdToken, now).await {
            Ok(v) => reason(oidc.username(&v).map(|_| v)),
            Err(e) => reason(Err(e)),
        };
        assert_eq!(got, expected, "{patch}");
    }
    // Within the leeway, exp just past is still accepted; several audiences with azp too.
    oidc.verify(&with(json!({"exp": now - 30})), Kind::IdToken, now)
        .await
        .unwrap();
    oidc.verify(
        &with(json!({"aud": ["tacit", "other"], "azp": "tacit"})),
        Kind::IdToken,
        now,
    )
    .await
    .unwrap();
    // sub is required in an ID token.
    let mut c = claims(&p.issuer);
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        reason(oidc.verify(&sign(&r, &c), Kind::IdToken, now).await),
        Refusal::Malformed
    );
}

#[tokio::test]
async fn algorithm_confusion_and_tampering_are_refused() {
    let r = rsa("rsa-1");
    let p = provider(vec![r.jwk.clone()]).await;
    let oidc = Oidc::new(settings(&p.issuer, ""));
    let c = claims(&p.issuer);
    let valid = sign(&r, &c);
    oidc.verify(&valid, Kind::IdToken, now()).await.unwrap();

    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64(c.to_string().as_bytes())
    );
    assert_eq!(
        reason(oidc.verify(&none, Kind::IdToken, now()).await),
        Refusal::Algorithm
    );
    // HS256 "signed" with the RSA public key's bytes, naming the RSA key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &c,
        &EncodingKey::from_secret(RSA_PUBLIC_DER).unwrap(),
    )
    .unwrap();
    assert_eq!(
        reason(oidc.verify(&hs, Kind::IdToken, now()).await),
        Refusal::Algorithm
    );
    // ES256 claimed for the RSA key.
    let e = ec("rsa-1");
    assert_eq!(
        reason(oidc.verify(&sign(&e, &c), Kind::IdToken, now()).await),
        Refusal::Algorithm
    );
    // A payload changed after signing.
    let mut parts: Vec<&str> = valid.split('.').collect();
    let mut changed = c.clone();
    changed["sub"] = json!("sub-mallory");
    let payload = b64(changed.to_string().as_bytes());
    parts[1] = &payload;
    assert_eq!(
        reason(oidc.verify(&parts.join("."), Kind::IdToken, now()).await),
        Refusal::Signature
    );
    assert_eq!(
        reason(oidc.verify("not a token", Kind::IdToken, now()).await),
        Refusal::Malformed
    );
    // An algorithm left out of the allow-list.
    let only_es = Oidc::new(settings(&p.issuer, "algorithms = [\"ES256\"]"));
    assert_eq!(
        reason(only_es.verify(&valid, Kind::IdToken, now()).await),
        Refusal::Algorithm
    );
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_is_refused_until_the_interval() {
    let r = rsa("rsa-1");
    let p = provider(vec![r.jwk.clone()]).await;
    let oidc = Oidc::new(settings(&p.issuer, "jwks_refresh_min_secs = 0"));
    oidc.verify(&sign(&r, &claims(&p.issuer)), Kind::IdToken, now())
        .await
        .unwrap();
    // The provider rotates: a new key the server has not cached.
    let rotated = ec("ec-2");
    p.keys.lock().unwrap().push(rotated.jwk.clone());
    oidc.verify(&sign(&rotated, &claims(&p.issuer)), Kind::IdToken, now())
        .await
        .unwrap();
    assert_eq!(p.jwks_fetches.load(Ordering::SeqCst), 2);
    // A kid never published is refused after its refetch.
    let never = ec("never");
    assert_eq!(
        reason(
            oidc.verify(&sign(&never, &claims(&p.issuer)), Kind::IdToken, now())
                .await
        ),
        Refusal::UnknownKey
    );

    // With the default interval, unknown kids cost one fetch at most per 30 s.
    let slow = Oidc::new(settings(&p.issuer, ""));
    let before = p.jwks_fetches.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(
            reason(
                slow.verify(&sign(&never, &claims(&p.issuer)), Kind::IdToken, now())
                    .await
            ),
            Refusal::UnknownKey
        );
    }
    assert_eq!(p.jwks_fetches.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn unreachable_provider_is_unavailable_not_refused() {
    // A port nothing listens on (bound, then closed).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let oidc = Oidc::new(settings(&issuer, ""));
    let token = sign(&rsa("rsa-1"), &claims(&issuer));
    // Asked once, then the failure is answered from memory for a second.
    for _ in 0..3 {
        assert!(matches!(
            oidc.verify(&token, Kind::IdToken, now()).await,
            Err(VerifyError::Unavailable(_))
        ));
    }
    // The provider comes up on that address: after the second, it is asked again.
    let listener = tokio::net::TcpListener::bind(issuer.trim_start_matches("http://"))
        .await
        .unwrap();
    let r = rsa("rsa-1");
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let jwks = json!({"keys": [r.jwk]});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/jwks", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    oidc.verify(&token, Kind::IdToken, now()).await.unwrap();
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let p = provider(vec![rsa("rsa-1").jwk]).await;
    // The configured issuer differs from the document's by a trailing slash only.
    let oidc = Oidc::new(settings(&format!("{}/", p.issuer), ""));
    let err = oidc.warm_up().await.unwrap_err();
    assert!(
        matches!(err, super::FetchError::IssuerMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn logout_tokens() {
    let r = rsa("rsa-1");
    let p = provider(vec![r.jwk.clone()]).await;
    let oidc = Oidc::new(settings(&p.issuer, ""));
    let now = now();
    let good = json!({"iss": p.issuer, "aud": "tacit", "iat": now, "exp": now + 120,
        "jti": "j-1", "sid": "session-1",
        "events": {super::verify::LOGOUT_EVENT: {}}});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.typ = Some("logout+jwt".into());
    let token = |c: &Value| jsonwebtoken::encode(&header, c, &r.key).unwrap();
    let v = oidc.verify(&token(&good), Kind::Logout, now).await.unwrap();
    assert_eq!(v.sid.as_deref(), Some("session-1"));
    // The replay key is the jti's, not the token's: the same jti signed again is the same.
    let mut again = good.clone();
    again["iat"] = json!(now - 1);
    let v2 = oidc
        .verify(&token(&again), Kind::Logout, now)
        .await
        .unwrap();
    assert_eq!(v.replay_key, v2.replay_key);

    let mut no_events = good.clone();
    no_events.as_object_mut().unwrap().remove("events");
    let mut nonce = good.clone();
    nonce["nonce"] = json!("n");
    let mut no_jti = good.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    let mut nobody = good.clone();
    nobody.as_object_mut().unwrap().remove("sid");
    for bad in [no_events, nonce, no_jti, nobody] {
        assert_eq!(
            reason(oidc.verify(&token(&bad), Kind::Logout, now).await),
            Refusal::Malformed,
            "{bad}"
        );
    }
    // An ID token (typ JWT) is no logout token.
    let mut id_header = header.clone();
    id_header.typ = Some("JWT+other".into());
    let wrong_typ = jsonwebtoken::encode(&id_header, &good, &r.key).unwrap();
    assert_eq!(
        reason(oidc.verify(&wrong_typ, Kind::Logout, now).await),
        Refusal::Malformed
    );
}

#[test]
fn config_refuses_other_algorithms() {
    let mut config = crate::config::Config {
        oidc: Some(settings(
            "https://idp.example",
            "algorithms = [\"RS256\", \"HS256\"]",
        )),
        ..crate::config::Config::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("oidc.algorithms") && err.contains("HS256"),
        "{err}"
    );
    config.oidc = Some(settings("http://idp.example", ""));
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("oidc.issuer"), "{err}");
    config.oidc = Some(settings("http://127.0.0.1:9", ""));
    config.validate().unwrap();
    assert_eq!(
        config.oidc.as_ref().unwrap().accepted_audiences(),
        vec!["tacit".to_owned()]
    );
}
