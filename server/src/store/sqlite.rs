//! The SQLite store: the zero-set-up default, one WAL-mode file in the data directory.
//!
//! Writes go through a pool of exactly one connection, so they are serialized in the process
//! and never meet `SQLITE_BUSY` from each other; reads use a separate pool and run
//! concurrently with the writer (WAL). `synchronous = FULL`: a commit is on disk before the
//! server answers, so an accepted envelope survives a power cut, not only a crash.
//! `secure_delete = ON`: deleted envelopes are zeroed in the file, so acknowledged
//! ciphertext does not linger in free pages.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::StoreError;
use super::sql::impl_store;

/// The SQLite implementation of [`super::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: Pool<Sqlite>,
    read: Pool<Sqlite>,
}

impl SqliteStore {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

    /// Open (creating if needed) the database a `sqlite:` URL names.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Acknowledged envelopes are overwritten on disk, not just unlinked.
            .pragma("secure_delete", "ON")
            // No checkpoint inside a commit (a latency spike for whoever commits then):
            // `maintain` checkpoints from a reader connection instead.
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self { write, read })
    }
}

impl_store!(SqliteStore, Sqlite, "", true);

impl SqliteStore {
    /// Copy committed WAL frames into the database file without blocking the writer
    /// (`PASSIVE`), so that the WAL does not grow without bound.
    pub(crate) async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.read)
            .await?;
        Ok(())
    }
}
