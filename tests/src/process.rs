//! The real `tacit-server` binary as a child process: [`ServerProcess`].
//!
//! The server is started with `--print-addr` and the harness reads the one line
//! `listening addr=ADDR:PORT` it prints on stdout once bound; its logs (stderr) go to a file
//! that tests may read, and are never parsed for the address.

use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tacit_api::DeviceCredential;

use crate::client::Client;

/// How long the server may take from start to bound socket (migrations included).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A binary of the workspace (`tacit-server`, `tacit`), found beside the running
/// executable: `target/<profile>/NAME`, where `cargo test --workspace` and
/// `cargo build --workspace` put it. Tests never build it themselves.
pub fn binary(name: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("the running executable has no directory"))?;
    // Test executables live in `target/<profile>/deps`.
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: build the workspace's binaries first (`cargo build --workspace`, \
                 with `--release` for a release build; `cargo test --workspace` builds them too)",
                path.display()
            ),
        ))
    }
}

/// What to start: see [`ServerProcess::launch`].
#[derive(Debug, Clone)]
pub struct Launch {
    data_dir: PathBuf,
    database_url: String,
    log: PathBuf,
    listen: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    tls: bool,
}

impl Launch {
    /// Serves TLS with the server's generated self-signed certificate instead of plain
    /// HTTP (reach it at `https://{addr}`).
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Adds a command-line argument (after `serve` and the harness's own).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line arguments.
    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the server (a `TACIT_*` configuration key).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Listens on `listen` instead of `127.0.0.1:0`.
    #[must_use]
    pub fn listen(mut self, listen: impl Into<String>) -> Self {
        self.listen = listen.into();
        self
    }

    /// Starts the server and waits until it has bound its socket; panics on failure.
    pub fn spawn(self) -> ServerProcess {
        self.try_spawn()
            .unwrap_or_else(|e| panic!("starting tacit-server failed: {e}"))
    }

    /// Starts the server and waits until it has bound its socket.
    pub fn try_spawn(self) -> io::Result<ServerProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(binary("tacit-server")?)
            .args(["serve", "--print-addr", "--listen", &self.listen])
            .args((!self.tls).then_some("--plain-http"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--database-url")
            .arg(&self.database_url)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        match read_addr(&mut child) {
            Ok(addr) => Ok(ServerProcess {
                child,
                addr,
                launch: self,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                Err(io::Error::other(format!("{e}; its log:\n{log}")))
            }
        }
    }
}

/// Reads the `listening addr=` line from the child's stdout (then keeps draining stdout
/// on a thread, so that the server never writes into a closed pipe).
fn read_addr(child: &mut Child) -> io::Result<SocketAddr> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first);
        for _ in lines {}
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(line)) => line?,
        Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(io::Error::other("the server exited before binding"));
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(io::Error::other("the server did not bind in time"));
        }
    };
    line.strip_prefix("listening addr=")
        .and_then(|addr| addr.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected first line on stdout: {line:?}")))
}

/// The real binary, started with `serve --plain-http` (or TLS, see [`Launch::tls`]) on
/// loopback, logging to a file.
/// Killed (`SIGKILL`) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The bound address.
    pub addr: SocketAddr,
    launch: Launch,
}

impl ServerProcess {
    /// A server on `data_dir` and `database_url` (`sqlite://...`, `postgres://...`, or empty
    /// for SQLite in the data directory), appending its logs to `log`. Set it up further with
    /// the [`Launch`] methods, then [`Launch::spawn`].
    pub fn launch(data_dir: &Path, database_url: &str, log: &Path) -> Launch {
        Launch {
            data_dir: data_dir.to_owned(),
            database_url: database_url.to_owned(),
            log: log.to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            tls: false,
        }
    }

    /// A server with open registration, started (see [`ServerProcess::launch`]).
    pub fn spawn(data_dir: &Path, database_url: &str, log: &Path) -> Self {
        Self::launch(data_dir, database_url, log)
            .arg("--open-registration")
            .spawn()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The log file (the server's stderr).
    pub fn log(&self) -> &Path {
        &self.launch.log
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A figure from the server's `/proc/<pid>/status`, in KiB (see
    /// [`crate::memory::status_kib`]).
    pub fn memory_kib(&self, field: &str) -> io::Result<u64> {
        crate::memory::status_kib(self.pid(), field)
    }

    /// A client of this server, as `credential`'s device or anonymous.
    pub fn client(&self, credential: Option<&DeviceCredential>) -> Client {
        Client {
            base: self.url(),
            http: reqwest::Client::new(),
            credential: credential.cloned(),
        }
    }

    /// `SIGKILL`, and wait for the process to go.
    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    /// `SIGTERM`, then wait for the exit (graceful shutdown).
    pub fn terminate(mut self) -> io::Result<ExitStatus> {
        self.sigterm_and_wait()
    }

    /// `SIGTERM`, then wait; the data stays for [`ServerProcess::restart`].
    pub fn stop(&mut self) {
        let _ = self.sigterm_and_wait();
    }

    /// Stops the server (`SIGTERM`, graceful) and starts it again on the same data, database,
    /// arguments and address.
    pub fn restart(mut self) -> Self {
        self.stop();
        let launch = self.launch.clone().listen(self.addr.to_string());
        launch.spawn()
    }

    fn sigterm_and_wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
