//! A throwaway PostgreSQL server on a free loopback port, in a temporary directory, killed when
//! dropped or when the test binary exits.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then `initdb` and `postgres` run as
//! `nobody`, in a directory handed to `nobody`.
//!
//! Starting one costs an `initdb` (about a second), so the tests share one server per run of the
//! test binary ([`shared`]) and isolate themselves with a schema each; only the crash tests, which
//! kill their server, start their own.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long `initdb`, a start or a restart (with crash recovery) may take before the harness
/// gives up with a panic instead of hanging the test run.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// What the server logs once it accepts connections, after a start or a crash recovery.
const READY: &str = "database system is ready to accept connections";

/// The binaries a server needs, from one installation.
#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// `initdb` and `postgres` from `PATH`, or else from Debian's `/usr/lib/postgresql/<version>/bin`
/// (the newest version), where `apt-get install postgresql` puts them without touching `PATH`.
/// Without them, the PostgreSQL tests skip with a plain message, except under `CI=true`, where a
/// missing server is a failure.
fn binaries() -> Option<Binaries> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    });
    let debian = || {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                    .then_some((version, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, bin)| bin)
    };
    let found = on_path.or_else(debian).map(|dir| Binaries {
        initdb: dir.join("initdb"),
        postgres: dir.join("postgres"),
    });
    if found.is_none() {
        let message = "initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin: \
                       the PostgreSQL store tests cannot run \
                       (install them with `apt-get install -y postgresql`)";
        crate::support::skip_or_fail(message);
    }
    found
}

/// The user the server runs as: `nobody` when this process is root (PostgreSQL refuses root),
/// else `None`, the current user.
fn unprivileged_user() -> Option<(u32, u32)> {
    // The uid of this process, without `libc` or `unsafe`: the owner of a file it just created.
    let probe = tempfile::tempfile().expect("a temporary file");
    let uid = std::os::unix::fs::MetadataExt::uid(&probe.metadata().expect("its metadata"));
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd is readable");
    let nobody = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == "nobody")
        .expect("running as root, and /etc/passwd has no `nobody` to run PostgreSQL as");
    Some((
        nobody[2].parse().expect("nobody's uid"),
        nobody[3].parse().expect("nobody's gid"),
    ))
}

/// A PostgreSQL server of its own: a data directory, a port and a running `postgres`.
#[derive(Debug)]
pub(crate) struct PostgresServer {
    binaries: Binaries,
    user: Option<(u32, u32)>,
    /// The directory: the data directory `data/`, the socket and the server's log.
    dir: PathBuf,
    /// Deletes `dir` when dropped (after [`Drop`] killed the server); `None` for the shared
    /// server, whose directory the cleaner shell deletes.
    temp: Option<tempfile::TempDir>,
    port: u16,
    /// A shell that runs `postgres` and kills it when its stdin closes: when [`kill`] drops
    /// the pipe, or when this process exits in any way, so that no server outlives the tests.
    running: Option<(Child, ChildStdin)>,
    /// A shell that deletes the directory once this process is gone, for the shared server,
    /// which a `static` never drops.
    _cleaner: Option<(Child, ChildStdin)>,
}

impl PostgresServer {
    /// Creates a cluster and starts it, or `None` (after saying so) when PostgreSQL is not
    /// installed.
    pub(crate) fn start() -> Option<Self> {
        let binaries = binaries()?;
        let started = Instant::now();
        let user = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("aisoule-pg-")
            .tempdir()
            .expect("a temporary directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("the temporary directory can be handed to nobody");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(&binaries.initdb);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        as_user(&mut initdb, user);
        let output = initdb.output().expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            binaries,
            user,
            dir: dir.path().to_path_buf(),
            temp: Some(dir),
            port,
            running: None,
            _cleaner: None,
        };
        server.restart();
        let _ = writeln!(
            std::io::stderr(),
            "postgres_server: initdb and start on port {} took {:?}",
            server.port,
            started.elapsed()
        );
        Some(server)
    }

