//! OpenID Connect end to end across real processes: a real OpenID Provider (`oidc-provider`
//! on Node.js, [`OidcProvider`]), the real `tacit-server` binary with an `[oidc]` section,
//! and real `tacit` CLI processes. Alice registers through the device grant, signs a second
//! device in the same way (which recovers the account onto it: the first device is signed
//! out, bob must trust the new identity), links a third from it with a code, and a
//! back-channel logout from the provider closes both devices' sockets within a second and
//! locks them out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tacit_tests::cli::{CLI, Cli};
use tacit_tests::{CLIENT_ID, OidcProvider, ServerProcess};

/// Alice's second device has a passphrase of its own.
const LAPTOP: Cli = Cli::new("another passphrase");
/// And her third.
const DESK: Cli = Cli::new("a third passphrase");

/// How long a CLI may wait for its sign-in line or to finish.
const STEP: Duration = Duration::from_secs(30);

/// Every line of a child's stderr, with when it arrived, on a channel.
fn stderr_lines(stderr: ChildStderr) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[cli] {line}");
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the line containing `needle`; returns it and when it came.
fn wait_line(
    lines: &mpsc::Receiver<(Instant, String)>,
    needle: &str,
    within: Duration,
) -> (Instant, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) if line.contains(needle) => return (at, line),
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} within {within:?}: {e}"),
        }
    }
}

/// The user code of the CLI's stable sign-in line
/// `tacit: sign in at URL with code CODE (or open URL)`.
fn user_code(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "code").unwrap();
    words[at + 1].to_owned()
}

