//! `inbox`: the durable inbox's operations on a SQLite file or a PostgreSQL URL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aisoule_webhooks::event::Timestamp;
use aisoule_webhooks::inbox::{Inbox, InboxStore, JobFilter, JobId, JobRecord, JobState};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::input::parse_duration;

/// Arguments of `inbox`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  aisoule-webhooks inbox --store inbox.db stats
  aisoule-webhooks inbox --store sqlite:inbox.db list                 # dead and quarantined
  aisoule-webhooks inbox --store inbox.db show 42
  aisoule-webhooks inbox --store inbox.db replay 42
  aisoule-webhooks inbox --store inbox.db replay --all --state dead
  aisoule-webhooks inbox --store postgres://app@127.0.0.1/app purge --older-than 7d")]
pub(crate) struct InboxArgs {
    /// The inbox: a SQLite file (`inbox.db` or `sqlite:inbox.db`) or a `postgres://` URL.
    #[arg(
        long,
        env = "AISOULE_INBOX",
        hide_env_values = true,
        value_name = "STORE"
    )]
    store: String,
    #[command(subcommand)]
    command: InboxCommand,
}

/// The inbox's operations.
#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// How many rows are in each state, and how far behind the workers are.
    #[command(after_help = "Example:\n  aisoule-webhooks inbox --store inbox.db stats --json")]
    Stats,
    /// Lists rows: dead letters and quarantined events unless --state says otherwise.
    #[command(
        after_help = "Example:\n  aisoule-webhooks inbox --store inbox.db list --state dead --limit 20"
    )]
    List {
        /// Only rows in this state: pending, running, done, dead, quarantined.
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only rows with a larger id (to page on from the last id seen).
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
    },
    /// Shows one row in full: its state, errors, headers and body.
    #[command(after_help = "Example:\n  aisoule-webhooks inbox --store inbox.db show 42")]
    Show {
        /// The row's id.
        id: i64,
    },
    /// Makes rows pending again, so the workers run them: one by id, or --all in a state.
    #[command(
        after_help = "Examples:\n  aisoule-webhooks inbox --store inbox.db replay 42\n  aisoule-webhooks inbox --store inbox.db replay --all --state quarantined"
    )]
    Replay {
        /// The row's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every row in --state (dead and quarantined by default).
        #[arg(long)]
        all: bool,
        /// With --all: only rows in this state.
        #[arg(long, value_parser = parse_state, requires = "all")]
        state: Option<JobState>,
    },
    /// Deletes handled rows older than --older-than (redeliveries of them are then new).
    #[command(
        after_help = "Example:\n  aisoule-webhooks inbox --store inbox.db purge --older-than 30d"
    )]
    Purge {
        /// How old a handled row must be to go (90s, 15m, 24h, 7d).
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        older_than: Duration,
    },
}

fn parse_state(name: &str) -> Result<JobState, String> {
    JobState::from_name(name).ok_or_else(|| {
        format!("{name:?} is not a state: pending, running, done, dead or quarantined")
    })
}

