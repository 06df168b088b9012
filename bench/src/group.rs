//! `tacit-bench group`: the cost of one group message as the group grows.
//!
//! For each size N (member devices, one device per member), a fresh server on SQLite and N+1
//! registered accounts; then `--messages` group messages of 1 KiB plaintext, each encrypted
//! once with a sender key (the client's cost) and posted as one multicast to the N devices
//! (the server's cost: one body row plus N envelope rows, committed before the answer). The
//! database's growth per message shows what each extra device costs in storage.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tacit_api::{Ciphertext, DeviceId, MulticastRecipient, MulticastRequest};
use tacit_crypto::{GroupId, SenderKeyState};

use crate::{register_many, start_server, stop};

/// Options of the group benchmark.
pub(crate) struct GroupOptions {
    sizes: Vec<usize>,
    messages: usize,
    output: Option<std::path::PathBuf>,
}

impl GroupOptions {
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut o = Self {
            sizes: vec![10, 100, 1000],
            messages: 50,
            output: Some(std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/PERFORMANCE.md"
            ))),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
            match arg.as_str() {
                "--sizes" => {
                    o.sizes = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .context("--sizes: comma-separated numbers")?;
                }
                "--messages" => o.messages = value()?.parse()?,
                "--output" => o.output = Some(value()?.into()),
                "--no-write" => o.output = None,
                "--help" | "-h" => {
                    println!(
                        "tacit-bench group [--sizes 10,100,1000] [--messages N] \
                         [--output FILE | --no-write]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown option {other}"),
            }
        }
        if o.sizes.is_empty() || o.sizes.contains(&0) || o.messages == 0 {
            bail!("--sizes and --messages must be positive");
        }
        Ok(o)
    }
}

struct Row {
    devices: usize,
    encrypt: Duration,
    server: Duration,
    bytes: f64,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn one_size(devices: usize, messages: usize) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("tacit.db").display());
    let server = start_server(dir.path(), &db)?;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let sender = register_many(&http, &base, &format!("s{devices}x"), 1).await?;
    let members = register_many(&http, &base, &format!("m{devices}x"), devices).await?;
    let sender = sender.first().context("sender")?;
    let recipients: Vec<MulticastRecipient> = members
        .iter()
        .map(|m| MulticastRecipient {
            username: m.username.clone(),
            device_ids: vec![DeviceId(1)],
        })
        .collect();
    let mut rng = rand::rng();
    let group = GroupId::generate(&mut rng);
    let mut chain = SenderKeyState::generate(&mut rng, group);
    let plaintext = vec![0x5a; 1024];
    let post = |ciphertext: Vec<u8>, id: String| {
        let request = MulticastRequest {
            client_message_id: id,
            recipients: recipients.clone(),
            own_devices: Vec::new(),
            ciphertext: Ciphertext(ciphertext.into()),
        };
        let http = http.clone();
        let url = format!("{base}/v1/multicast");
        let credential = sender.credential.to_string();
        async move {
            let response = http
                .post(url)
                .bearer_auth(credential)
                .json(&request)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("multicast: {}", response.status());
            }
            Ok(())
        }
    };
    for i in 0..3 {
        let ciphertext = chain.encrypt(&plaintext).map_err(|e| anyhow!("{e}"))?;
        post(ciphertext, format!("warm-{i}")).await?;
    }
    let before = dir_bytes(dir.path());
    let (mut encrypt, mut server_time) = (Duration::ZERO, Duration::ZERO);
    for i in 0..messages {
        let start = Instant::now();
        let ciphertext = chain.encrypt(&plaintext).map_err(|e| anyhow!("{e}"))?;
        encrypt += start.elapsed();
        let start = Instant::now();
        post(ciphertext, format!("m-{i}")).await?;
        server_time += start.elapsed();
    }
    let after = dir_bytes(dir.path());
    stop(server)?;
    let n = u32::try_from(messages).unwrap_or(u32::MAX);
    Ok(Row {
        devices,
        encrypt: encrypt / n,
        server: server_time / n,
        bytes: after.saturating_sub(before) as f64 / messages as f64,
    })
}

pub(crate) async fn group_bench(options: GroupOptions) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &size in &options.sizes {
        eprintln!("group of {size} devices: {} messages ...", options.messages);
        rows.push(one_size(size, options.messages).await?);
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| member devices | client: sender-key encrypt per message | server: multicast stored and answered | per destination device | database growth per message | per destination device |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in &rows {
        let per_device = r.server.as_secs_f64() * 1e6 / r.devices as f64;
        let _ = writeln!(
            t,
            "| {} | {:.1} µs | {:.2} ms | {:.1} µs | {:.0} bytes | {:.0} bytes |",
            r.devices,
            r.encrypt.as_secs_f64() * 1e6,
            r.server.as_secs_f64() * 1e3,
            per_device,
            r.bytes,
            r.bytes / r.devices as f64
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.devices > first.devices
    {
        let marginal = (last.server.as_secs_f64() - first.server.as_secs_f64()) * 1e6
            / (last.devices - first.devices) as f64;
        let bytes = (last.bytes - first.bytes) / (last.devices - first.devices) as f64;
        let _ = writeln!(
            t,
            "\nEach device beyond {} adds {marginal:.1} µs of server time and {bytes:.0} bytes \
             of storage per message; the 1 KiB ciphertext is stored once whatever the size, \
             and the client encrypts once.",
            first.devices
        );
    }
    println!("{t}");
    if let Some(path) = &options.output {
        crate::write_section(
            path,
            "## Group send",
            &format!(
                "Measured by `cargo run --release -p tacit-bench -- group` (this section is \
                 rewritten by each run; see `bench/src/group.rs`). One sender, N members with \
                 one device each, SQLite with `synchronous = FULL`, {} messages of 1 KiB \
                 plaintext per size, sequential, client and server on the same machine over \
                 loopback. Storage is the growth of the database files (WAL included) during \
                 the run.\n\n{t}",
                options.messages
            ),
        )?;
        eprintln!("wrote the Group send section of {}", path.display());
    }
    Ok(())
}
