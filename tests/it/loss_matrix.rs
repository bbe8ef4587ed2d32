//! The loss matrix: every scenario of the platform's delivery rules against every receiving
//! mode, counting what was lost, what was handled twice and what the platform gave up on.
//!
//! Every cell runs in process on tokio's paused clock: the simulator, the receiver's replay
//! window ([`TokioClock`]), leases, renewal, the inbox's backoff, and the scripted handler
//! all read it, and the stores that do real I/O hold it still while they work, so two hours of
//! outage run in moments. The table is printed; run it with
//! `cargo test --all-features --test it loss_matrix -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::clock::TokioClock;
use aisoule_webhooks::dedup::{Deduplicator, IdempotencyStore, MemoryStore};
use aisoule_webhooks::event::EventKind;
use aisoule_webhooks::inbox::{Inbox, InboxStore, Job, JobFilter, JobState};
use aisoule_webhooks::test_util::simulator::{
    ClockSkew, Losses, ScriptedHandler, ServiceTarget, Simulator,
};
use aisoule_webhooks::test_util::test_verifier;
use aisoule_webhooks::{Receiver, VerifiedEvent};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

use crate::support::{paused_clock, two_workers, within_real_time};

/// The real-time bound on each test here (the matrix takes about 30 s on 2 busy cores): a
/// cell whose receiver or store hangs fails the test instead of holding the run.
const TEST_BOUND: Duration = Duration::from_secs(100);

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    InlineMemory,
    InlineRedis,
    InboxSqlite,
    InboxPostgres,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::InlineMemory => "inline, memory",
            Self::InlineRedis => "inline, Redis",
            Self::InboxSqlite => "inbox, SQLite",
            Self::InboxPostgres => "inbox, PostgreSQL",
        }
    }

    fn is_inbox(self) -> bool {
        matches!(self, Self::InboxSqlite | Self::InboxPostgres)
    }
}

struct Scenario {
    name: &'static str,
    handler: fn() -> ScriptedHandler,
    plan: fn(&mut Simulator),
    /// Redis is down for this long from the start.
    redis_outage: Option<Duration>,
    /// Whether inline mode promises here that nothing is lost or handled twice: the handler
    /// recovers within the platform's retry horizon, and nothing arrives stale.
    inline_keeps_everything: bool,
}

/// Twenty messages, one every 3 s.
fn twenty_messages(simulator: &mut Simulator) {
    for i in 0..20 {
        simulator.message(SECOND * 3 * i, &format!("m{i}"));
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "a normal day",
            handler: ScriptedHandler::new,
            plan: |sim| {
                sim.burst(Duration::ZERO, 10, "burst");
                for i in 0..30 {
                    let id = format!("m{i}");
                    sim.message(MINUTE * 2 * i, &id);
                    sim.status(MINUTE * 2 * i + SECOND * 5, EventKind::MessageSent, &id);
                    sim.status(
                        MINUTE * 2 * i + SECOND * 9,
                        EventKind::MessageDelivered,
                        &id,
                    );
                }
            },
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "a 3 s handler",
            handler: || ScriptedHandler::new().slow(SECOND * 3),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "an 8 s handler",
            handler: || ScriptedHandler::new().slow(SECOND * 8),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "handler failing for 30 s",
            handler: || ScriptedHandler::new().failing_for(SECOND * 30),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "handler failing for 10 min",
            handler: || ScriptedHandler::new().failing_for(MINUTE * 10),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: false,
        },
        Scenario {
            name: "handler failing for 2 h",
            handler: || ScriptedHandler::new().failing_for(HOUR * 2),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: false,
        },
        Scenario {
            name: "a panicking handler",
            handler: || ScriptedHandler::new().panicking_first(5),
            plan: twenty_messages,
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "a 2 h platform backlog",
            handler: ScriptedHandler::new,
            plan: |sim| {
                twenty_messages(sim);
                for i in 0..20 {
                    sim.backlog(&format!("m{i}"), HOUR * 2);
                }
            },
            redis_outage: None,
            inline_keeps_everything: false,
        },
        Scenario {
            name: "duplicates and reordering",
            handler: ScriptedHandler::new,
            plan: |sim| {
                twenty_messages(sim);
                for i in 0..20 {
                    let id = format!("m{i}");
                    sim.duplicate(&id, SECOND * 2);
                    sim.duplicate(&id, MINUTE * 10);
                    // The read receipt before the delivery receipt.
                    sim.status(SECOND * 3 * i + SECOND, EventKind::MessageRead, &id);
                    sim.status(
                        SECOND * 3 * i + SECOND * 2,
                        EventKind::MessageDelivered,
                        &id,
                    );
                }
                sim.drop_connection("m0", 1);
                sim.drop_connection("m1", 1);
            },
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "the platform's clock 30 min ahead",
            handler: ScriptedHandler::new,
            plan: |sim| {
                sim.clock_skew(ClockSkew::Ahead(MINUTE * 30));
                twenty_messages(sim);
            },
            redis_outage: None,
            inline_keeps_everything: true,
        },
        Scenario {
            name: "the platform's clock 2 h behind",
            handler: ScriptedHandler::new,
            plan: |sim| {
                sim.clock_skew(ClockSkew::Behind(HOUR * 2));
                twenty_messages(sim);
            },
            redis_outage: None,
            inline_keeps_everything: false,
        },
        Scenario {
            name: "Redis down for 2 min",
            handler: ScriptedHandler::new,
            // Few: each request Redis refuses costs real time in its client's reconnection.
            plan: |sim| {
                for i in 0..6 {
                    sim.message(SECOND * 30 * i, &format!("m{i}"));
                }
            },
            redis_outage: Some(MINUTE * 2),
            inline_keeps_everything: true,
        },
    ]
}

