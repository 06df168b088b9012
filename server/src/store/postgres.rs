//! The PostgreSQL store, selected by a `postgres://` database URL.
//!
//! One pool serves reads and writes. One-time prekeys are claimed with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait for each other and never hand
//! out the same key twice.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::StoreError;
use super::backend::Backend;
use super::sql::SqlStore;

/// The PostgreSQL store.
pub type PostgresStore = SqlStore<Postgres>;

impl Backend for Postgres {
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    const POSITIONAL: bool = false;

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
