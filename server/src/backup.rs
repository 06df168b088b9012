//! `tacit-server backup FILE` and `tacit-server restore FILE` (docs/BACKUP.md).
//!
//! A backup is one tar archive: the SQLite database as a consistent snapshot taken while
//! the server runs (`VACUUM INTO` on a read-only connection, which sees one transaction's
//! view of the whole file), the blob files the snapshot knows of, the TLS certificate and
//! key of the data directory (clients pin the certificate), and last a `manifest.json` with
//! every file's size and SHA-256. The audit key is never in it: whoever holds a backup must
//! not be able to sign checkpoints (keep the key apart, docs/AUDIT.md).
//!
//! A restore unpacks into a staging directory inside the target, checks every file against
//! the manifest (a file that is missing, extra, of another size or another digest, or a path
//! outside the layout refuses the whole archive before anything is put in place), prepares
//! the staged database ([`crate::store::Store::after_restore`]: the unclaimed one-time
//! prekeys go, since one may have been handed out after the snapshot, and every device
//! counts as seen now), then renames what was there aside, moves the new files in, and puts
//! the old ones back if a step fails.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::config::Config;
use crate::store::BlobId;

/// The archive format this server writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's name in the archive (its last entry).
pub const MANIFEST: &str = "manifest.json";
/// The database's name in the archive.
pub const DATABASE: &str = "tacit.db";

/// What a backup holds: written last into the archive, checked first by a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// When the snapshot was taken (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// The `tacit-server` version that wrote it.
    pub server_version: String,
    /// Every file but the manifest: the database first, then the blobs and the certificate.
    pub files: Vec<FileEntry>,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the archive: `tacit.db`, `blobs/NAME` or `tls/cert.pem`, `tls/key.pem`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The manifest.
    pub manifest: Manifest,
    /// Blob records of the snapshot whose files were gone by the time they were copied
    /// (deleted or expired meanwhile): their records were left out too.
    pub blobs_gone: usize,
    /// The archive's size in bytes.
    pub archive_bytes: u64,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The database could not be snapshot or opened.
    #[error("the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The configured store is PostgreSQL: its backup is `pg_dump`.
    #[error(
        "the configured database is PostgreSQL: back it up with pg_dump and copy the blob directory \
         (docs/BACKUP.md); after pg_restore, run `tacit-server restore --after-pg-restore`"
    )]
    Postgres,
    /// The archive is not a readable Tacit backup, or does not match its manifest.
    #[error("{path} is not a usable Tacit backup: {reason}")]
    Damaged {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The staged database could not be migrated or made safe to serve.
    #[error("preparing the restored database: {0}")]
    Store(crate::store::StoreError),
    /// The restore target holds data already.
    #[error(
        "{0} is not empty: restore into an empty directory, or pass --force to replace its database, blobs and certificate"
    )]
    NotEmpty(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The SQLite file a configuration uses, or [`BackupError::Postgres`].
pub fn sqlite_path(config: &Config) -> Result<PathBuf, BackupError> {
    let url = config.effective_database_url();
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Err(BackupError::Postgres);
    }
    let options = SqliteConnectOptions::from_str(&url)?;
    Ok(options.get_filename().to_owned())
}

/// Copies `reader` into the archive under `path` (`size` bytes exactly: a file that grew
/// meanwhile is cut at the size it had), returning its manifest entry.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    reader: impl Read,
    mtime: u64,
) -> io::Result<FileEntry> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut hashing = Hashing {
        inner: reader.take(size),
        hasher: Sha256::new(),
        count: 0,
    };
    archive.append(&header, &mut hashing)?;
    if hashing.count != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{path} shrank while it was copied"),
        ));
    }
    Ok(FileEntry {
        path: path.to_owned(),
        size,
        sha256: hex::encode(hashing.hasher.finalize()),
    })
}

/// A reader that hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Removes a staging file or directory when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0).or_else(|_| fs::remove_file(&self.0));
    }
}