/// The servers the columns need, started once for the whole matrix.
struct Servers {
    #[cfg(feature = "redis")]
    redis: Option<Arc<Mutex<crate::redis_server::RedisServer>>>,
    #[cfg(feature = "postgres")]
    postgres: Option<&'static crate::postgres_server::PostgresServer>,
    dir: tempfile::TempDir,
}

impl Servers {
    fn start() -> Self {
        Self {
            #[cfg(feature = "redis")]
            redis: crate::redis_server::RedisServer::start().map(|s| Arc::new(Mutex::new(s))),
            #[cfg(feature = "postgres")]
            postgres: crate::postgres_server::PostgresServer::shared(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn modes(&self) -> Vec<Mode> {
        let mut modes = vec![Mode::InlineMemory];
        #[cfg(feature = "redis")]
        if self.redis.is_some() {
            modes.push(Mode::InlineRedis);
        }
        modes.push(Mode::InboxSqlite);
        #[cfg(feature = "postgres")]
        if self.postgres.is_some() {
            modes.push(Mode::InboxPostgres);
        }
        modes
    }
}

/// Runs `future` on the blocking pool, holding the paused clock still while it does real I/O.
async fn holding_clock<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(future))
        .await
        .unwrap()
}

async fn inbox_store(mode: Mode, servers: &Servers, cell: usize) -> Arc<dyn InboxStore> {
    match mode {
        Mode::InboxSqlite => {
            let path = servers.dir.path().join(format!("cell-{cell}.db"));
            Arc::new(aisoule_webhooks::inbox::sqlite::SqliteStore::open(path).unwrap())
        }
        #[cfg(feature = "postgres")]
        Mode::InboxPostgres => {
            let url = servers.postgres.expect("a server").url();
            let schema = crate::postgres_server::unique_schema("matrix");
            let store = holding_clock(async move {
                aisoule_webhooks::inbox::postgres::PostgresStore::builder(url)
                    .schema(schema)
                    .connect()
                    .await
                    .unwrap()
            })
            .await;
            Arc::new(store)
        }
        _ => unreachable!("not an inbox mode"),
    }
}

async fn dedup_store(
    mode: Mode,
    _servers: &Servers,
    clock: Arc<TokioClock>,
    _cell: usize,
) -> Deduplicator {
    match mode {
        Mode::InlineMemory => Deduplicator::new(MemoryStore::new().with_clock(clock)),
        #[cfg(feature = "redis")]
        Mode::InlineRedis => {
            let url = _servers.redis.as_ref().unwrap().lock().unwrap().url();
            let store: Arc<dyn IdempotencyStore> = Arc::new(
                aisoule_webhooks::test_util::PausedClockStore::build(|| async move {
                    aisoule_webhooks::dedup::redis::RedisStore::connect(&url)
                        .await
                        .unwrap()
                }),
            );
            Deduplicator::from_arc(store)
                .with_namespace(format!("matrix-{}-{_cell}", std::process::id()))
                .unwrap()
        }
        _ => unreachable!("not an inline mode"),
    }
}

/// One cell: the scenario's history against the mode, on paused time.
async fn run_cell(mode: Mode, scenario: &Scenario, servers: &Servers, cell: usize) -> Losses {
    let clock = Arc::new(TokioClock::new());
    let handler = (scenario.handler)();
    let mut builder = Receiver::builder(test_verifier()).clock(clock.clone());
    let mut inbox = None;
    if mode.is_inbox() {
        let built = Inbox::builder_from_arc(inbox_store(mode, servers, cell).await)
            .clock(clock.clone())
            .hold_paused_clock()
            // Hours of simulated time: a slower poll only delays a job's start, and keeps the
            // number of simulated polls (each a real store operation) down.
            .poll_interval(SECOND * 5)
            .build()
            .unwrap();
        builder = builder.inbox(built.clone());
        inbox = Some(built);
    } else {
        let dedup = dedup_store(mode, servers, clock.clone(), cell).await;
        builder = builder.deduplicator(dedup);
    }
    let receiver = builder.build().unwrap();
    let app = Router::new().route(
        "/webhook",
        post({
            let handler = handler.clone();
            move |event: VerifiedEvent| async move {
                match handler.handle(&event).await {
                    Ok(()) => StatusCode::OK,
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        })
        .layer(WebhookLayer::new(receiver)),
    );
    let workers = inbox.as_ref().map(|inbox| {
        let handler = handler.clone();
        inbox.start(move |job: Job| {
            let handler = handler.clone();
            async move { handler.handle(job.event()).await }
        })
    });
    let mut simulator = Simulator::new(ServiceTarget::new(app, "/webhook")).clock(clock);
    (scenario.plan)(&mut simulator);
    let outage = redis_outage(mode, scenario, servers);
    let report = simulator.run().await;
    if let Some(outage) = outage {
        outage.await.unwrap();
    }
    match (&inbox, workers) {
        (Some(inbox), Some(workers)) => {
            drain(inbox).await;
            // The operator releases what was quarantined, as the README says.
            let released = inbox
                .replay_matching(JobFilter {
                    state: Some(JobState::Quarantined),
                    ..JobFilter::default()
                })
                .await
                .unwrap();
            if released > 0 {
                drain(inbox).await;
            }
            workers.shutdown(MINUTE).await;
        }
        // Handlers the platform hung up on still finish in their own tasks.
        _ => tokio::time::sleep(MINUTE).await,
    }
    Losses::of(&report, &handler.all_completions())
}

/// Kills Redis at the start of the run and restarts it after the scenario's outage.
fn redis_outage(
    mode: Mode,
    scenario: &Scenario,
    servers: &Servers,
) -> Option<tokio::task::JoinHandle<()>> {
    let outage = scenario
        .redis_outage
        .filter(|_| mode == Mode::InlineRedis)?;
    #[cfg(feature = "redis")]
    {
        let redis = servers.redis.clone()?;
        redis.lock().unwrap().kill();
        Some(tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            tokio::task::spawn_blocking(move || redis.lock().unwrap().restart())
                .await
                .unwrap();
        }))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (outage, servers);
        None
    }
}

/// Waits (in paused time) until no job is pending or running.
async fn drain(inbox: &Inbox) {
    let deadline = tokio::time::Instant::now() + HOUR * 12;
    loop {
        let stats = inbox.stats().await.unwrap();
        if stats.pending == 0 && stats.running == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox did not drain: {stats:?}"
        );
        tokio::time::sleep(MINUTE).await;
    }
}

