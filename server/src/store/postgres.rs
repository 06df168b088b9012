//! The PostgreSQL store, selected by a `postgres://` database URL.
//!
//! One pool serves reads and writes. One-time prekeys are claimed with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait for each other and never hand
//! out the same key twice.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::backend::Backend;
use super::sql::SqlStore;
use super::{JobLock, StoreError};

/// The PostgreSQL store.
pub type PostgresStore = SqlStore<Postgres>;

impl Backend for Postgres {
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    const POSITIONAL: bool = false;

    /// A session advisory lock, on a connection taken out of the pool for as long as the
    /// job runs (a dead node's connection closes, and its lock goes with it).
    async fn try_job_lock(pool: &Pool<Self>, key: i64) -> Result<Option<JobLock>, StoreError> {
        let mut conn = pool.acquire().await?;
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(taken.then(|| JobLock::postgres(conn, key)))
    }

    async fn migrate(pool: &Pool<Self>) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres").run(pool).await?;
        Ok(())
    }

    /// PostgreSQL maintains itself (autovacuum); nothing to do.
    async fn maintain(_read: &Pool<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Postgres> {
    /// Connect to the database a `postgres://` URL names.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
        })
    }
}
