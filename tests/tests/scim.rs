//! SCIM 2.0 provisioning (`/scim/v2`) against a server started by the harness in this
//! process, once with SQLite and once with PostgreSQL, with the request bodies Entra ID
//! and Okta send (docs/design/SSO-RESEARCH.md §3, from their public docs): lookup by
//! filter, create, deactivate (a device's socket closed within a second), reactivate,
//! delete (the account gone), a wrong token, a userName that is no username.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tacit_api::*;
use tacit_server::config::{Config, ScimSettings};
use tacit_server::service::Admin;
use tacit_tests::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef-scim-test-token";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A server with `[scim]` (and `[oidc] allowed_domains = ["okta.local"]`, whose
/// normalisation SCIM shares); the token file lives in `dir`.
async fn scim_server(backend: Backend, dir: &tempfile::TempDir) -> TestServer {
    let file = dir.path().join("scim.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let oidc = Config::from_toml(
        "[oidc]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"tacit\"\n\
         allowed_domains = [\"okta.local\"]\n",
    )
    .unwrap()
    .oidc;
    TestServer::start_with(backend, |c| {
        c.scim = Some(ScimSettings {
            bearer_token_file: file,
            require_provisioning: false,
        });
        c.oidc = oidc;
    })
    .await
}

struct Scim<'a> {
    server: &'a TestServer,
    token: &'a str,
}

impl Scim<'_> {
    /// A request with the SCIM token; `content_type` for a body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .server
            .http
            .request(method, format!("{}/scim/v2{path}", self.server.base))
            .bearer_auth(self.token);
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        if status != StatusCode::NO_CONTENT {
            assert_eq!(
                response.headers()["content-type"],
                "application/scim+json",
                "{path}"
            );
        }
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }
}

/// Waits (up to 1 s) for the socket to close; returns how long it took.
async fn closed_within_a_second(socket: &mut Socket) -> Duration {
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
        Ok(Next::Closed(_)) => start.elapsed(),
        Ok(Next::Frame(f)) => panic!("expected the socket to close, got {f:?}"),
        Err(_) => panic!("the socket was still open after 1 s"),
    }
}

/// Waits (up to 3 s) until `device`'s requests are accepted (`enabled`) or refused as
/// disabled: a change made on the host reaches the running server through its revocation poll.
async fn wait_until_enabled(device: &Client, enabled: bool) {
    let by = Instant::now() + Duration::from_secs(3);
    loop {
        match device
            .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
            .await
        {
            Ok(_) if enabled => return,
            Err(refused) if !enabled => {
                assert_eq!(refused.body.code, ErrorCode::AccountDisabled);
                return;
            }
            _ => {}
        }
        assert!(
            Instant::now() < by,
            "the host's change (enabled: {enabled}) never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts at once that `device`'s requests are refused as disabled.
async fn assert_disabled(device: &Client) {
    let refused = device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.body.code, ErrorCode::AccountDisabled);
}

async fn register(server: &TestServer, username: &str) -> Result<Client, Failure> {
    let (_, r): (_, RegisterResponse) = server
        .client(None)
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: username.into(),
                invite: None,
                id_token: None,
                device_name: None,
                keys: keys(1, 0),
            }),
        )
        .await?;
    Ok(Client {
        credential: Some(r.credential),
        ..server.client(None)
    })
}

async fn audited(server: &TestServer, action: &str) -> i64 {
    server
        .count(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = '{action}'"
        ))
        .await
}

fn entra_create(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": user_name,
        "active": true,
        "emails": [{"primary": true, "type": "work",
                    "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName",
                 "givenName": "givenName"},
        "roles": [],
    })
}

fn okta_create() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true,
    })
}