#[test]
fn the_loss_matrix() {
    within_real_time(paused_clock(), TEST_BOUND, || async {
        let servers = Servers::start();
        let modes = servers.modes();
        let scenarios = scenarios();
        let mut table: BTreeMap<(usize, Mode), Losses> = BTreeMap::new();
        let mut cell = 0;
        for (row, scenario) in scenarios.iter().enumerate() {
            for &mode in &modes {
                cell += 1;
                let started = std::time::Instant::now();
                let losses = run_cell(mode, scenario, &servers, cell).await;
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "loss matrix: {} × {}: {losses} ({:.1} s)",
                    scenario.name,
                    mode.name(),
                    started.elapsed().as_secs_f64()
                );
                table.insert((row, mode), losses);
            }
        }
        print_table(&scenarios, &modes, &table);

        for ((row, mode), losses) in &table {
            let scenario = &scenarios[*row];
            let cell = format!("{} × {}: {losses}", scenario.name, mode.name());
            if mode.is_inbox() {
                assert!(losses.lost.is_empty(), "{cell}: {:?}", losses.lost);
                assert!(losses.twice.is_empty(), "{cell}: {:?}", losses.twice);
                assert!(
                    losses.dropped_by_platform.is_empty(),
                    "{cell}: the inbox answers 200 to every verified delivery"
                );
            } else if scenario.inline_keeps_everything {
                assert!(losses.lost.is_empty(), "{cell}: {:?}", losses.lost);
                assert!(losses.twice.is_empty(), "{cell}: {:?}", losses.twice);
                assert!(losses.dropped_by_platform.is_empty(), "{cell}");
            } else {
                // Inline mode loses these by design: the platform gives up, and says so.
                assert!(losses.lost.is_empty(), "{cell}: {:?}", losses.lost);
                assert!(!losses.dropped_by_platform.is_empty(), "{cell}");
            }
        }
    });
}

