//! `tacit-server`: parse arguments, load the configuration, open the store, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tacit_server::config::{Config, LogFormat, Redacted};
use tacit_server::service::Services;
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli.overrides)?;
    let print_addr = cli.print_addr;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config {
        command: ConfigCommand::Check,
    } = command
    {
        println!("configuration is valid\n{config:#?}");
        return Ok(());
    }
    init_tracing(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let config = Arc::new(config);
        let store = open_store(&config).await?;
        match command {
            Command::Serve => serve(config, store, print_addr).await,
            Command::Migrate => {
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Invite {
                command: InviteCommand::Create,
            } => {
                let token = Services::new(store.clone(), config)
                    .create_invite()
                    .await
                    .context("creating the invite")?;
                store.close().await;
                println!("{token}");
                Ok(())
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
                Ok(())
            }
            Command::Config { .. } => Ok(()),
        }
    })
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
