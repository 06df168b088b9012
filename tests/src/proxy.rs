//! The deployment kit's reverse-proxy examples (`deploy/nginx/tacit.conf`,
//! `deploy/haproxy/haproxy.cfg`), run for real in front of a test server: the shipped file
//! with only its addresses, certificate paths and process-level settings (user, chroot,
//! daemon) replaced for a throw-away directory, on loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client::{Client, Socket};
use crate::prometheus::{deploy_dir, free_port};

/// The name the examples serve, and the throw-away certificate's.
pub const HOST: &str = "tacit.example.com";

/// How long a proxy may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `deploy/nginx/tacit.conf`.
    Nginx,
    /// `deploy/haproxy/haproxy.cfg`.
    Haproxy,
}

/// A running reverse proxy, killed on drop.
pub struct ReverseProxy {
    child: Child,
    /// The TLS port (the example's 443).
    pub https_port: u16,
    /// The plain-HTTP port (the example's 80).
    pub http_port: u16,
    roots: Arc<rustls::RootCertStore>,
    certificate: reqwest::Certificate,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ReverseProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseProxy")
            .field("https_port", &self.https_port)
            .field("http_port", &self.http_port)
            .finish_non_exhaustive()
    }
}

/// Replace `from` in `text`, insisting that the example still contains it (so that a
/// changed example fails here, not by testing something else).
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// `text` without the lines containing `needle` (at least one).
fn drop_lines(text: &str, needle: &str) -> String {
    assert!(
        text.contains(needle),
        "the example no longer contains {needle:?}"
    );
    text.lines()
        .filter(|l| !l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl ReverseProxy {
    /// The example of `kind` in front of the plain-HTTP server at `backend`.
    pub async fn start(kind: ProxyKind, backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![HOST.into()]).unwrap();
        let cert_file = dir.path().join("fullchain.pem");
        let key_file = dir.path().join("privkey.pem");
        std::fs::write(&cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
        let (https_port, http_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let site = Site {
            dir: dir.path(),
            backend,
            https: https_port,
            http: http_port,
            cert: &cert_file,
            key: &key_file,
        };
        let mut command = match kind {
            ProxyKind::Nginx => nginx(&site),
            ProxyKind::Haproxy => haproxy(&site),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {kind:?} failed: {e} (./scripts/deploy-tools installs it)")
            });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let proxy = Self {
            child,
            https_port,
            http_port,
            roots: Arc::new(roots),
            certificate: reqwest::Certificate::from_der(certified.cert.der()).unwrap(),
            dir,
        };
        // Ready when its plain-HTTP port answers with the example's redirect (a stranger
        // on a raced port would not), and never after it exited.
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut proxy = proxy;
        loop {
            let answer = probe.get(format!("{}/", proxy.plain_base())).send().await;
            if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::MOVED_PERMANENTLY) {
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("{kind:?} exited ({status}); its log:\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} did not answer; its log:\n{}",
                proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The proxy's own log.
    #[must_use]
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default();
        if let Ok(error_log) = std::fs::read_to_string(self.dir.path().join("error.log")) {
            log.push_str(&error_log);
        }
        log
    }

    /// `https://tacit.example.com:PORT`, which [`Self::client`] resolves to the proxy.
    #[must_use]
    pub fn base(&self) -> String {
        format!("https://{HOST}:{}", self.https_port)
    }

    /// An anonymous client of the server through the proxy, verifying the proxy's
    /// certificate for `tacit.example.com`.
    #[must_use]
    pub fn client(&self) -> Client {
        let http = reqwest::Client::builder()
            .add_root_certificate(self.certificate.clone())
            .tls_built_in_root_certs(false)
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.https_port)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Client {
            base: self.base(),
            http,
            credential: None,
        }
    }

    /// A client of the plain-HTTP port (the example's 80).
    #[must_use]
    pub fn plain_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `device`'s WebSocket through the proxy (TLS to it, HTTP/1.1 upgrade).
    pub async fn socket(&self, device: &Client) -> Socket<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", self.https_port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        device
            .connect_over(&format!("wss://{HOST}:{}/v1/ws", self.https_port), tls)
            .await
    }
}

/// Where a proxy runs: its directory, the server behind it, its ports, its certificate.
#[derive(Clone, Copy)]
struct Site<'a> {
    dir: &'a Path,
    backend: SocketAddr,
    https: u16,
    http: u16,
    cert: &'a Path,
    key: &'a Path,
}

/// nginx with the example included in a minimal main configuration of its own (the
/// example is an `http{}`-level include, as in Debian's `conf.d/`).
fn nginx(site: &Site<'_>) -> Command {
    let Site {
        dir,
        backend,
        https,
        http,
        cert,
        key,
    } = *site;
    let example = std::fs::read_to_string(deploy_dir().join("nginx/tacit.conf")).unwrap();
    let mut conf = replace(
        &example,
        "server 127.0.0.1:8080;",
        &format!("server {backend};"),
    );
    conf = drop_lines(&conf, "listen [::]:");
    conf = replace(&conf, "listen 80;", &format!("listen 127.0.0.1:{http};"));
    conf = replace(
        &conf,
        "listen 443 ssl",
        &format!("listen 127.0.0.1:{https} ssl"),
    );
    conf = replace(
        &conf,
        "/etc/letsencrypt/live/tacit.example.com/fullchain.pem",
        &cert.display().to_string(),
    );
    conf = replace(
        &conf,
        "/etc/letsencrypt/live/tacit.example.com/privkey.pem",
        &key.display().to_string(),
    );
    let acme = dir.join("acme");
    std::fs::create_dir_all(&acme).unwrap();
    conf = replace(&conf, "/var/www/letsencrypt", &acme.display().to_string());
    std::fs::write(dir.join("tacit.conf"), conf).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 512; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/tacit.conf;\n}}\n"
    );
    let main_file = dir.join("nginx.conf");
    std::fs::write(&main_file, main).unwrap();
    let mut command = Command::new(sbin("nginx"));
    command.arg("-p").arg(dir).arg("-c").arg(main_file);
    command
}

