//! Throw-away PostgreSQL databases for tests and the benchmark.

use sqlx::Connection as _;

/// The PostgreSQL server the tests use: `TACIT_TEST_DATABASE_URL`, else the local one.
#[must_use]
pub fn admin_url() -> String {
    std::env::var("TACIT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A randomly named PostgreSQL database, created on [`TestDatabase::create`] and dropped
/// (with `FORCE`) when the value is dropped, even if the test panicked.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// Create a fresh database on the test server. Fails (never skips) when the server is
    /// unreachable.
    pub async fn create() -> Result<Self, sqlx::Error> {
        let admin = admin_url();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let name = format!("tacit_test_{}", hex::encode(random));
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let base = match admin.rfind('/') {
            Some(i) if i > "postgres://".len() => &admin[..i],
            _ => admin.as_str(),
        };
        Ok(Self {
            url: format!("{base}/{name}"),
            admin,
            name,
        })
    }

    /// [`TestDatabase::create`], panicking with a clear message when PostgreSQL is
    /// unreachable (a test that needs it fails, it does not skip).
    pub async fn create_or_panic() -> Self {
        match Self::create().await {
            Ok(db) => db,
            Err(e) => panic!(
                "PostgreSQL from TACIT_TEST_DATABASE_URL ({}) must be reachable: {e}",
                admin_url()
            ),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread
        // with its own runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(())
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
