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
use tacit_server::service::{Origin, Services, Since};
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
    /// List invites (hash prefix, created, used).
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
    let config = load_config(&cli.overrides)?;
    let print_addr = cli.print_addr;
    let command = cli.command.unwrap_or(Command::Serve);
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
                let invites = store.list_invites().await.context("listing invites")?;
                store.close().await;
                for i in invites {
                    let used = i
                        .used_at
                        .map_or_else(|| "-".to_owned(), |t| t.0.to_string());
                    println!("{}\tcreated={}\tused={used}", i.hash_prefix, i.created_at.0);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Config { .. } => Ok(ExitCode::SUCCESS),
        }
    })
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
                    println!(
                        "audit log verified: {} entries, head {}, {} checkpoint{plural} matched",
                        verified.head.seq, verified.head.hash, verified.checkpoints
                    );
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