/// A Debian package's binary: in `/usr/sbin` (often not on a user's `PATH`) or
/// `/usr/bin`, else found on `PATH`.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// HAProxy on the example, in the foreground, without its chroot, user and sockets.
fn haproxy(site: &Site<'_>) -> Command {
    let Site {
        dir,
        backend,
        https,
        http,
        cert,
        key,
    } = *site;
    let example = std::fs::read_to_string(deploy_dir().join("haproxy/haproxy.cfg")).unwrap();
    let mut conf = example;
    for line in [
        "chroot ",
        "stats socket ",
        "user haproxy",
        "group haproxy",
        "    daemon",
        "bind [::]:",
    ] {
        conf = drop_lines(&conf, line);
    }
    let pem = dir.join("tacit.example.com.pem");
    let mut both = std::fs::read_to_string(cert).unwrap();
    both.push_str(&std::fs::read_to_string(key).unwrap());
    std::fs::write(&pem, both).unwrap();
    conf = replace(
        &conf,
        "bind :443 ssl crt /etc/haproxy/certs/tacit.example.com.pem",
        &format!("bind 127.0.0.1:{https} ssl crt {}", pem.display()),
    );
    conf = replace(&conf, "bind :80\n", &format!("bind 127.0.0.1:{http}\n"));
    conf = replace(
        &conf,
        "server tacit1 127.0.0.1:8080",
        &format!("server tacit1 {backend}"),
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, conf).unwrap();
    let mut command = Command::new(sbin("haproxy"));
    command.arg("-db").arg("-f").arg(file);
    command
}

impl Drop for ReverseProxy {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers (a killed master would leave them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
