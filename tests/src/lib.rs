//! The one test harness of the workspace: every way a test starts a server or a client.
//!
//! - [`spawn_server`] / [`TestServer`]: the real server in this process on `127.0.0.1:0`,
//!   with a fresh SQLite database, or a fresh randomly named PostgreSQL database on
//!   `TACIT_TEST_DATABASE_URL` ([`Backend`], [`both!`]) that is dropped afterwards. A
//!   PostgreSQL test fails, never skips, when PostgreSQL is unreachable.
//! - [`ServerProcess`]: the real `tacit-server` binary as a child process. It learns the
//!   bound address from the one line the server prints with `--print-addr`.
//! - [`cli`]: the real `tacit` binary on a home directory.
//! - [`HostileRelay`]: a server double in front of the real server that lies on command.
//! - [`Client`] and [`Socket`]: the HTTP and WebSocket API by hand; [`keys`]: fake keys.
//! - [`memory`]: the `/proc` memory probe.
//! - [`OidcProvider`]: a real OpenID Provider (`node tests/oidc/provider.mjs`) on loopback.
//! - [`prometheus::Prometheus`]: a real Prometheus scraping a server with the kit's alerting
//!   rules; [`proxy::ReverseProxy`]: the kit's nginx or HAProxy example in front of a server.
//! - [`TestDatabase`]: a throw-away PostgreSQL database (also used by the benchmark).
//!
//! Binaries are found beside the running executable ([`binary`]); tests never build them.
//! `cargo test --workspace` builds them before it runs any test.

// A test harness: a failure to set up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
mod client;
mod database;
pub mod memory;
mod oidc;
mod process;
pub mod prometheus;
pub mod proxy;
mod relay;
mod server;

pub use client::{Client, Failure, Next, Socket, decode, keys, register_via, signed};
pub use database::{TestDatabase, admin_url};
pub use oidc::{CLIENT_ID, OidcProvider};
pub use process::{Launch, ServerProcess, binary};
pub use relay::{Exchange, HostileRelay, Lies};
pub use server::{Backend, TestServer, spawn_server};

/// Milliseconds since the Unix epoch, by this machine's clock (what clients compare
/// sender times and disappearing-message deadlines with).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
