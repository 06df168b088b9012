//! Files: `tacit send-file`, and saving the files that arrive, with a progress bar.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use tacit_sdk::{Client, Progress, Stage};

use crate::home::Home;

pub(super) async fn send_file(home: &Home, group: Option<String>, args: &[String]) -> Result<()> {
    let (to, path) = match (&group, args) {
        (Some(group), [path]) => (group.clone(), PathBuf::from(path)),
        (None, [username, path]) => (username.clone(), PathBuf::from(path)),
        (Some(_), _) => {
            bail!("with --group, give only the file: send-file --group GROUP PATH")
        }
        (None, _) => bail!("give the recipient and the file: send-file USERNAME PATH"),
    };
    let mut client = home.open().await?;
    let bar = transfer_bar();
    let sent = if group.is_some() {
        client
            .send_group_file(&to, &path, &mut |p| show_progress(&bar, p))
            .await
    } else {
        client
            .send_file(&to, &path, &mut |p| show_progress(&bar, p))
            .await
    };
    bar.finish_and_clear();
    let sent = sent?;
    println!("sent {} ({} bytes) to {to}", sent.name, sent.size);
    Ok(())
}

/// Downloads a received file into `dir` with a progress bar; returns where it was saved.
pub(super) async fn save_file(client: &Client, blob_id: &str, dir: &Path) -> Result<PathBuf> {
    let bar = transfer_bar();
    let saved = client
        .download_file(blob_id, dir, &mut |p| show_progress(&bar, p))
        .await;
    bar.finish_and_clear();
    Ok(saved?)
}

/// A progress bar for a transfer, on stderr, hidden unless stderr is a terminal.
fn transfer_bar() -> indicatif::ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(None, target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, progress: Progress) {
    let stage = match progress.stage {
        Stage::Encrypting => "encrypting",
        Stage::Uploading => "uploading",
        Stage::Downloading => "downloading",
        _ => "",
    };
    if bar.message() != stage {
        bar.set_message(stage);
        bar.reset_eta();
    }
    bar.set_length(progress.total);
    bar.set_position(progress.done);
}