/// Write a backup of the server `config` describes to `out` (a new file: written as
/// `out.partial`, synced, then renamed), while the server may run. `progress` gets one line
/// per step.
pub async fn backup(
    config: &Config,
    out: &Path,
    mut progress: impl FnMut(&str),
) -> Result<BackupSummary, BackupError> {
    let db = sqlite_path(config)?;
    if !db.exists() {
        return Err(BackupError::Io {
            path: db,
            source: io::Error::new(io::ErrorKind::NotFound, "no database to back up"),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    let staging = parent.join(format!(".{name}.{}.staging", std::process::id()));
    private_new_dir(&staging)?;
    let _staging = Cleanup(staging.clone());
    let snapshot = staging.join(DATABASE);
    let created_at_ms = crate::service::now().0;

    // One read transaction's view of the whole database, while writers go on.
    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true)
        .connect()
        .await?;
    sqlx::query("VACUUM INTO $1")
        .bind(snapshot.display().to_string())
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let db_bytes = fs::metadata(&snapshot).map_err(io_at(&snapshot))?.len();
    progress(&format!(
        "database snapshot: {} KiB",
        db_bytes.div_ceil(1024)
    ));

    // The blobs the snapshot knows of; files gone since leave their records out too.
    let mut snap = SqliteConnectOptions::new()
        .filename(&snapshot)
        .connect()
        .await?;
    let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM blobs ORDER BY id")
        .fetch_all(&mut snap)
        .await?;
    let partial = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let file = private_new_file(&partial)?;
    let _partial = Cleanup(partial.clone());
    let mut archive = tar::Builder::new(io::BufWriter::new(file));
    let mtime = u64::try_from(created_at_ms / 1000).unwrap_or(0);
    let mut files = Vec::new();
    let blob_dir = config.blob_dir();
    let mut gone = Vec::new();
    let mut blob_bytes = 0u64;
    for id in &ids {
        let Ok(bytes) = <[u8; crate::store::BLOB_ID_BYTES]>::try_from(id.as_slice()) else {
            continue;
        };
        let blob = BlobId(bytes).to_string();
        let mut copied = false;
        for name in [blob.clone(), format!("{blob}.part")] {
            let path = blob_dir.join(&name);
            let f = match fs::File::open(&path) {
                Ok(f) => f,
                // Completed (renamed) meanwhile, or not there: try the other name.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Anything else (a permission, a descriptor limit) fails the backup: it
                // must never leave a blob out silently.
                Err(e) => return Err(io_at(&path)(e)),
            };
            let size = f.metadata().map_err(io_at(&path))?.len();
            let entry = append(&mut archive, &format!("blobs/{name}"), size, f, mtime)
                .map_err(io_at(&path))?;
            blob_bytes += size;
            files.push(entry);
            copied = true;
            break;
        }
        if !copied {
            gone.push(id.clone());
        }
    }
    for id in &gone {
        sqlx::query("DELETE FROM blobs WHERE id = $1")
            .bind(id)
            .execute(&mut snap)
            .await?;
    }
    snap.close().await?;
    progress(&format!(
        "blobs: {} files, {} KiB{}",
        files.len(),
        blob_bytes.div_ceil(1024),
        if gone.is_empty() {
            String::new()
        } else {
            format!(" ({} deleted meanwhile, left out)", gone.len())
        }
    ));
    let f = fs::File::open(&snapshot).map_err(io_at(&snapshot))?;
    let size = f.metadata().map_err(io_at(&snapshot))?.len();
    files.insert(
        0,
        append(&mut archive, DATABASE, size, f, mtime).map_err(io_at(&snapshot))?,
    );
    let (cert, key) = crate::tls::self_signed_paths(&config.data_dir);
    for (path, name) in [(cert, "tls/cert.pem"), (key, "tls/key.pem")] {
        match fs::File::open(&path) {
            Ok(f) => {
                let size = f.metadata().map_err(io_at(&path))?.len();
                files.push(append(&mut archive, name, size, f, mtime).map_err(io_at(&path))?);
            }
            // Configured certificate files (tls.cert_file) instead: nothing generated here.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at_ms,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        path: partial.clone(),
        source: io::Error::other(e),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_path(MANIFEST).map_err(io_at(&partial))?;
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_cksum();
    archive
        .append(&header, text.as_slice())
        .map_err(io_at(&partial))?;
    let writer = archive.into_inner().map_err(io_at(&partial))?;
    let file = writer.into_inner().map_err(|e| BackupError::Io {
        path: partial.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_at(&partial))?;
    let archive_bytes = file.metadata().map_err(io_at(&partial))?.len();
    drop(file);
    fs::rename(&partial, out).map_err(io_at(out))?;
    if let Ok(dir) = fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(BackupSummary {
        manifest,
        blobs_gone: gone.len(),
        archive_bytes,
    })
}

/// Whether `path` is one the layout allows: `tacit.db`, `blobs/NAME` (a blob id, maybe
/// `.part`), `tls/cert.pem`, `tls/key.pem`.
fn allowed(path: &str) -> bool {
    if path == DATABASE || path == "tls/cert.pem" || path == "tls/key.pem" {
        return true;
    }
    path.strip_prefix("blobs/").is_some_and(|name| {
        let id = name.strip_suffix(".part").unwrap_or(name);
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Unpack and check the backup `archive` into the data directory of `config` (its
/// SQLite file, blob directory and `tls/`). Refuses a target that holds a database, blobs
/// or a certificate unless `force`; with `force` those are replaced. Returns the manifest.
/// Nothing is put in place unless every file matches the manifest.
pub async fn unpack(
    config: &Config,
    archive: &Path,
    force: bool,
    audit: &crate::audit::Event,
    mut progress: impl FnMut(&str),
) -> Result<Restored, BackupError> {
    let db = sqlite_path(config)?;
    let blob_dir = config.blob_dir();
    let (cert, key) = crate::tls::self_signed_paths(&config.data_dir);
    let holds_data = db.exists()
        || fs::read_dir(&blob_dir).is_ok_and(|mut d| d.next().is_some())
        || cert.exists()
        || key.exists();
    if holds_data && !force {
        return Err(BackupError::NotEmpty(config.data_dir.clone()));
    }
    let damaged = |reason: String| BackupError::Damaged {
        path: archive.to_owned(),
        reason,
    };
    fs::create_dir_all(&config.data_dir).map_err(io_at(&config.data_dir))?;
    set_mode(&config.data_dir, 0o700)?;
    // What a restore that crashed left behind (a copy of a database among it) goes first.
    if let Ok(entries) = fs::read_dir(&config.data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".restore.") && name.ends_with(".staging") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let staging = config
        .data_dir
        .join(format!(".restore.{}.staging", std::process::id()));
    private_new_dir(&staging)?;
    let _staging = Cleanup(staging.clone());
    private_new_dir(&staging.join("blobs"))?;
    private_new_dir(&staging.join("tls"))?;

    let file = fs::File::open(archive).map_err(io_at(archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let entries = tar
        .entries()
        .map_err(|e| damaged(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(format!("unreadable entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| damaged(format!("unreadable path: {e}")))?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("{path}: not a regular file")));
        }
        if path == MANIFEST {
            if manifest.is_some() {
                return Err(damaged(format!("two {MANIFEST}")));
            }
            let mut text = Vec::new();
            (&mut entry)
                .take(16 << 20)
                .read_to_end(&mut text)
                .map_err(|e| damaged(format!("{MANIFEST}: {e}")))?;
            let parsed: Manifest =
                serde_json::from_slice(&text).map_err(|e| damaged(format!("{MANIFEST}: {e}")))?;
            if parsed.format != FORMAT {
                return Err(damaged(format!(
                    "format {} (this server reads format {FORMAT})",
                    parsed.format
                )));
            }
            manifest = Some(parsed);
            continue;
        }
        if !allowed(&path) || found.contains_key(&path) {
            return Err(damaged(format!("unexpected entry {path:?}")));
        }
        let target = staging.join(&path);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io_at(&target))?;
        set_mode(&target, 0o600)?;
        let mut hashing = Hashing {
            inner: &mut entry,
            hasher: Sha256::new(),
            count: 0,
        };
        io::copy(&mut hashing, &mut out).map_err(|e| damaged(format!("{path}: {e}")))?;
        out.sync_all().map_err(io_at(&target))?;
        found.insert(
            path,
            (hashing.count, hex::encode(hashing.hasher.finalize())),
        );
    }
    let Some(manifest) = manifest else {
        return Err(damaged(format!("no {MANIFEST} (cut short?)")));
    };
    let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for f in &manifest.files {
        match found.get(&f.path) {
            None => return Err(damaged(format!("{} is missing", f.path))),
            Some((size, _)) if *size != f.size => {
                return Err(damaged(format!(
                    "{}: {size} bytes, the manifest says {}",
                    f.path, f.size
                )));
            }
            Some((_, digest)) if *digest != f.sha256 => {
                return Err(damaged(format!("{}: its SHA-256 does not match", f.path)));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|p| !listed.contains(p.as_str())) {
        return Err(damaged(format!("{extra} is not in the manifest")));
    }
    if !found.contains_key(DATABASE) {
        return Err(damaged(format!("no {DATABASE}")));
    }
    progress(&format!(
        "checked {} files against the manifest (backup of {})",
        found.len(),
        rfc3339(manifest.created_at_ms)
    ));

    // Everything matches. The staged database is made safe to serve before it is put in
    // place: migrated, its unclaimed one-time prekeys dropped, its devices counted as seen
    // now, the restore audited. A restore that stops before this point leaves the target
    // as it was.
    let staged_db = staging.join(DATABASE);
    let store = crate::store::SqliteStore::connect(&format!("sqlite://{}", staged_db.display()))
        .await
        .map_err(BackupError::Store)?;
    let prepared = async {
        crate::store::Store::migrate(&store).await?;
        crate::store::Store::after_restore(&store, audit, crate::service::now()).await
    }
    .await;
    crate::store::Store::close(&store).await;
    let dropped = prepared.map_err(BackupError::Store)?;

    // Put in place: what was there is renamed aside first and comes back if any step fails.
    let mut moves = Moves::default();
    let placed = place(&mut moves, &staging, &db, &blob_dir, &found, [&cert, &key]);
    match placed {
        Ok(blobs) => {
            moves.commit();
            progress(&format!(
                "restored the database, {blobs} blob files and {} into {}; dropped {dropped} \
                 unclaimed one-time prekeys",
                if found.contains_key("tls/cert.pem") {
                    "the TLS certificate"
                } else {
                    "no TLS certificate"
                },
                config.data_dir.display()
            ));
            Ok(Restored { manifest, dropped })
        }
        Err(e) => {
            moves.roll_back();
            Err(e)
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The unclaimed one-time prekeys dropped.
    pub dropped: u64,
}

/// The renames of a restore, to undo on failure: old files set aside, new ones placed.
#[derive(Default)]
struct Moves {
    /// (original, aside).
    aside: Vec<(PathBuf, PathBuf)>,
    /// New files put in place.
    placed: Vec<PathBuf>,
    /// Directories made to hold what was set aside.
    aside_dirs: Vec<PathBuf>,
}

impl Moves {
    /// Set `path` aside (if it exists) as `aside`.
    fn set_aside(&mut self, path: &Path, aside: PathBuf) -> Result<(), BackupError> {
        match fs::rename(path, &aside) {
            Ok(()) => {
                self.aside.push((path.to_owned(), aside));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(path)(e)),
        }
    }

    /// Put the staged `from` in place at `to`.
    fn place(&mut self, from: &Path, to: &Path) -> Result<(), BackupError> {
        move_file(from, to)?;
        self.placed.push(to.to_owned());
        Ok(())
    }

    /// Success: what was set aside goes.
    fn commit(self) {
        for (_, aside) in &self.aside {
            let _ = fs::remove_file(aside).or_else(|_| fs::remove_dir_all(aside));
        }
        for dir in &self.aside_dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }

    /// Failure: the new files go, the old ones come back.
    fn roll_back(self) {
        for path in self.placed.iter().rev() {
            let _ = fs::remove_file(path);
        }
        for (path, aside) in self.aside.iter().rev() {
            let _ = fs::rename(aside, path);
        }
        for dir in &self.aside_dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Set aside the database, the blob directory's entries and the certificate, and put the
/// staged ones in their places. Returns how many blob files were placed.
fn place(
    moves: &mut Moves,
    staging: &Path,
    db: &Path,
    blob_dir: &Path,
    found: &BTreeMap<String, (u64, String)>,
    tls: [&Path; 2],
) -> Result<usize, BackupError> {
    let pid = std::process::id();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        moves.set_aside(
            &path,
            PathBuf::from(format!("{}.replaced.{pid}{suffix}", db.display())),
        )?;
    }
    if let Some(dir) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let staged = PathBuf::from(format!("{}{suffix}", staging.join(DATABASE).display()));
        if staged.exists() {
            moves.place(&staged, &PathBuf::from(format!("{}{suffix}", db.display())))?;
        }
    }
    // The blob directory may be a mount point: its entries are set aside inside it.
    fs::create_dir_all(blob_dir).map_err(io_at(blob_dir))?;
    set_mode(blob_dir, 0o700)?;
    let aside_dir = blob_dir.join(format!(".replaced.{pid}"));
    let old: Vec<PathBuf> = fs::read_dir(blob_dir)
        .map_err(io_at(blob_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if !old.is_empty() {
        private_new_dir(&aside_dir)?;
        moves.aside_dirs.push(aside_dir.clone());
        for path in old {
            if let Some(name) = path.file_name() {
                moves.set_aside(&path, aside_dir.join(name))?;
            }
        }
    }
    let mut blobs = 0;
    for path in found.keys().filter(|p| p.starts_with("blobs/")) {
        let name = &path["blobs/".len()..];
        moves.place(&staging.join(path), &blob_dir.join(name))?;
        blobs += 1;
    }
    for (path, target) in [("tls/cert.pem", tls[0]), ("tls/key.pem", tls[1])] {
        let aside = target.with_extension(format!("pem.replaced.{pid}"));
        moves.set_aside(target, aside)?;
        if found.contains_key(path) {
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir).map_err(io_at(dir))?;
                set_mode(dir, 0o700)?;
            }
            moves.place(&staging.join(path), target)?;
        }
    }
    Ok(blobs)
}

/// `ms` since the Unix epoch as RFC 3339 (the number itself if out of range).
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A new directory readable by its owner only; an existing one (someone else's, say, in a
/// shared directory) is an error.
fn private_new_dir(path: &Path) -> Result<(), BackupError> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(io_at(path))
}

/// A new file readable by its owner only; an existing one is an error.
fn private_new_file(path: &Path) -> Result<fs::File, BackupError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_at(path))
}

/// Rename, or copy and remove across filesystems.
fn move_file(from: &Path, to: &Path) -> Result<(), BackupError> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(io_at(to))?;
    set_mode(to, 0o600)?;
    fs::remove_file(from).map_err(io_at(from))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), BackupError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_layout_is_allowed() {
        for ok in [
            "tacit.db",
            "tls/cert.pem",
            "tls/key.pem",
            "blobs/AbC-_9",
            "blobs/AbC-_9.part",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "../tacit.db",
            "blobs/../../etc/passwd",
            "blobs/",
            "blobs/.part",
            "blobs/a/b",
            "/tacit.db",
            "audit.key",
            "tls/other.pem",
            "blobs/a.b",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }

    fn restore_event() -> crate::audit::Event {
        crate::audit::Event::new(
            crate::audit::Action::BackupRestore,
            crate::audit::Outcome::Success,
        )
    }

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    /// A backup of a live SQLite store restores byte for byte; a tampered, cut or foreign
    /// archive and a non-empty target are refused with nothing put in place.
    #[tokio::test]
    async fn round_trip_and_refusals() {
        let src = tempfile::tempdir().unwrap();
        let cfg = config(src.path());
        let store = crate::store::SqliteStore::connect(&cfg.effective_database_url())
            .await
            .unwrap();
        crate::store::Store::migrate(&store).await.unwrap();
        // A blob record and its file, and one whose file is already gone.
        let blob_dir = cfg.blob_dir();
        fs::create_dir_all(&blob_dir).unwrap();
        let keep = BlobId([7; 16]);
        let lost = BlobId([8; 16]);
        fs::write(blob_dir.join(keep.to_string()), b"ciphertext of a file").unwrap();
        let mut conn = SqliteConnectOptions::from_str(&cfg.effective_database_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO accounts (id, username, created_at, next_device_id) VALUES (1, 'a', 0, 2)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for id in [keep, lost] {
            sqlx::query(
                "INSERT INTO blobs (id, account_id, device_id, size, created_at, expires_at) \
                 VALUES ($1, 1, 1, 20, 0, 9999999999999)",
            )
            .bind(id.0.to_vec())
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();
        // The self-signed certificate is carried along.
        let (cert, key) = crate::tls::self_signed_paths(src.path());
        fs::create_dir_all(cert.parent().unwrap()).unwrap();
        fs::write(&cert, b"CERT").unwrap();
        fs::write(&key, b"KEY").unwrap();
        fs::write(src.path().join("audit.key"), b"never in a backup").unwrap();

        let out = src.path().join("b.tar");
        let mut lines = Vec::new();
        let summary = backup(&cfg, &out, |l| lines.push(l.to_owned()))
            .await
            .unwrap();
        assert_eq!(summary.blobs_gone, 1);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let paths: Vec<&str> = summary
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "tacit.db",
                &format!("blobs/{keep}") as &str,
                "tls/cert.pem",
                "tls/key.pem"
            ]
        );
        assert!(
            !fs::read_dir(src.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("staging"))
        );
        let bytes = fs::read(&out).unwrap();
        assert!(
            !bytes
                .windows(b"never in a backup".len())
                .any(|w| w == b"never in a backup")
        );

        let dst = tempfile::tempdir().unwrap();
        let target = config(&dst.path().join("data"));
        let restored = unpack(&target, &out, false, &restore_event(), |_| {})
            .await
            .unwrap();
        assert_eq!(restored.manifest, summary.manifest);
        assert_eq!(restored.dropped, 0);
        assert_eq!(
            fs::read(target.blob_dir().join(keep.to_string())).unwrap(),
            b"ciphertext of a file"
        );
        let (cert2, key2) = crate::tls::self_signed_paths(&target.data_dir);
        assert_eq!(fs::read(cert2).unwrap(), b"CERT");
        assert_eq!(fs::read(key2).unwrap(), b"KEY");
        let restored = crate::store::SqliteStore::connect(&target.effective_database_url())
            .await
            .unwrap();
        assert!(
            crate::store::Store::expired_blobs(&restored, tacit_api::Timestamp(i64::MAX), 10)
                .await
                .unwrap()
                .len()
                == 1,
            "only the blob whose file was copied"
        );

        // Not into a directory holding data, unless forced.
        assert!(matches!(
            unpack(&target, &out, false, &restore_event(), |_| {}).await,
            Err(BackupError::NotEmpty(_))
        ));
        unpack(&target, &out, true, &restore_event(), |_| {})
            .await
            .unwrap();

        // A flipped byte, a cut archive, a foreign file: refused, nothing replaced.
        let empty = tempfile::tempdir().unwrap();
        let fresh = config(&empty.path().join("data"));
        let at = bytes
            .windows(b"ciphertext of a file".len())
            .position(|w| w == b"ciphertext of a file")
            .unwrap();
        let mut tampered = bytes.clone();
        tampered[at] ^= 1;
        let bad = empty.path().join("bad.tar");
        fs::write(&bad, &tampered).unwrap();
        let err = unpack(&fresh, &bad, false, &restore_event(), |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
        fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            unpack(&fresh, &bad, false, &restore_event(), |_| {}).await,
            Err(BackupError::Damaged { .. })
        ));
        fs::write(&bad, b"not a tar archive at all, just some bytes").unwrap();
        assert!(matches!(
            unpack(&fresh, &bad, false, &restore_event(), |_| {}).await,
            Err(BackupError::Damaged { .. })
        ));
        assert!(
            !sqlite_path(&fresh).unwrap().exists(),
            "nothing put in place"
        );

        // PostgreSQL is backed up with pg_dump.
        let mut pg = config(empty.path());
        pg.database_url = crate::config::Redacted("postgres://x@127.0.0.1/db".into());
        assert!(matches!(sqlite_path(&pg), Err(BackupError::Postgres)));
    }
}