    /// The one server the tests of this run share, started by the first test that asks; `None`
    /// when PostgreSQL is not installed. It is killed, and its directory deleted, when the test
    /// binary exits.
    pub(crate) fn shared() -> Option<&'static Self> {
        static SHARED: LazyLock<Option<PostgresServer>> = LazyLock::new(|| {
            let mut server = PostgresServer::start()?;
            server.clean_up_at_exit();
            Some(server)
        });
        SHARED.as_ref()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone: the
    /// postmaster, and then its backends, which notice its death on their own a moment later
    /// (until then one of them could still commit a transaction sent to it).
    pub(crate) fn kill(&mut self) {
        if let Some((mut shell, stdin)) = self.running.take() {
            drop(stdin);
            let _ = shell.wait();
            let deadline = Instant::now() + START_DEADLINE;
            while self.cluster_processes() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "the killed server's backends are still running after {START_DEADLINE:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Stops the server cleanly, as an operator's `pg_ctl stop` would (a fast shutdown:
    /// clients are disconnected, and the server writes a shutdown checkpoint), and waits until
    /// every process of it is gone. [`restart`](Self::restart) starts it again.
    pub(crate) fn stop(&mut self) {
        if self.running.is_none() {
            return;
        }
        let pid_file = self.dir().join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
            .expect("a running server has a postmaster.pid");
        // SIGINT is PostgreSQL's fast shutdown. `kill(1)`, since std signals only with SIGKILL
        // and this crate uses no `libc`.
        let status = Command::new("kill")
            .args(["-INT", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT {pid} failed: {status}");
        let deadline = Instant::now() + START_DEADLINE;
        while self.cluster_processes() > 0 {
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {START_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The watchdog shell is left waiting for its stdin: close it.
        self.kill();
    }

    /// How many live processes work in the data directory: every PostgreSQL process changes
    /// into it, and nothing else does. (Zombies have no working directory, so they don't count.)
    fn cluster_processes(&self) -> usize {
        let data = self.dir().join("data");
        let data = std::fs::canonicalize(&data).unwrap_or(data);
        std::fs::read_dir("/proc").map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data)
                })
                .count()
        })
    }

    /// Starts the server (again) on the same port and data directory, and waits until it
    /// accepts connections, crash recovery included.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        let log = self.dir().join("postgres.log");
        loop {
            let started_before = self.log().matches(READY).count();
            let mut shell = Command::new("/bin/sh");
            // `$!` is the postmaster; when stdin closes, `read` returns and it is killed.
            shell
                .arg("-c")
                .arg(r#""$@" & pid=$!; read _ignored; kill -9 $pid 2>/dev/null; wait $pid"#)
                .arg("postgres-watchdog")
                .arg(&self.binaries.postgres)
                .arg("-D")
                .arg(self.dir().join("data"))
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1", "-k"])
                .arg(self.dir())
                // Durability is what the inbox tests are about: keep fsync on.
                .args(["-c", "fsync=on", "-c", "max_connections=300"])
                .current_dir(self.dir())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                );
            as_user(&mut shell, self.user);
            let mut child = shell.spawn().expect("/bin/sh starts postgres");
            let stdin = child.stdin.take().expect("piped stdin");
            loop {
                if self.ready(started_before) {
                    // Else `kill` could not tell when the backends are gone.
                    assert!(
                        self.cluster_processes() > 0,
                        "the running server's processes are not found by their working directory"
                    );
                    self.running = Some((child, stdin));
                    return;
                }
                if child.try_wait().ok().flatten().is_some() {
                    // Exited at once: usually the killed server's backends still hold its
                    // shared memory for a moment. Try again.
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "postgres did not accept connections on port {} within {:?}; its log:\n{}",
                    self.port,
                    START_DEADLINE,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
            drop(stdin);
            assert!(
                Instant::now() < deadline,
                "postgres kept exiting at start on port {}; its log:\n{}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the server has logged since it was created, for a failing test's message.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("postgres.log")).unwrap_or_default()
    }

    /// Whether the server accepts connections: not just TCP, which it accepts from the start,
    /// but past crash recovery, which it logs (in English: `initdb --locale=C`) as one more
    /// [`READY`] line than the `before` it had logged before this start.
    fn ready(&self, before: usize) -> bool {
        self.log().matches(READY).count() > before
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Hands the directory to a shell that deletes it once this process is gone (its stdin
    /// closes), after the server has died.
    fn clean_up_at_exit(&mut self) {
        let dir = match self.temp.take() {
            Some(temp) => temp.keep(),
            None => return,
        };
        let mut cleaner = Command::new("/bin/sh")
            .arg("-c")
            .arg(
                r#"read _ignored; pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null);
                   while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done;
                   rm -rf "$1""#,
            )
            .arg("postgres-cleaner")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/bin/sh starts");
        let stdin = cleaner.stdin.take().expect("piped stdin");
        self._cleaner = Some((cleaner, stdin));
    }
}

/// Runs `command` as `user` (uid, gid) when given.
fn as_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A schema name no other test of this run uses, so that tests can share one server.
pub(crate) fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
