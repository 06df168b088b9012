//! `tacit`: the reference command-line client. A thin layer over `tacit-sdk`.
//!
//! The account lives in a home directory (`--home DIR` or `TACIT_HOME`, default
//! `~/.tacit`); the store passphrase comes from `TACIT_PASSPHRASE` or a prompt.
//!
//! `cli` holds the command line's types, `home` the home directory and its files,
//! `commands` one module per command, and `output` what is printed (every `--json` line
//! goes through `output::json_line`). This file parses the arguments, runs the command and
//! turns an error into one line (`explain`) and an exit code.

use std::process::ExitCode;

use clap::Parser as _;

mod cli;
mod commands;
mod home;
mod output;
mod sso;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tacit: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tacit: {}", explain(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error as one line that says what is wrong and, where the CLI knows, what to do.
fn explain(error: &anyhow::Error) -> String {
    use tacit_sdk::{ConnectProblem as P, TransportError as T};
    let hint = error.chain().find_map(|cause| {
        let transport = cause.downcast_ref::<T>().or_else(|| {
            match cause.downcast_ref::<tacit_sdk::ClientError>() {
                Some(tacit_sdk::ClientError::Transport(t)) => Some(t),
                _ => None,
            }
        })?;
        Some(match transport {
            T::Connect { problem, .. } => match problem {
                P::UntrustedCertificate => {
                    "if it is the server's own certificate, pass --pin with the \
                     sha256_fingerprint its log shows on the `listening (TLS)` line (compare it \
                     with the operator's), or --ca-file with the CA that signed it"
                }
                P::PinMismatch => {
                    "check the pinned fingerprint against the one the server logs; if the \
                     server's certificate was replaced, ask its operator and compare \
                     fingerprints before trusting the new one"
                }
                P::InvalidCertificate => {
                    "check the server address (the certificate must name it) and the \
                     certificate's dates"
                }
                P::Refused => "start the server, or check the address and port",
                P::UnknownHost => "check the server's host name",
                P::TimedOut => "check the network and the server's address, then try again",
                P::WrongProtocol => {
                    "use https:// for a TLS server (the default), http:// only for a \
                     plain-HTTP server on loopback"
                }
                _ => return None,
            },
            T::Api { code, .. } if code == "invite_required" => {
                "registration on this server needs an invite: ask its operator for one and \
                 pass it with --invite (a token is accepted once)"
            }
            T::Api { code, .. } if code == "username_taken" => "choose another username",
            _ => return None,
        })
    });
    match hint {
        Some(hint) => format!("{error:#}; {hint}"),
        None => format!("{error:#}"),
    }
}
