//! The `inbox` commands on a SQLite inbox filled through the library.

use std::time::{Duration, SystemTime};

use aisoule_webhooks::inbox::sqlite::SqliteStore;
use aisoule_webhooks::inbox::{InboxStore, Inserted, JobId, NewDelivery};

use crate::{json_line, run, stderr, stdout, tool};

fn delivery(key: &str, quarantine: Option<&str>) -> NewDelivery {
    NewDelivery {
        key: key.to_owned(),
        body: format!(
            r#"{{"event":"message.read","timestamp":1780369298,"data":{{"message_id":"{key}"}}}}"#
        )
        .into(),
        headers: vec![("x-aisoule-signature".to_owned(), "sha256=…".to_owned())],
        secret_label: "current".to_owned(),
        received_at: SystemTime::now(),
        conversation: None,
        quarantine: quarantine.map(str::to_owned),
        account: None,
    }
}

/// One row in each of dead, quarantined, done (finished 10 days ago) and pending.
async fn fill(store: &SqliteStore) -> [JobId; 4] {
    let now = SystemTime::now();
    let lease = Duration::from_secs(30);
    let id = |inserted| match inserted {
        Inserted::New(id) => id,
        Inserted::Duplicate => panic!("a fresh key"),
    };
    let dead = id(store.insert(delivery("dead-1", None)).await.unwrap());
    let claimed = store
        .claim(SystemTime::now() + lease, lease, 1, false)
        .await
        .unwrap();
    store
        .fail(
            dead,
            claimed[0].fence,
            "handler: the CRM answered 500",
            None,
            now,
        )
        .await
        .unwrap();
    let quarantined = id(store
        .insert(delivery("stale-1", Some("stale: 7200 s old")))
        .await
        .unwrap());
    let done = id(store.insert(delivery("done-1", None)).await.unwrap());
    let claimed = store
        .claim(SystemTime::now() + lease, lease, 1, false)
        .await
        .unwrap();
    store
        .complete(
            done,
            claimed[0].fence,
            now - Duration::from_secs(10 * 86_400),
        )
        .await
        .unwrap();
    let pending = id(store.insert(delivery("pending-1", None)).await.unwrap());
    [dead, quarantined, done, pending]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_commands_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let store = SqliteStore::open(&path).unwrap();
    let [dead, quarantined, _done, _pending] = fill(&store).await;
    store.close();
    drop(store);
    let db = path.to_str().unwrap().to_owned();
    let inbox = |args: &[&str]| {
        let mut command = tool(dir.path());
        command.args(["--json", "inbox", "--store", &db]).args(args);
        run(&mut command)
    };

    let stats = json_line(&inbox(&["stats"]));
    assert_eq!(
        (
            stats["pending"].as_u64(),
            stats["done"].as_u64(),
            stats["dead"].as_u64(),
            stats["quarantined"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{stats}"
    );

    let listed = stdout(&inbox(&["list"]));
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["dead", "quarantined"]);
    assert_eq!(rows[0]["last_error"], "handler: the CRM answered 500");
    assert_eq!(rows[1]["quarantine_reason"], "stale: 7200 s old");

    let shown = json_line(&inbox(&["show", &dead.0.to_string()]));
    assert_eq!(shown["body"]["data"]["message_id"], "dead-1");
    assert_eq!(shown["event"], "message.read");

    assert_eq!(
        json_line(&inbox(&["replay", &dead.0.to_string()]))["replayed"],
        1
    );
    assert_eq!(
        json_line(&inbox(&["replay", "--all", "--state", "quarantined"]))["replayed"],
        1
    );
    let stats = json_line(&inbox(&["stats"]));
    assert_eq!(
        (
            stats["pending"].as_u64(),
            stats["dead"].as_u64(),
            stats["quarantined"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );
    let shown = json_line(&inbox(&["show", &quarantined.0.to_string()]));
    assert_eq!(shown["state"], "pending");

    assert_eq!(
        json_line(&inbox(&["purge", "--older-than", "30d"]))["purged"],
        0
    );
    assert_eq!(
        json_line(&inbox(&["purge", "--older-than", "7d"]))["purged"],
        1
    );

    // Human output, and one-line errors.
    let text = stdout(&run(tool(dir.path()).args([
        "inbox",
        "--store",
        &format!("sqlite:{db}"),
        "stats",
    ])));
    assert!(text.contains("pending      3"), "{text}");
    for (args, expected) in [
        (
            vec!["inbox", "--store", "/nonexistent/inbox.db", "stats"],
            "cannot read /nonexistent/inbox.db",
        ),
        (vec!["inbox", "--store", &db, "show", "999"], "no row 999"),
        (
            vec!["inbox", "--store", &db, "list", "--state", "lost"],
            "not a state",
        ),
    ] {
        let output = run(tool(dir.path()).args(&args));
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
