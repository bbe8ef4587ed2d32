//! `aisoule-webhooks`: the command-line tool for developing against AISoule webhooks locally.
//!
//! It plays the platform (`send`, `replay`), checks signatures (`sign`, `verify`), receives
//! (`listen`), and operates the durable inbox (`inbox`), all through the `aisoule-webhooks`
//! library, so that what it accepts is exactly what a receiver built on the library accepts.

mod client;
mod cmd;
mod error;
mod input;
mod record;
mod reformat;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Sign, send, verify, listen for and replay AISoule webhooks; operate the inbox.
#[derive(Debug, Parser)]
#[command(
    name = "aisoule-webhooks",
    version,
    about,
    after_help = "\
Examples:
  export AISOULE_WEBHOOK_SECRET=whsec_…       # or --secret, or be prompted
  aisoule-webhooks listen --record deliveries.jsonl
  aisoule-webhooks send http://127.0.0.1:8080/webhook --event message.read
  aisoule-webhooks verify --request captured.http
  aisoule-webhooks inbox --store inbox.db stats

The secret is never printed, in any output or error."
)]
struct Cli {
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Send a signed sample delivery (or a file's bytes) to a URL, as the platform would.
    Send(cmd::send::SendArgs),
    /// Print the signature headers for a body, ready for curl.
    Sign(cmd::sign::SignArgs),
    /// Check a captured request's signature, and say why it does or does not match.
    Verify(cmd::verify::VerifyArgs),
    /// Receive deliveries locally: verify, print, record, forward.
    Listen(cmd::listen::ListenArgs),
    /// Send the deliveries `listen --record` recorded to a URL.
    Replay(cmd::replay::ReplayArgs),
    /// Operate a durable inbox: stats, list, show, replay, purge.
    Inbox(cmd::inbox::InboxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Send(args) => cmd::send::run(args, json).await,
            Command::Sign(args) => cmd::sign::run(args, json),
            Command::Verify(args) => cmd::verify::run(args, json),
            Command::Listen(args) => cmd::listen::run(args, json).await,
            Command::Replay(args) => cmd::replay::run(args, json).await,
            Command::Inbox(args) => cmd::inbox::run(args, json).await,
        }
    });
    // The inbox's SQLite writer and pooled connections are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