/// Runs an `inbox` command.
pub(crate) async fn run(args: InboxArgs, json_output: bool) -> Result<(), CliError> {
    let store = open(&args.store).await?;
    match args.command {
        InboxCommand::Stats => {
            let inbox = Inbox::builder_from_arc(store).build()?;
            let stats = inbox.stats().await?;
            let lag = stats.lag(SystemTime::now()).map(|lag| lag.as_secs());
            if json_output {
                let mut line = json!({ "lag_secs": lag });
                for state in JobState::ALL {
                    line[state.as_str()] = json!(stats.count(state));
                }
                println!("{line}");
            } else {
                for state in JobState::ALL {
                    println!("{:<12} {}", state.as_str(), stats.count(state));
                }
                match lag {
                    Some(lag) => println!("{:<12} {lag} s (oldest pending)", "lag"),
                    None => println!("{:<12} none pending", "lag"),
                }
            }
        }
        InboxCommand::List {
            state,
            limit,
            after,
        } => {
            let inbox = Inbox::builder_from_arc(store).build()?;
            let states = match state {
                Some(state) => vec![state],
                None => vec![JobState::Dead, JobState::Quarantined],
            };
            let mut rows = Vec::new();
            for state in states {
                rows.extend(
                    inbox
                        .list(JobFilter {
                            state: Some(state),
                            after: after.map(JobId),
                            limit: Some(limit),
                            ..JobFilter::default()
                        })
                        .await?,
                );
            }
            rows.sort_by_key(|row| row.id);
            rows.truncate(limit);
            if json_output {
                for row in &rows {
                    println!("{}", row_json(row, false));
                }
            } else if rows.is_empty() {
                println!("no rows");
            } else {
                for row in &rows {
                    let why = row
                        .quarantine_reason
                        .as_deref()
                        .or(row.last_error.as_deref())
                        .unwrap_or("");
                    // Only receivers for many accounts store one; the others' lines stay as
                    // they were.
                    let account = row
                        .account
                        .as_deref()
                        .map(|account| format!("account {account}  "))
                        .unwrap_or_default();
                    println!(
                        "{:>6}  {:<11}  {:>2} attempt(s)  {}  {account}{why}",
                        row.id.0,
                        row.state.as_str(),
                        row.attempts,
                        rfc3339(row.received_at),
                    );
                }
            }
        }
        InboxCommand::Show { id } => {
            let inbox = Inbox::builder_from_arc(store).build()?;
            let row = inbox
                .get(JobId(id))
                .await?
                .ok_or_else(|| CliError::Usage(format!("no row {id} in {}", args.store_label())))?;
            let line = row_json(&row, true);
            if json_output {
                println!("{line}");
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&line).unwrap_or_default()
                );
            }
        }
        InboxCommand::Replay { id, all, state } => {
            let inbox = Inbox::builder_from_arc(store).build()?;
            let changed = if let (Some(id), false) = (id, all) {
                if !inbox.replay(JobId(id)).await? {
                    return Err(CliError::Usage(format!(
                        "row {id} was not replayed: it does not exist or is pending or running"
                    )));
                }
                1
            } else {
                let states = match state {
                    Some(state) => vec![state],
                    None => vec![JobState::Dead, JobState::Quarantined],
                };
                let mut changed = 0;
                for state in states {
                    changed += inbox
                        .replay_matching(JobFilter {
                            state: Some(state),
                            ..JobFilter::default()
                        })
                        .await?;
                }
                changed
            };
            if json_output {
                println!("{}", json!({ "replayed": changed }));
            } else {
                println!("{changed} row(s) pending again");
            }
        }
        InboxCommand::Purge { older_than } => {
            let inbox = Inbox::builder_from_arc(store)
                .retention(older_than)
                .build()?;
            let deleted = inbox.purge().await?;
            if json_output {
                println!("{}", json!({ "purged": deleted }));
            } else {
                println!(
                    "{deleted} handled row(s) older than {} s deleted",
                    older_than.as_secs()
                );
            }
        }
    }
    Ok(())
}

impl InboxArgs {
    /// The store without a URL's password.
    fn store_label(&self) -> String {
        redact_url(&self.store)
    }
}

/// `postgres://user:password@host/db` without the password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn open(spec: &str) -> Result<Arc<dyn InboxStore>, CliError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return open_postgres(spec).await;
    }
    let path = Path::new(spec.strip_prefix("sqlite:").unwrap_or(spec));
    // Opening creates a missing file: an inbox that does not exist yet is a typo here.
    if !path.is_file() {
        return Err(CliError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such inbox file"),
        });
    }
    let store = aisoule_webhooks::inbox::sqlite::SqliteStore::open(path)?;
    Ok(Arc::new(store))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn InboxStore>, CliError> {
    let store = aisoule_webhooks::inbox::postgres::PostgresStore::connect(url)
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "inbox {}: {}",
                redact_url(url),
                crate::error::chain(&e)
            ))
        })?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Arc<dyn InboxStore>, CliError> {
    Err(CliError::Usage(
        "this build has no PostgreSQL support: install with `--features postgres`".to_owned(),
    ))
}

fn rfc3339(at: SystemTime) -> String {
    Timestamp::from_system_time(at).map_or_else(String::new, Timestamp::to_rfc3339)
}

fn row_json(row: &JobRecord, with_body: bool) -> Value {
    let mut value = json!({
        "id": row.id.0,
        "key": row.key,
        "state": row.state.as_str(),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "quarantine_reason": row.quarantine_reason,
        "secret_label": row.secret_label,
        "conversation": row.conversation,
        "received_at": rfc3339(row.received_at),
        "next_run_at": rfc3339(row.next_run_at),
        "finished_at": row.finished_at.map(rfc3339),
    });
    if let Some(account) = &row.account {
        value["account"] = json!(account);
    }
    if let Ok(event) = aisoule_webhooks::Event::parse(&row.body) {
        value["event"] = json!(event.kind().as_str());
        if let Some(id) = event.message_id() {
            value["message_id"] = json!(id);
        }
    }
    if with_body {
        value["headers"] = json!(row.headers);
        value["body"] = serde_json::from_slice::<Value>(&row.body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&row.body)));
    }
    value
}