fn print_table(scenarios: &[Scenario], modes: &[Mode], table: &BTreeMap<(usize, Mode), Losses>) {
    let mut out = String::from("\nlost / twice / dropped by the platform\n\n| scenario |");
    for mode in modes {
        out += &format!(" {} |", mode.name());
    }
    out += "\n|---|";
    for _ in modes {
        out += "---|";
    }
    for (row, scenario) in scenarios.iter().enumerate() {
        out += &format!("\n| {} |", scenario.name);
        for mode in modes {
            let losses = &table[&(row, *mode)];
            out += &format!(
                " {} / {} / {} |",
                losses.lost.len(),
                losses.twice.len(),
                losses.dropped_by_platform.len()
            );
        }
    }
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{out}\n");
}

/// The crash row: a receiver process killed with SIGKILL mid-handler and restarted at once, on
/// real time with the platform's rules scaled down 100 times (a 50 ms timeout, retries after
/// 100 ms, 600 ms and 3 s), so it runs over real HTTP against child processes.
#[test]
fn the_loss_matrix_crash_row() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        use crate::inbox_crash::{free_port, handled, start_child_with};
        use aisoule_webhooks::test_util::simulator::{PlatformRules, UrlTarget};

        let dir = tempfile::tempdir().unwrap();
        let mut specs = vec![(Mode::InlineMemory, "memory".to_owned())];
        #[cfg(feature = "redis")]
        let redis = crate::redis_server::RedisServer::start();
        #[cfg(feature = "redis")]
        if let Some(redis) = &redis {
            specs.push((Mode::InlineRedis, format!("{}#crash-row", redis.url())));
        }
        specs.push((
            Mode::InboxSqlite,
            format!("sqlite:{}", dir.path().join("crash-row.db").display()),
        ));
        #[cfg(feature = "postgres")]
        if let Some(server) = crate::postgres_server::PostgresServer::shared() {
            let schema = crate::postgres_server::unique_schema("crash_row");
            specs.push((Mode::InboxPostgres, format!("{}#{schema}", server.url())));
        }
        let handler_time = Duration::from_millis(30);
        let mut row = Vec::new();
        for (mode, spec) in specs {
            let log = dir.path().join(format!("{mode:?}.log"));
            let port = free_port();
            let mut child = start_child_with(&spec, &log, port, handler_time).await;
            let target = UrlTarget::new(&format!("http://127.0.0.1:{port}/webhook")).unwrap();
            let mut simulator =
                Simulator::new(target).rules(PlatformRules::documented().scaled_down(100));
            for i in 0..10 {
                simulator.message(Duration::from_millis(5 * i), &format!("crash-{i}"));
            }
            let platform = tokio::spawn(simulator.run());
            // Mid-handler: the first messages' 30 ms handlers are running.
            tokio::time::sleep(Duration::from_millis(40)).await;
            child.kill().await.unwrap();
            let mut child = start_child_with(&spec, &log, port, handler_time).await;
            let report = platform.await.unwrap();
            // The inbox's workers finish after the platform's last answer.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while mode.is_inbox()
                && report
                    .delivered_events()
                    .iter()
                    .any(|label| !handled(&log).contains_key(label))
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            child.kill().await.unwrap();
            let completions = handled(&log)
                .into_iter()
                .map(|(label, runs)| (label, runs.len() as u32))
                .collect();
            let losses = Losses::of(&report, &completions);
            assert!(losses.lost.is_empty(), "crash × {}: {losses}", mode.name());
            if mode.is_inbox() {
                assert!(
                    losses.dropped_by_platform.is_empty(),
                    "crash × {}",
                    mode.name()
                );
            }
            row.push((mode, losses));
        }
        let mut line = String::from("| a crash mid-handler |");
        for (mode, losses) in &row {
            line += &format!(
                " {} / {} / {} ({}) |",
                losses.lost.len(),
                losses.twice.len(),
                losses.dropped_by_platform.len(),
                mode.name()
            );
        }
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "\n{line}\n");
    });
}
