//! What the CLI prints on standard output: received events as lines of text, and every
//! `--json` line through [`json_line`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use tacit_sdk::{Incoming, IncomingKind, ReceiptKind};

/// Prints `value` as one line of JSON: every `--json` line of the CLI goes through here.
///
/// The keys come in the order `value` serializes them. The CLI's own line types list their
/// fields in alphabetical order, the order these lines have always had; an event line is
/// first made a `serde_json::Value`, whose keys are sorted, for the same reason.
pub(crate) fn json_line<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// One received event as a JSON line: the SDK's [`Incoming`] (stable keys: `sender`,
/// `sender_device`, `time`, `kind`, and `peer`, `text`, `message_id` for text, `receipt`,
/// `message_ids` for receipts, `name`, `size`, `blob_id` for files, `seconds` for timer
/// changes, `error` for failures),
/// with `error: null` for a text and, for a file, `path` (or `null` and an `error`).
#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a Incoming,
    /// Files only: where the file was saved, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<Option<&'a Path>>,
    /// Texts and files: `null`, or why the file could not be saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Option<String>>,
}

impl EventLine<'_> {
    fn print(&self) -> Result<()> {
        json_line(&serde_json::to_value(self)?)
    }
}

/// Prints a received file and where it was saved: a line, or with `--json` the event's
/// object with `kind` = `file`, `name`, `size`, `blob_id`, and `path` (or `null` and an
/// `error`).
pub(crate) fn print_file(event: &Incoming, saved: &Result<PathBuf>, json: bool) -> Result<()> {
    let IncomingKind::File {
        peer, name, size, ..
    } = &event.kind
    else {
        return print_event(event, json);
    };
    if json {
        let (path, error) = match saved {
            Ok(path) => (Some(path.as_path()), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        EventLine {
            event,
            path: Some(path),
            error: Some(error),
        }
        .print()?;
    } else {
        let from = if *peer == event.sender {
            format!("{}.{}", event.sender, event.sender_device)
        } else {
            format!("(to {peer}, from your device {})", event.sender_device)
        };
        match saved {
            Ok(path) => println!(
                "{from}: file {name} ({size} bytes) saved to {}",
                path.display()
            ),
            Err(_) => println!("{from}: file {name} ({size} bytes) NOT saved"),
        }
    }
    if let Err(e) = saved {
        eprintln!("tacit: {name}: {e:#}");
    }
    Ok(())
}

/// Prints one event: a line of text, or one JSON object with `--json` ([`EventLine`]).
pub(crate) fn print_event(event: &Incoming, json: bool) -> Result<()> {
    if json {
        let error = matches!(event.kind, IncomingKind::Text { .. }).then_some(None);
        return EventLine {
            event,
            path: None,
            error,
        }
        .print();
    }
    let from = format!("{}.{}", event.sender, event.sender_device);
    match &event.kind {
        IncomingKind::Text { peer, text, .. } if *peer == event.sender => {
            println!("{from}: {text}");
        }
        IncomingKind::Text { peer, text, .. } => {
            println!(
                "(to {peer}, from your device {}): {text}",
                event.sender_device
            );
        }
        IncomingKind::Receipt {
            peer,
            receipt,
            message_ids,
        } => {
            let what = match receipt {
                ReceiptKind::Delivered => "received",
                ReceiptKind::Read => "read",
            };
            let n = message_ids.len();
            let plural = if n == 1 { "" } else { "s" };
            if *peer == event.sender {
                println!("[{peer} {what} {n} message{plural}]");
            } else {
                println!(
                    "[you {what} {n} message{plural} from {peer} on device {}]",
                    event.sender_device
                );
            }
        }
        IncomingKind::GroupText { group, text, .. } => println!("[{group}] {from}: {text}"),
        IncomingKind::GroupUpdate { description, .. } => println!("[{description}]"),
        IncomingKind::File {
            peer, name, size, ..
        } => println!("{from}: [file {name}, {size} bytes, in the conversation with {peer}]"),
        IncomingKind::Timer { peer, seconds } => {
            let what = match seconds {
                0 => "turned disappearing messages off".to_owned(),
                s => format!(
                    "set disappearing messages to {}",
                    tacit_sdk::describe_duration(*s)
                ),
            };
            println!("[{from} {what} in the conversation with {peer}]");
        }
        IncomingKind::Expired { peer } => println!(
            "{from}: [a disappearing message in the conversation with {peer} ran out before it \
             arrived; not kept]"
        ),
        IncomingKind::Failed { error } => println!("{from}: [message failed: {error}]"),
    }
    Ok(())
}
