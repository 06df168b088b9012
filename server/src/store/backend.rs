//! What the SQL code needs of a database, and where SQLite and PostgreSQL differ.
//!
//! The store's SQL is written once, in ordinary functions generic over a [`Backend`]
//! (`impl<B: Backend> SqlStore<B>` in `accounts`, `keys`, `mailbox`, `blobs`,
//! `provisioning`, `audit`). The trait holds the few real differences between the
//! databases; the sqlx bounds those functions need are the `where` clause spelled out below
//! the trait (Rust does not carry a trait's `where` clause over to its users, so each
//! generic `impl` block repeats it: it is the same list everywhere, checked by the
//! compiler).

use std::future::Future;

use sqlx::{Database, Pool};

use super::StoreError;

/// One of the two databases the store runs on: implemented for [`sqlx::Sqlite`]
/// (`sqlite.rs`) and [`sqlx::Postgres`] (`postgres.rs`).
pub trait Backend: Database + sqlx::database::HasStatementCache {
    /// The lock clause of the one-time prekey claim's subquery: PostgreSQL's
    /// `FOR UPDATE SKIP LOCKED` (concurrent claims neither wait for each other nor take
    /// the same key); nothing for SQLite, whose single writer serializes claims.
    const CLAIM_LOCK: &'static str;

    /// Whether bulk statements use `?` parameters (bound in order of appearance) rather
    /// than `$n`.
    ///
    /// SQLite looks a numbered parameter's name up by a linear scan, so binding the
    /// hundreds of parameters of a bulk statement costs quadratic time with `$n`; with `?`
    /// it does not. The same flag picks the bulk statements' shape (an OR of primary-key
    /// probes for SQLite, a joined `VALUES` list for PostgreSQL, each planned well by its
    /// database).
    const POSITIONAL: bool;

    /// Apply the backend's migrations (`migrations/sqlite/` or `migrations/postgres/`).
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Periodic upkeep off the write path, about once a second (SQLite: a passive WAL
    /// checkpoint on a reader connection; PostgreSQL: nothing, autovacuum does it).
    fn maintain(read: &Pool<Self>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Takes the cluster-wide lock of a background job (`key`), or `None` when another
    /// node holds it (PostgreSQL: a session advisory lock on a connection of its own;
    /// SQLite: one node by definition, always granted).
    fn try_job_lock(
        pool: &Pool<Self>,
        key: i64,
    ) -> impl Future<Output = Result<Option<super::JobLock>, StoreError>> + Send;
}

/// A type that is read from and bound to both databases (`i64`, `String`, `Vec<u8>`).
pub trait Value<B: Database>:
    for<'q> sqlx::Encode<'q, B> + for<'r> sqlx::Decode<'r, B> + sqlx::Type<B> + Send
{
}

impl<B: Database, T> Value<B> for T where
    T: for<'q> sqlx::Encode<'q, B> + for<'r> sqlx::Decode<'r, B> + sqlx::Type<B> + Send
{
}

/// A borrowed parameter (`&str`, `&[u8]`).
pub trait Param<'q, B: Database>: sqlx::Encode<'q, B> + sqlx::Type<B> + Send + 'q {}

impl<'q, B: Database, T> Param<'q, B> for T where T: sqlx::Encode<'q, B> + sqlx::Type<B> + Send + 'q {}