/// The user approves `user_code` in a browser: the provider's /device page (with its
/// xsrf field), then its login and consent pages, as `sub`.
async fn approve_in_browser(provider: &OidcProvider, user_code: &str, sub: &str) {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let device = format!("{}/device", provider.issuer());
    let page = browser
        .get(&device)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf field on /device: {page}"))
        .to_owned();
    let response = browser
        .post(&device)
        .form(&[
            ("xsrf", xsrf.as_str()),
            ("user_code", user_code),
            ("confirm", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_redirection(),
        "POST /device: {}",
        response.status()
    );
    let location = response.headers()["location"].to_str().unwrap();
    let interaction = format!("{}{location}", provider.issuer());
    let end = browser_sign_in_with(&browser, provider, &interaction, sub).await;
    assert!(end.contains("/device/"), "{end}");
}

/// Runs `args` in `home` with `cli`, approves the device grant it starts as `sub` at the
/// provider (through its own pages, or its `/__test/approve` control endpoint, which also
/// tells the session id), and returns (stdout, the session id of the sign-in if known).
async fn sign_in_as(
    cli: &Cli,
    home: &Path,
    args: &[&str],
    provider: &OidcProvider,
    sub: &str,
    through_pages: bool,
) -> (String, Option<String>) {
    let mut child = cli
        .command(home)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(child.stderr.take().unwrap());
    let (_, line) = wait_line(&lines, "sign in at", STEP);
    assert!(line.contains(provider.issuer()), "{line}");
    let sid = if through_pages {
        approve_in_browser(provider, &user_code(&line), sub).await;
        None
    } else {
        Some(provider.approve(&user_code(&line), sub).await)
    };
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<String> = lines.try_iter().map(|(_, l)| l).collect();
    assert!(output.status.success(), "tacit {args:?} failed: {rest:?}");
    (String::from_utf8(output.stdout).unwrap(), sid)
}

/// `tacit listen` on `home`: a live WebSocket for as long as it runs.
fn listen(cli: &Cli, home: &Path) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut child = cli
        .command(home)
        .args(["listen", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(child.stderr.take().unwrap());
    (child, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn register_add_device_and_backchannel_logout() {
    let provider = OidcProvider::start("RS256");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let config = root.path().join("tacit.toml");
    std::fs::write(
        &config,
        format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nbackchannel_logout = \"disable\"\n",
            provider.issuer()
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    let server = ServerProcess::launch(&data, &db, &root.path().join("server.log"))
        .arg("--config")
        .arg(&config)
        .arg("--open-registration")
        .env("TACIT_LOG_LEVEL", "debug")
        .spawn();
    let url = server.url();
    provider
        .set_backchannel_logout_uri(&format!("{url}/v1/oidc/backchannel-logout"))
        .await;

    // (a) Alice registers through the device grant; her name comes from the provider.
    let alice = root.path().join("alice");
    let (out, sid) = sign_in_as(
        &CLI,
        &alice,
        &["register", &url, "--sso"],
        &provider,
        "sub-alice",
        false,
    )
    .await;
    assert!(out.contains("registered alice (device 1)"), "{out}");
    // She talks with bob, who registered the ordinary way.
    let bob = root.path().join("bob");
    CLI.ok(&bob, &["register", &url, "bob"]);
    CLI.ok(&alice, &["send", "bob", "hello from sso"]);
    let got = CLI.recv(&bob, 5);
    assert!(got.iter().any(|e| e["text"] == "hello from sso"), "{got:?}");
    CLI.ok(&bob, &["send", "alice", "hello back"]);
    let got = CLI.recv(&alice, 5);
    assert!(got.iter().any(|e| e["text"] == "hello back"), "{got:?}");

    // (b) A second device of alice, signed in as the same subject, this time through the
    // provider's own /device, login and consent pages. It cannot receive the account
    // identity, so it replaces alice's devices: refused without --replace-devices (before
    // any sign-in), and refused when the server names another provider than the pinned one.
    let laptop = root.path().join("laptop");
    let refused = LAPTOP.fails(&laptop, &["device", "link", &url, "--sso"]);
    assert!(refused.contains("--replace-devices"), "{refused}");
    let refused = LAPTOP.fails(
        &laptop,
        &[
            "device",
            "link",
            &url,
            "--sso",
            "--replace-devices",
            "--issuer",
            "https://idp.example/realms/acme",
        ],
    );
    assert!(refused.contains("refusing to sign in there"), "{refused}");
    assert!(!refused.contains("sign in at"), "{refused}");
    let (out, _) = sign_in_as(
        &LAPTOP,
        &laptop,
        &[
            "device",
            "link",
            &url,
            "--sso",
            "--replace-devices",
            "--issuer",
            provider.issuer(),
            "--name",
            "laptop",
        ],
        &provider,
        "sub-alice",
        true,
    )
    .await;
    assert!(out.contains("device 2 of alice"), "{out}");
    // The first device is signed out.
    let refused = CLI.fails(&alice, &["recv"]);
    assert!(refused.contains("credential"), "{refused}");
    // Bob sees alice's identity change: nothing is sent until he trusts the new key.
    let refused = CLI.fails(&bob, &["send", "alice", "still there?"]);
    assert!(refused.contains("identity key has changed"), "{refused}");
    assert!(CLI.ok(&bob, &["trust", "alice"]).contains("accepted"));
    CLI.ok(&bob, &["send", "alice", "hello laptop"]);
    let got = LAPTOP.recv(&laptop, 5);
    assert!(got.iter().any(|e| e["text"] == "hello laptop"), "{got:?}");

    // A third device, linked from the laptop with a code: it shares the new identity.
    let desk = root.path().join("desk");
    let mut link = DESK
        .command(&desk)
        .args([
            "device",
            "link",
            &url,
            "--name",
            "desk",
            "--timeout",
            "60",
            "--yes",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(link.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let code = first.trim().strip_prefix("link code: ").unwrap().to_owned();
    LAPTOP.ok(&laptop, &["device", "add", &code]);
    let status = link.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "device link failed: {rest}");
    assert!(rest.contains("device 3 of alice"), "{rest}");
    let devices = LAPTOP.ok(&laptop, &["device", "list"]);
    assert!(
        devices.contains("laptop") && devices.contains("desk"),
        "{devices}"
    );

    // (c) Both devices listening; the provider logs alice out over the back channel.
    let (mut desk_listen, desk_lines) = listen(&DESK, &desk);
    let (mut laptop_listen, laptop_lines) = listen(&LAPTOP, &laptop);
    // `listen` prints nothing once connected; give both time to open their sockets (the
    // "connection closed" line below is printed only for a socket that was open).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Instant::now();
    // The logout token names alice and her first sign-in's session (the logout names the
    // subject too); the server is set to `backchannel_logout = "disable"`, which disables
    // the whole account.
    provider
        .backchannel_logout("sub-alice", sid.as_deref().unwrap())
        .await;
    for lines in [&desk_lines, &laptop_lines] {
        let (at, _) = wait_line(lines, "connection closed", Duration::from_secs(5));
        let took = at.saturating_duration_since(before);
        assert!(
            took <= Duration::from_secs(1),
            "socket closed after {took:?}"
        );
    }
    // Neither device can authenticate any more: the listeners give up, commands fail.
    for child in [&mut desk_listen, &mut laptop_listen] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "tacit listen kept running after the logout"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let refused = DESK.fails(&desk, &["recv"]);
    assert!(refused.contains("disabled"), "{refused}");
    let refused = LAPTOP.fails(&laptop, &["recv"]);
    assert!(refused.contains("disabled"), "{refused}");
    // Bob is not affected.
    CLI.ok(&bob, &["recv"]);
    drop(server);
}

/// Follows the provider's own login and consent pages (`devInteractions`) from `url` with a
/// cookie jar, as `sub`, until a redirect leaves the provider; returns that redirect.
async fn browser_sign_in(provider: &OidcProvider, url: &str, sub: &str) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    browser_sign_in_with(&browser, provider, url, sub).await
}

/// [`browser_sign_in`] with the cookie jar of `browser`; also stops at the device flow's
/// "Sign-in Success" page (returning its URL).
async fn browser_sign_in_with(
    browser: &reqwest::Client,
    provider: &OidcProvider,
    url: &str,
    sub: &str,
) -> String {
    let mut next = url.to_owned();
    for _ in 0..10 {
        let response = browser.get(&next).send().await.unwrap();
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let absolute = if location.starts_with('/') {
                format!("{}{location}", provider.issuer())
            } else {
                location
            };
            if !absolute.starts_with(provider.issuer()) {
                return absolute;
            }
            next = absolute;
            continue;
        }
        assert!(status.is_success(), "{next} answered {status}");
        // An interaction page: the login form, then the consent form.
        let page = response.text().await.unwrap();
        if page.contains("Sign-in Success") {
            // The end of the device flow's pages: the CLI's polling picks the grant up.
            return next;
        }
        let form = if page.contains("name=\"login\"") {
            vec![("prompt", "login"), ("login", sub), ("password", "x")]
        } else {
            vec![("prompt", "consent")]
        };
        let response = browser.post(&next).form(&form).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "POST {next}: {}",
            response.status()
        );
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        next = if location.starts_with('/') {
            format!("{}{location}", provider.issuer())
        } else {
            location
        };
    }
    panic!("the provider's pages did not redirect back within 10 steps");
}

#[tokio::test(flavor = "multi_thread")]
async fn register_with_the_code_flow_and_pkce() {
    let provider = OidcProvider::start("ES256");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let config = root.path().join("tacit.toml");
    std::fs::write(
        &config,
        format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n",
            provider.issuer()
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    let server = ServerProcess::launch(&data, &db, &root.path().join("server.log"))
        .arg("--config")
        .arg(&config)
        .spawn();
    let url = server.url();
    let bob = root.path().join("bob");
    let mut child = CLI
        .command(&bob)
        .args(["register", &url, "--sso", "--sso-flow", "pkce"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(child.stderr.take().unwrap());
    let (_, line) = wait_line(&lines, "sign in by opening", STEP);
    let auth = line.rsplit(' ').next().unwrap().to_owned();
    assert!(auth.contains("code_challenge_method=S256"), "{auth}");
    assert!(auth.contains("nonce="), "{auth}");
    assert!(auth.contains("state="), "{auth}");
    let callback = browser_sign_in(&provider, &auth, "sub-bob").await;
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    assert!(callback.contains("/callback?code="), "{callback}");
    // The browser lands on the CLI's loopback listener.
    let page = reqwest::get(&callback).await.unwrap().text().await.unwrap();
    assert!(page.contains("Signed in"), "{page}");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<String> = lines.try_iter().map(|(_, l)| l).collect();
    assert!(
        output.status.success(),
        "register --sso-flow pkce failed: {rest:?}"
    );
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(out.contains("registered bob (device 1)"), "{out}");
    drop(server);
}
