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
use sqlx::{Connection as _, Pool, Sqlite, TransactionManager as _};

use super::backend::Backend;
use super::sql::SqlStore;
use super::{JobLock, StoreError};

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

impl Backend for Sqlite {
    const CLAIM_LOCK: &'static str = "";
    const POSITIONAL: bool = true;

    /// One node: the job is always this node's.
    async fn try_job_lock(_pool: &Pool<Self>, _key: i64) -> Result<Option<JobLock>, StoreError> {
        Ok(Some(JobLock::single()))
    }

    async fn migrate(pool: &Pool<Self>) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/sqlite").run(pool).await?;
        Ok(())
    }

    /// Copy committed WAL frames into the database file without blocking the writer
    /// (`PASSIVE`), so that the WAL does not grow without bound.
    async fn maintain(read: &Pool<Self>) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(read)
            .await?;
        Ok(())
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Sqlite> {
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
            // A connection handed back inside a transaction (a rollback that failed after
            // SQLite had already rolled back on its own, as it may on a full disk) would
            // turn the next `BEGIN` into a savepoint of a transaction nobody commits: close
            // it instead, and let the pool open a fresh one.
            .after_release(|conn, _| {
                Box::pin(async move {
                    // The ping queues behind a pending rollback, so the depth read after
                    // it is settled.
                    conn.ping().await?;
                    Ok(
                        <Sqlite as sqlx::Database>::TransactionManager::get_transaction_depth(conn)
                            == 0,
                    )
                })
            })
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        // Only the server's user reads the database; SQLite gives its WAL and shared-memory
        // files the database file's mode.
        restrict(options.get_filename()).map_err(StoreError::Permissions)?;
        for suffix in ["-wal", "-shm"] {
            let mut name = options.get_filename().as_os_str().to_owned();
            name.push(suffix);
            restrict(std::path::Path::new(&name)).map_err(StoreError::Permissions)?;
        }
        Ok(Self { write, read })
    }
}

/// Make a file readable and writable by its owner only (a file that is not there, such as
/// an in-memory database's, is left alone).
fn restrict(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