async fn entra_id(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = scim_server(backend, &dir).await;
    let scim = Scim {
        server: &server,
        token: TOKEN,
    };
    const SCIM_JSON: &str = "application/scim+json";
    let entra_name = "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee";

    // Entra's lookup of a user that is not there: the empty ListResponse.
    let (status, list) = scim
        .call(
            Method::GET,
            &format!("/Users?filter=userName+eq+%22{entra_name}%22"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], 0);
    assert_eq!(list["Resources"], json!([]));
    assert_eq!(list["startIndex"], 1);
    assert_eq!(
        list["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );

    // Entra's own test user has a name of 46 characters: not a username.
    let (status, error) = scim
        .call(
            Method::POST,
            "/Users",
            Some((SCIM_JSON, entra_create(entra_name))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["scimType"], "invalidValue");
    assert_eq!(error["schemas"], json!([ERROR]));
    assert_eq!(error["status"], "400");

    // The same body with a name that fits: created, its case folded.
    let (status, user) = scim
        .call(
            Method::POST,
            "/Users",
            Some((SCIM_JSON, entra_create("Test_User_00aa"))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["userName"], "test_user_00aa");
    assert_eq!(user["active"], true);
    assert_eq!(user["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    let id = user["id"].as_str().unwrap().to_owned();
    let (status, list) = scim
        .call(
            Method::GET,
            "/Users?filter=userName+eq+%22TEST_USER_00AA%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());

    // Entra's default disable, capital Replace and the string "False", before the user
    // has registered: the name cannot be registered while the user is inactive.
    let (status, user) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                SCIM_JSON,
                json!({"schemas": [PATCH_OP],
                       "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["active"], false);
    let refused = register(&server, "test_user_00aa").await.err().unwrap();
    assert_eq!(refused.status.as_u16(), 403);
    assert_eq!(refused.body.code, ErrorCode::Forbidden);

    // Enabled (the compliant form), registered, a socket open: Entra's tutorial form
    // disables it, the socket closes within a second.
    let (status, user) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                SCIM_JSON,
                json!({"schemas": [PATCH_OP],
                       "Operations": [{"op": "replace", "path": "active", "value": true}]}),
            )),
        )
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
    let device = register(&server, "test_user_00aa").await.unwrap();
    let mut socket = device.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let (status, _) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                SCIM_JSON,
                json!({"Operations": [{"op": "Replace", "path": "active", "value": false}],
                       "schemas": [PATCH_OP]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let took = closed_within_a_second(&mut socket).await;
    eprintln!("SCIM disable closed the socket in {took:?}");
    let refused = device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.body.code, ErrorCode::AccountDisabled);
    assert_eq!(
        server
            .count(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = 'user-disable' \
                 AND target_user = 'test_user_00aa' AND details LIKE '%scim%'"
            )
            .await,
        1
    );

    // Entra's other PATCHes: attributes not kept are ignored; a userName change refused.
    let (status, user) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                SCIM_JSON,
                json!({"schemas": [PATCH_OP], "Operations": [
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x@y.z"},
                    {"op": "Replace", "path": "name.familyName", "value": "Jensen"},
                    {"op": "Add", "path": "nickName", "value": "Babs"},
                    {"op": "Add", "path": "active", "value": "True"},
                ]}),
            )),
        )
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
    device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    let (status, error) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                SCIM_JSON,
                json!({"schemas": [PATCH_OP],
                       "Operations": [{"op": "Replace", "path": "userName", "value": "other"}]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["scimType"], "mutability");

    // Delete: 204, the account is gone and its name free; the user is 404 after.
    let (status, _) = scim
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .count(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM accounts WHERE username = 'test_user_00aa'"
            )
            .await,
        0
    );
    let refused = device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status.as_u16(), 401);
    let (status, error) = scim.call(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["schemas"], json!([ERROR]));
    assert_eq!(error["status"], "404");
    assert!(error["detail"].is_string());
    let (status, _) = scim
        .call(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(audited(&server, "scim-user-create").await, 1);
    assert_eq!(audited(&server, "scim-user-update").await, 4);
    assert_eq!(audited(&server, "scim-user-delete").await, 1);
    assert_eq!(audited(&server, "account-delete").await, 1);
    server.stop().await;
}
both!(entra_id);

async fn okta(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = scim_server(backend, &dir).await;
    let scim = Scim {
        server: &server,
        token: TOKEN,
    };
    const JSON: &str = "application/json";

    // Okta's create: the @okta.local suffix is an allowed domain; the password ignored.
    let (status, user) = scim
        .call(Method::POST, "/Users", Some((JSON, okta_create())))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["userName"], "test.user");
    assert_eq!(user["displayName"], "Test User");
    assert!(user.get("password").is_none());
    let id = user["id"].as_str().unwrap().to_owned();
    let (status, error) = scim
        .call(Method::POST, "/Users", Some((JSON, okta_create())))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["scimType"], "uniqueness");
    assert_eq!(error["schemas"], json!([ERROR]));

    // Okta's lookup, percent-encoded, with its paging.
    let (status, list) = scim
        .call(
            Method::GET,
            "/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["startIndex"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());
    let (_, list) = scim
        .call(Method::GET, "/Users?startIndex=2&count=100", None)
        .await;
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"], json!([]));
    let (status, error) = scim
        .call(
            Method::GET,
            "/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22a%40b%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["scimType"], "invalidFilter");

    // An OIN app's deactivation, PATCH without a path: the socket closes within a second.
    let device = register(&server, "test.user").await.unwrap();
    let mut socket = device.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let (status, user) = scim
        .call(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some((
                JSON,
                json!({"schemas": [PATCH_OP],
                       "Operations": [{"op": "replace", "value": {"active": false}}]}),
            )),
        )
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));
    let took = closed_within_a_second(&mut socket).await;
    eprintln!("SCIM disable closed the socket in {took:?}");
    let refused = device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.body.code, ErrorCode::AccountDisabled);

    // A wizard app's PUT of the whole user: active again, then deactivated by PUT too.
    let mut whole = okta_create();
    whole["id"] = json!(id);
    let (status, user) = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some((JSON, whole.clone())),
        )
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(true)));
    device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    let mut socket = device.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    whole["active"] = json!(false);
    let (status, user) = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some((JSON, whole.clone())),
        )
        .await;
    assert_eq!((status, &user["active"]), (StatusCode::OK, &json!(false)));
    closed_within_a_second(&mut socket).await;

    // A deactivation is applied each time it is sent: an account enabled behind the IdP's
    // back (here by an administrator on the host; or a disable that failed the first time)
    // is disabled again by the next `active: false`.
    let host = server.host().await;
    assert!(
        host.set_user_disabled(Admin::Host, "test.user", false)
            .await
            .unwrap()
    );
    wait_until_enabled(&device, true).await;
    let (status, _) = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some((JSON, whole.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_disabled(&device).await;
    // An activation only when SCIM's state changes: once active, a full PUT with
    // `active: true` does not lift a disable an administrator made.
    whole["active"] = json!(true);
    let (status, _) = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some((JSON, whole.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    device
        .call::<(), DeviceList>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert!(
        host.set_user_disabled(Admin::Host, "test.user", true)
            .await
            .unwrap()
    );
    wait_until_enabled(&device, false).await;
    let (status, _) = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some((JSON, whole.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_disabled(&device).await;

    whole["userName"] = json!("someone.else@okta.local");
    let (status, error) = scim
        .call(Method::PUT, &format!("/Users/{id}"), Some((JSON, whole)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["scimType"], "mutability");

    // Unknown ids, other content types, a userName that is no username.
    let (status, error) = scim.call(Method::GET, "/Users/no-such-id", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["schemas"], json!([ERROR]));
    let (status, _) = scim
        .call(Method::POST, "/Users", Some(("text/plain", okta_create())))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut bad = okta_create();
    bad["userName"] = json!("test user@elsewhere.example");
    let (status, error) = scim.call(Method::POST, "/Users", Some((JSON, bad))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["scimType"], "invalidValue");

    // The discovery documents.
    let (status, config) = scim.call(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["filter"]["supported"], true);
    assert_eq!(config["bulk"]["supported"], false);
    let (status, types) = scim.call(Method::GET, "/ResourceTypes", None).await;
    assert_eq!(
        (status, &types["Resources"][0]["id"]),
        (StatusCode::OK, &json!("User"))
    );
    let (status, _) = scim.call(Method::GET, "/Schemas", None).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
both!(okta);

async fn tokens(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = scim_server(backend, &dir).await;
    for token in [
        "wrong-token-0123456789abcdef0123456789",
        &TOKEN[..TOKEN.len() - 1],
    ] {
        let scim = Scim {
            server: &server,
            token,
        };
        let (status, error) = scim.call(Method::GET, "/Users", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error["schemas"], json!([ERROR]));
        assert_eq!(error["status"], "401");
        let (status, _) = scim
            .call(
                Method::POST,
                "/Users",
                Some(("application/scim+json", okta_create())),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = server
        .http
        .get(format!("{}/scim/v2/Users", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/scim+json");
    assert_eq!(audited(&server, "scim-auth-refused").await, 5);
    assert_eq!(audited(&server, "scim-user-create").await, 0);
    let (status, _) = Scim {
        server: &server,
        token: TOKEN,
    }
    .call(Method::GET, "/Users", None)
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    // Without [scim], every SCIM route is 404 (as /v1/oidc/config without [oidc]).
    let server = TestServer::start(backend).await;
    let scim = Scim {
        server: &server,
        token: TOKEN,
    };
    for path in ["/Users", "/Users/x", "/ServiceProviderConfig", "/Schemas"] {
        let (status, error) = scim.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error["schemas"], json!([ERROR]));
    }
    server.stop().await;
}
both!(tokens);
