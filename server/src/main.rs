//! `tacit-server`: parse arguments, load the configuration, open the store, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tacit_server::audit::{AuditKey, Checkpoint};
use tacit_server::config::{Config, LogFormat, Redacted};
use tacit_server::service::{Admin, Origin, Services, Since};
use tacit_server::store;

/// The Tacit relay server.
#[derive(Debug, Parser)]
#[command(name = "tacit-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    overrides: Overrides,
    /// Once the listening socket is bound, print one line `listening addr=ADDR:PORT` on
    /// stdout (the bound address, useful with port 0), for scripts and tests to read.
    #[arg(long, global = true)]
    print_addr: bool,
}

/// Flags that override the configuration (defaults < file < `TACIT_*` env < flags).
#[derive(Debug, Args)]
struct Overrides {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Directory for the SQLite database and the generated TLS certificate.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `postgres://...` or `sqlite:...` (default: SQLite in the data directory).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Let anyone register without an invite.
    #[arg(long, global = true)]
    open_registration: bool,
    /// Serve plain HTTP (only allowed on a loopback address).
    #[arg(long, global = true)]
    plain_http: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage registration invites.
    Invite {
        #[command(subcommand)]
        command: InviteCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Verify, export and checkpoint the audit log (docs/AUDIT.md).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Administer users, devices, roles, invites and quotas on the configured database,
    /// while the server runs too (docs/ADMIN.md). Every change is audited (`via: host`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Write a consistent backup of the SQLite store, its blobs and its TLS certificate to
    /// FILE (one archive with a manifest of checksums) while the server runs
    /// (docs/BACKUP.md). A PostgreSQL store is backed up with pg_dump instead.
    Backup {
        /// The archive to write.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup into the data directory (`--data-dir`): every file is checked
    /// against the manifest first, then the unclaimed one-time prekeys are dropped (one
    /// may have been handed out after the backup; clients upload new ones). Audited.
    Restore {
        /// The archive `tacit-server backup` wrote (not with --after-pg-restore).
        #[arg(required_unless_present = "after_pg_restore")]
        file: Option<PathBuf>,
        /// Replace the database, blobs and certificate a non-empty data directory holds.
        #[arg(long)]
        force: bool,
        /// After `pg_restore` into the configured PostgreSQL database: only drop the
        /// unclaimed one-time prekeys (and audit the restore).
        #[arg(long, conflicts_with_all = ["file", "force"])]
        after_pg_restore: bool,
    },
    /// Ask the running server's `/readyz` over loopback and exit 0 when it answers ready,
    /// 1 otherwise: the container image's and orchestrators' health check. Opens no
    /// database.
    Healthcheck {
        /// The URL to ask (default: `/readyz` at the configured `listen` port on loopback,
        /// `https` unless `plain_http`; the certificate is not verified, only the answer).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Write a fresh random bearer token for the identity provider's SCIM client to FILE
    /// (mode 0600) and print how to configure it (docs/SCIM.md).
    ScimToken {
        /// The file to write (`[scim] bearer_token_file`).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace the file if it exists (the old token stops working at the next start).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// List users with their devices (name, created, last seen, prekey stock, mailbox
    /// depth).
    Users {
        /// Only users whose name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Print JSON (the API's AdminUserList) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one user with their devices.
    User {
        /// The user.
        username: String,
        /// Print JSON (the API's AdminUser) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: every credential refused, every socket closed within a second.
    Disable {
        /// The user.
        username: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user.
        username: String,
    },
    /// Remove one device of a user (not the last: delete the account instead).
    RemoveDevice {
        /// The user.
        username: String,
        /// The device's number.
        device_id: u32,
    },
    /// Delete a user's account (for one who lost every device); the name is free again.
    Delete {
        /// The user.
        username: String,
        /// Confirm: the account's keys and waiting messages are deleted for good.
        #[arg(long)]
        yes: bool,
    },
    /// Grant a role (`admin` or `auditor`).
    Grant {
        /// The user.
        username: String,
        /// The role.
        role: String,
    },
    /// Revoke a role.
    Revoke {
        /// The user.
        username: String,
        /// The role.
        role: String,
    },
    /// Set a user's own limits; an option left out returns that limit to the server's.
    Quota {
        /// The user.
        username: String,
        /// Most devices.
        #[arg(long, value_name = "N")]
        max_devices: Option<u32>,
        /// Most bytes of blobs.
        #[arg(long, value_name = "BYTES")]
        blob_quota_bytes: Option<u64>,
    },
    /// Manage invites with expiry and use counts.
    Invite {
        #[command(subcommand)]
        command: AdminInviteCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminInviteCommand {
    /// Create an invite and print its token (alone) on stdout.
    Create {
        /// Seconds until it expires (default: never).
        #[arg(long, value_name = "SECS")]
        expires_in: Option<u64>,
        /// How many registrations it admits (default 1).
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
    },
    /// List invites (id, created, expires, uses).
    List,
    /// Revoke an invite by its id (from `list`).
    Revoke {
        /// The invite's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole chain (and kept checkpoints); print a one-line summary, or name the
    /// first broken entry and exit 1.
    Verify {
        /// A file of checkpoints kept outside the server (one JSON object per line); may
        /// be given more than once.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
        /// The audit public key (64 hex digits) to check checkpoints under, instead of the
        /// key file's.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
    /// Print entries as ECS-style JSON lines on stdout.
    Export {
        /// The output format (only `jsonl`).
        #[arg(long, value_name = "FORMAT", default_value = "jsonl")]
        format: ExportFormat,
        /// Start at this sequence number, or at this RFC 3339 time
        /// (`2026-12-01T00:00:00Z`).
        #[arg(long, value_name = "SEQ|TIME")]
        since: Option<String>,
    },
    /// Print the public key that verifies the server's checkpoints (hex).
    PublicKey,
    /// Sign a checkpoint of the log's head now, store it, and print it (one JSON line).
    Checkpoint,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum InviteCommand {
    /// Create an invite and print its token (alone) on stdout.
    Create,
    /// List invites (id, created, expires, uses); the same as `admin invite list`.
    List,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, print the effective values, and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Before the configuration is loaded: a `[scim]` naming this file does not load
    // until the file exists.
    if let Some(Command::ScimToken { out, force }) = &cli.command {
        scim_token(out, *force)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = match load_config(&cli.overrides) {
        Ok(config) => config,
        Err(e) => {
            // A configuration error does not go away by itself: a distinct exit status
            // (the systemd unit's `RestartPreventExitStatus=2`) stops restart loops. Not
            // for the health check: Docker reserves its status 2; it answers unhealthy.
            eprintln!("error: {e:#}");
            if matches!(cli.command, Some(Command::Healthcheck { .. })) {
                return Ok(ExitCode::FAILURE);
            }
            return Ok(ExitCode::from(CONFIG_ERROR));
        }
    };
    let print_addr = cli.print_addr;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck { url, timeout_secs } = &command {
        return healthcheck(&config, url.as_deref(), *timeout_secs);
    }
    // Before any store is opened: a restore must find its target empty, and a backup
    // reads the database file itself.
    if let Command::Backup { file, force } = &command {
        return backup(&config, file, *force);
    }
    if let Command::Restore {
        file,
        force,
        after_pg_restore,
    } = &command
    {
        return restore(&config, file.as_deref(), *force, *after_pg_restore);
    }
    if let Command::Config {
        command: ConfigCommand::Check,
    } = command
    {
        println!("configuration is valid\n{config:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let config = Arc::new(config);
        let store = open_store(&config).await?;
        match command {
            Command::Serve => serve(config, store, print_addr)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Migrate => {
                tracing::info!("migrations applied");
                Ok(ExitCode::SUCCESS)
            }
            Command::Audit { command } => {
                let code = audit(command, &config, store.clone()).await;
                store.close().await;
                code
            }
            Command::Invite {
                command: InviteCommand::Create,
            } => {
                let token = Services::new(store.clone(), config)
                    .create_invite(Origin::Host)
                    .await
                    .context("creating the invite")?;
                store.close().await;
                println!("{token}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Invite {
                command: InviteCommand::List,
            } => {
                let code = admin(
                    AdminCommand::Invite {
                        command: AdminInviteCommand::List,
                    },
                    &config,
                    store.clone(),
                )
                .await;
                store.close().await;
                code
            }
            Command::Admin { command } => {
                let code = admin(command, &config, store.clone()).await;
                store.close().await;
                code
            }
            Command::Config { .. }
            | Command::ScimToken { .. }
            | Command::Healthcheck { .. }
            | Command::Backup { .. }
            | Command::Restore { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

/// `tacit-server scim-token`: 32 random bytes as 64 hex digits, in a new file of mode 0600.
fn scim_token(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).context("reading the operating system's RNG")?;
    let token = zeroize::Zeroizing::new(hex::encode(secret.as_ref()));
    if force && out.exists() {
        std::fs::remove_file(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(out).with_context(|| {
        format!(
            "creating {} (it must not exist yet; --force replaces it)",
            out.display()
        )
    })?;
    file.write_all(format!("{}\n", token.as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    let path = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_owned());
    println!(
        "wrote a new SCIM bearer token to {path}\n\n\
         1. In the server's configuration file:\n\n\
         [scim]\n\
         bearer_token_file = \"{path}\"\n\n\
         2. Restart the server.\n\
         3. In the identity provider's provisioning settings: tenant URL / SCIM base URL\n\
         \x20  https://<this server>/scim/v2, authentication \"Bearer token\" (Entra ID: \"Secret\n\
         \x20  Token\"; Okta: \"HTTP Header\"), the token being the file's one line.\n\
         See docs/SCIM.md.",
        path = path.display()
    );
    Ok(())
}

/// `tacit-server audit ...`, on the configured database (while the server runs, too).
async fn audit(
    command: AuditCommand,
    config: &Arc<Config>,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<ExitCode> {
    let svc = Services::new(store, config.clone());
    let key_file = config.audit_key_file();
    match command {
        AuditCommand::Verify {
            checkpoint,
            public_key,
        } => {
            let mut kept = Vec::new();
            for file in &checkpoint {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading checkpoints from {}", file.display()))?;
                kept.extend(
                    Checkpoint::parse_all(&text)
                        .with_context(|| format!("reading checkpoints from {}", file.display()))?,
                );
            }
            let key = public_key.map(|hex| parse_public_key(&hex)).transpose()?;
            match svc.audit_verify(&kept, key.as_ref()).await {
                Ok(verified) => {
                    let plural = if verified.checkpoints == 1 { "" } else { "s" };
                    let kept = verified.head.seq - verified.anchor.seq;
                    let pruned = if verified.anchor.seq == 0 {
                        String::new()
                    } else {
                        format!(
                            " (entries 1 to {} pruned by retention; the chain starts at their \
                             last hash {})",
                            verified.anchor.seq, verified.anchor.hash
                        )
                    };
                    println!(
                        "audit log verified: {kept} entries{pruned}, head {}, {} checkpoint{plural} matched",
                        verified.head.hash, verified.checkpoints
                    );
                    if verified.before_anchor > 0 {
                        println!(
                            "{} checkpoint(s) cover only pruned entries and were not compared",
                            verified.before_anchor
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.is_broken() => {
                    eprintln!("audit log is broken: {e}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e).context("verifying the audit log"),
            }
        }
        AuditCommand::Export { format, since } => {
            let ExportFormat::Jsonl = format;
            let since = match since {
                None => Since::Start,
                Some(text) => parse_since(&text)?,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            svc.audit_export(since, &mut out, Origin::Host)
                .await
                .context("exporting the audit log")?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::PublicKey => {
            let key = AuditKey::load_or_create(&key_file)
                .context("loading the audit key (config key `audit.key_file`)")?;
            println!("{}", hex::encode(key.public().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let key = AuditKey::load_or_create(&key_file)
                .context("loading the audit key (config key `audit.key_file`)")?;
            let checkpoint = svc
                .audit_checkpoint(&key, Origin::Host)
                .await
                .context("signing a checkpoint")?;
            println!(
                "{}",
                serde_json::to_string(&checkpoint).context("printing the checkpoint")?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tacit-server admin ...`, on the configured database (while the server runs, too: the
/// server applies revocations made here within a second).
async fn admin(
    command: AdminCommand,
    config: &Arc<Config>,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<ExitCode> {
    let svc = Services::new(store, config.clone());
    let host = Admin::Host;
    match command {
        AdminCommand::Users { search, json } => {
            let mut after = None;
            let mut all = Vec::new();
            loop {
                let page = svc
                    .admin_users(host, search.as_deref(), after.as_deref(), Some(1000))
                    .await
                    .context("listing users")?;
                all.extend(page.users);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if json {
                let list = tacit_api::AdminUserList {
                    users: all,
                    next: None,
                };
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for user in &all {
                    print_user(user);
                }
                if all.is_empty() {
                    eprintln!("no users");
                }
            }
        }
        AdminCommand::User { username, json } => {
            let user = svc
                .admin_user(host, &username)
                .await
                .with_context(|| format!("reading user {username}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&user)?);
            } else {
                print_user(&user);
            }
        }
        AdminCommand::Disable { username } => {
            let changed = svc
                .set_user_disabled(host, &username, true)
                .await
                .with_context(|| format!("disabling {username}"))?;
            println!(
                "{username}: {}",
                if changed {
                    "disabled"
                } else {
                    "already disabled"
                }
            );
        }
        AdminCommand::Enable { username } => {
            let changed = svc
                .set_user_disabled(host, &username, false)
                .await
                .with_context(|| format!("enabling {username}"))?;
            println!(
                "{username}: {}",
                if changed { "enabled" } else { "not disabled" }
            );
        }
        AdminCommand::RemoveDevice {
            username,
            device_id,
        } => {
            svc.admin_remove_device(host, &username, tacit_api::DeviceId(device_id))
                .await
                .with_context(|| format!("removing device {device_id} of {username}"))?;
            println!("{username}: device {device_id} removed");
        }
        AdminCommand::Delete { username, yes } => {
            if !yes {
                anyhow::bail!(
                    "deleting {username} deletes their keys and waiting messages for good: \
                     run again with --yes to confirm"
                );
            }
            svc.admin_delete_user(host, &username)
                .await
                .with_context(|| format!("deleting {username}"))?;
            println!("{username}: account deleted (the name can be registered again)");
        }
        AdminCommand::Grant { role, .. } | AdminCommand::Revoke { role, .. }
            if tacit_api::Role::from_name(&role).is_none() =>
        {
            anyhow::bail!("no role {role:?}: the roles are `admin` and `auditor`");
        }
        AdminCommand::Grant { username, role } => {
            let role = tacit_api::Role::from_name(&role).context("no such role")?;
            let changed = svc
                .set_role(host, &username, role, true)
                .await
                .with_context(|| format!("granting {role} to {username}"))?;
            println!(
                "{username}: {role} {}",
                if changed { "granted" } else { "already held" }
            );
        }
        AdminCommand::Revoke { username, role } => {
            let role = tacit_api::Role::from_name(&role).context("no such role")?;
            let changed = svc
                .set_role(host, &username, role, false)
                .await
                .with_context(|| format!("revoking {role} from {username}"))?;
            println!(
                "{username}: {role} {}",
                if changed { "revoked" } else { "not held" }
            );
        }
        AdminCommand::Quota {
            username,
            max_devices,
            blob_quota_bytes,
        } => {
            let quota = tacit_api::SetQuotaRequest {
                max_devices,
                blob_quota_bytes,
            };
            svc.set_quota(host, &username, &quota)
                .await
                .with_context(|| format!("setting the quota of {username}"))?;
            println!("{username}: quota set");
        }
        AdminCommand::Invite { command } => match command {
            AdminInviteCommand::Create {
                expires_in,
                max_uses,
            } => {
                let req = tacit_api::CreateInviteRequest {
                    expires_in_secs: expires_in,
                    max_uses,
                };
                let created = svc
                    .admin_create_invite(host, &req)
                    .await
                    .context("creating the invite")?;
                println!("{}", created.token);
            }
            AdminInviteCommand::List => {
                let list = svc.admin_invites(host).await.context("listing invites")?;
                for i in list.invites {
                    println!("{}", invite_line(&i));
                }
            }
            AdminInviteCommand::Revoke { id } => {
                svc.admin_revoke_invite(host, &id)
                    .await
                    .with_context(|| format!("revoking invite {id}"))?;
                println!("invite {id} revoked");
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// A time for people: RFC 3339 in UTC, or `-`.
fn show_time(t: Option<tacit_api::Timestamp>) -> String {
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000).ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

fn print_user(user: &tacit_api::AdminUser) {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    println!(
        "{}\tcreated={}\t{}\troles={}",
        user.username,
        show_time(Some(user.created_at)),
        if user.disabled_at.is_some() {
            format!("disabled={}", show_time(user.disabled_at))
        } else {
            "active".to_owned()
        },
        if roles.is_empty() {
            "member".to_owned()
        } else {
            roles.join(",")
        }
    );
    for d in &user.devices {
        println!(
            "  device {}\tname={}\tcreated={}\tlast_seen={}\tprekeys={}/{}\tmailbox={}",
            d.device_id.0,
            d.name.as_deref().unwrap_or("-"),
            show_time(Some(d.created_at)),
            show_time(d.last_seen_at),
            d.one_time_prekeys,
            d.one_time_kem_prekeys,
            d.mailbox_depth
        );
    }
}

fn invite_line(i: &tacit_api::InviteInfo) -> String {
    format!(
        "{}\tcreated={}\texpires={}\tuses={}/{}{}",
        i.id,
        show_time(Some(i.created_at)),
        show_time(i.expires_at),
        i.uses,
        i.max_uses,
        if i.revoked_at.is_some() {
            "\trevoked"
        } else {
            ""
        }
    )
}

/// `--since`: a sequence number, or an RFC 3339 time.
fn parse_since(text: &str) -> anyhow::Result<Since> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Since::Seq(seq));
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--since {text:?}: neither a sequence number nor an RFC 3339 time")
        })?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    Ok(Since::Time(
        i64::try_from(ms).context("--since: the time is out of range")?,
    ))
}

/// `--public-key`: 64 hex digits of an Ed25519 public key.
fn parse_public_key(text: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .context("--public-key: not 64 hex digits")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).context("--public-key: not an Ed25519 key")
}

/// `tacit-server backup FILE`.
fn backup(config: &Config, file: &std::path::Path, force: bool) -> anyhow::Result<ExitCode> {
    if file.exists() && !force {
        anyhow::bail!(
            "{} exists: choose another name, or pass --force to replace it",
            file.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let summary = runtime
        .block_on(tacit_server::backup::backup(config, file, |line| {
            eprintln!("backup: {line}");
        }))
        .context("backing up")?;
    println!(
        "wrote {} ({} files, {} KiB, snapshot of {}) in {:.1} s",
        file.display(),
        summary.manifest.files.len(),
        summary.archive_bytes.div_ceil(1024),
        tacit_server::backup::rfc3339(summary.manifest.created_at_ms),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "backup: not in it: the audit key ({}); keep a copy of it apart (docs/AUDIT.md)",
        config.audit_key_file().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tacit-server restore FILE` or `restore --after-pg-restore`.
fn restore(
    config: &Config,
    file: Option<&std::path::Path>,
    force: bool,
    after_pg_restore: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let audit = Origin::Host.event(tacit_server::audit::Action::BackupRestore);
    runtime.block_on(async {
        match (file, after_pg_restore) {
            (_, true) => {
                if config.backend_name() != "postgresql" {
                    anyhow::bail!(
                        "--after-pg-restore is for a PostgreSQL database (config key `database_url`); \
                         a SQLite store is restored from its archive: restore FILE"
                    );
                }
                let store = open_store(config).await?;
                let dropped = store
                    .after_restore(&audit, tacit_server::service::now())
                    .await
                    .context("dropping the restored one-time prekeys");
                store.close().await;
                println!(
                    "prepared the restored database; dropped {} unclaimed one-time prekeys \
                     (clients upload new ones)",
                    dropped?
                );
            }
            (Some(file), false) => {
                let restored = tacit_server::backup::unpack(config, file, force, &audit, |line| {
                    eprintln!("restore: {line}");
                })
                .await
                .with_context(|| format!("restoring {}", file.display()))?;
                println!(
                    "restored the backup of {} ({} files); dropped {} unclaimed one-time \
                     prekeys (clients upload new ones)",
                    tacit_server::backup::rfc3339(restored.manifest.created_at_ms),
                    restored.manifest.files.len(),
                    restored.dropped
                );
            }
            (None, false) => anyhow::bail!("name the archive to restore: restore FILE"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The exit status of a configuration that does not load or validate.
const CONFIG_ERROR: u8 = 2;

/// `tacit-server healthcheck`: 0 when `/readyz` answers 200, 1 otherwise.
fn healthcheck(config: &Config, url: Option<&str>, timeout_secs: u64) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            let listen = config.listen;
            if listen.port() == 0 {
                anyhow::bail!(
                    "`listen` has port 0 (any free port): the health check cannot know it; pass --url"
                );
            }
            let ip = match listen.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            let scheme = if config.plain_http { "http" } else { "https" };
            format!("{scheme}://{}/readyz", SocketAddr::new(ip, listen.port()))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        // Built inside the runtime (its connector needs one). Loopback to this server: the
        // certificate (often self-signed) is not what is checked, readiness is.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(timeout_secs))
            .build()?;
        client.get(&url).send().await
    });
    match outcome {
        Ok(response) if response.status().is_success() => {
            println!("ready");
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            println!("not ready: {url} answered {}", response.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("not ready: {url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn load_config(o: &Overrides) -> anyhow::Result<Config> {
    let mut config = Config::load(o.config.as_deref())?;
    if let Some(listen) = o.listen {
        config.listen = listen;
    }
    if let Some(dir) = &o.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(url) = &o.database_url {
        config.database_url = Redacted(url.clone());
    }
    config.open_registration |= o.open_registration;
    config.plain_http |= o.plain_http;
    config.validate()?;
    Ok(config)
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .context("invalid config key `log.level`")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("initialising logging: {e}"))
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    tacit_server::private_dir(&config.data_dir).with_context(|| {
        format!(
            "creating the data directory {} (config key `data_dir`)",
            config.data_dir.display()
        )
    })?;
    let store = store::open(&config.effective_database_url())
        .await
        .with_context(|| format!("opening the {} database", config.backend_name()))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

async fn serve(
    config: Arc<Config>,
    store: Arc<dyn store::Store>,
    print_addr: bool,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {} (config key `listen`)", config.listen))?;
    if print_addr {
        use std::io::Write as _;
        let local = listener.local_addr().context("reading the bound address")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening addr={local}")
            .and_then(|()| stdout.flush())
            .context("printing the bound address")?;
    }
    tacit_server::run(listener, config, store, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
