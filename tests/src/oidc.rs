//! A real OpenID Provider for the tests: `node tests/oidc/provider.mjs` (the npm package
//! `oidc-provider`, a certified implementation, pinned in `tests/oidc/package-lock.json`)
//! on loopback, with its `/__test/*` control endpoints.
//!
//! The provider starts first, because the Tacit server's configuration names its issuer;
//! [`OidcProvider::set_backchannel_logout_uri`] then points its client at the server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// How long the provider may take to print its `listening` line (it makes an RSA key).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The public client the provider knows (the script's default `OP_CLIENT_ID`).
pub const CLIENT_ID: &str = "tacit-cli";

/// A running `oidc-provider`, killed on drop.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    issuer: String,
    http: reqwest::Client,
}

/// The workspace's `tests/oidc` directory.
fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl OidcProvider {
    /// Starts the provider with ID tokens signed with `alg` (`RS256`, `ES256` or `EdDSA`)
    /// and the test accounts of the script (`sub-alice` = alice, `sub-bob` = bob); panics
    /// with what to do if Node.js or the npm install is missing.
    pub fn start(alg: &str) -> Self {
        let dir = provider_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "{}/node_modules is missing: run npm ci --prefix tests/oidc (./scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("OP_PORT", "0")
            .env("OP_TEST_CONTROL", "1")
            .env("OP_ID_TOKEN_ALG", alg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting node tests/oidc/provider.mjs failed: {e} (is Node.js installed?)")
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let issuer = match rx.recv_timeout(START_TIMEOUT) {
            Ok(issuer) => issuer,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the OpenID Provider printed no `listening` line: {e}");
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            child,
            issuer,
            http,
        }
    }

    /// The issuer URL (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn control(&self, path: &str, body: Value) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}/__test/{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "/__test/{path} answered {}",
            response.status()
        );
        response
    }

    /// The user `sub` approves `user_code` (what the provider's /device pages, login and
    /// consent do); returns the session id (`sid`) the ID token will carry.
    pub async fn approve(&self, user_code: &str, sub: &str) -> String {
        let answer: Value = self
            .control("approve", json!({ "user_code": user_code, "sub": sub }))
            .await
            .json()
            .await
            .unwrap();
        answer["sid"].as_str().unwrap().to_owned()
    }

    /// The user denies `user_code`: the device grant answers `access_denied`.
    pub async fn deny(&self, user_code: &str) {
        self.control("approve", json!({ "user_code": user_code, "deny": true }))
            .await;
    }

    /// The provider logs `sub` out of session `sid`: it signs a logout token and POSTs it to
    /// the client's `backchannel_logout_uri`. Panics unless that answered 200 or 204.
    pub async fn backchannel_logout(&self, sub: &str, sid: &str) {
        self.control("backchannel-logout", json!({ "sub": sub, "sid": sid }))
            .await;
    }

    /// New signing keys (new `kid`s) first in the JWKS, the old ones kept.
    pub async fn rotate(&self) {
        self.control("rotate", json!({})).await;
    }

    /// Where the provider POSTs logout tokens (e.g. `{server}/v1/oidc/backchannel-logout`).
    pub async fn set_backchannel_logout_uri(&self, uri: &str) {
        self.control("client", json!({ "backchannel_logout_uri": uri }))
            .await;
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
