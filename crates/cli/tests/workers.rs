//! Cluster members in the embedded state store: a worker registers at start under a stable
//! id, so its restarts are counted (`tidegate_worker_restarts`, `incarnations` in
//! `/api/v1/workers`); two workers sharing one data directory (a shared volume) list each
//! other, each flagging itself; one that stops cleanly leaves the list at once.

use std::time::Duration;

use serde_json::Value;
use tidegate_testkit::*;

fn workers(server: &Server) -> Vec<Value> {
    let r = get(&server.url("/api/v1/workers"));
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice::<Value>(&r.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

fn restarts_metric(server: &Server) -> u64 {
    let text = server.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix("tidegate_worker_restarts "))
        .unwrap_or_else(|| panic!("no tidegate_worker_restarts in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `server` lists exactly `want` (sorted ids) and returns the list.
fn wait_members(server: &Server, want: &[&str]) -> Vec<Value> {
    wait_for(
        &format!("the members {want:?}"),
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let list = workers(server);
            (ids(&list) == want).then_some(list)
        },
    )
}

#[test]
fn restarts_are_counted_and_members_listed() {
    let data = tempfile::Builder::new()
        .prefix("tidegate-workers-")
        .tempdir()
        .unwrap();
    let mut a = Server::start_in(data.path(), &["--worker-id", "worker-a"]);
    assert_eq!(restarts_metric(&a), 0);
    let list = wait_members(&a, &["worker-a"]);
    assert_eq!(list[0]["incarnations"], 1);
    assert_eq!(list[0]["self"], true);
    assert_eq!(list[0]["state"], "ready");

    // Killed without a word, started again under the same id: one restart.
    a.kill9();
    let mut a = Server::start_in(data.path(), &["--worker-id", "worker-a"]);
    assert_eq!(restarts_metric(&a), 1, "the second start of worker-a");
    let list = wait_members(&a, &["worker-a"]);
    assert_eq!(list[0]["incarnations"], 2);
    assert_eq!(list[0]["addresses"]["http"], a.http.to_string());

    // A second worker on the same data directory: both list both.
    let mut b = Server::start_in(data.path(), &["--worker-id", "worker-b"]);
    assert_eq!(restarts_metric(&b), 0);
    for (server, me) in [(&a, "worker-a"), (&b, "worker-b")] {
        let list = wait_members(server, &["worker-a", "worker-b"]);
        for w in &list {
            assert_eq!(w["self"], w["id"] == me, "{me} lists {w}");
        }
    }

    // A clean stop removes the record at once (a killed worker's expires on its own).
    b.proc.signal(15);
    assert!(
        b.proc.wait_exit(Duration::from_secs(20)).is_some(),
        "worker-b did not stop on SIGTERM"
    );
    wait_members(&a, &["worker-a"]);
    a.assert_alive();
}

/// The same through Redis (`--state redis://`): each worker lists the other with its load,
/// restarts are counted in Redis, and a worker killed without a word drops out of the list
/// once its record's TTL (10 s) runs out.
#[test]
fn redis_members_restart_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let state = redis.url();
    let start = |id: &str| {
        let data = tempfile::tempdir().unwrap();
        let s = Server::start_in(data.path(), &["--state", &state, "--worker-id", id]);
        (s, data)
    };
    let (mut a, _da) = start("redis-a");
    let (b, _db) = start("redis-b");
    for (server, me) in [(&a, "redis-a"), (&b, "redis-b")] {
        let list = wait_members(server, &["redis-a", "redis-b"]);
        for w in &list {
            assert_eq!(w["self"], w["id"] == me, "{me} lists {w}");
            assert_eq!(w["incarnations"], 1, "{w}");
        }
    }

    a.kill9();
    let (a2, _da2) = start("redis-a");
    assert_eq!(
        restarts_metric(&a2),
        1,
        "Redis counted the second start of redis-a"
    );
    let list = wait_members(&b, &["redis-a", "redis-b"]);
    assert_eq!(list[0]["incarnations"], 2, "{}", list[0]);
    assert_eq!(list[0]["addresses"]["http"], a2.http.to_string());

    // Killed: gone once the TTL runs out (10 s), no clean-up needed.
    let mut b = b;
    b.kill9();
    wait_for(
        "the killed redis-b to expire from the member list",
        Duration::from_secs(25),
        Duration::from_millis(500),
        || (ids(&workers(&a2)) == ["redis-a"]).then_some(()),
    );
}
