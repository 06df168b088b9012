//! The PostgreSQL store, selected by a `postgres://` database URL.
//!
//! One pool serves reads and writes. One-time prekeys are claimed with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claims never wait for each other and never hand
//! out the same key twice.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use super::StoreError;
use super::sql::impl_store;

/// The PostgreSQL implementation of [`super::Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    write: Pool<Postgres>,
    read: Pool<Postgres>,
}

impl PostgresStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

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

impl_store!(PostgresStore, Postgres, "FOR UPDATE SKIP LOCKED", false);

impl PostgresStore {
    /// PostgreSQL maintains itself (autovacuum); nothing to do.
    #[allow(clippy::unused_async)] // one signature for both backends
    pub(crate) async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
