//! Scoped admin tokens against the real binary (issue #12 item 5): two tenants, each with a
//! live ffmpeg publisher. A tenant token made by the operator lists only its tenant's
//! streams; another tenant's stream by name is answered exactly as a stream that does not
//! exist (404, same body), and cannot be kicked or ended; it cannot make keys for the other
//! tenant but can for its own; operator-only calls answer 403. The dashboard's page and the
//! JSON it polls show only its streams; `/metrics` read with it has no series labelled with
//! the other tenant (and an anonymous scrape of the protected worker none labelled with any
//! tenant). A revoked, wrong or guessed token is refused with 401 and every refusal is
//! counted. On a two-worker Redis cluster a token made through worker A works on worker B
//! within a second or so, and its revocation reaches B as fast. `tidegate tenant token`
//! drives the same calls.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::*;

const OPERATOR: &str = "scoped-tokens-operator-token";

/// `method url` with `token` (if any) and an optional JSON body: (status, raw body).
fn call_raw(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, String) {
    tidegate_testkit::http::api_raw(token, method, url, body)
}

/// As [`call_raw`], the body read as JSON.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let (status, text) = call_raw(method, url, token, body);
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: {status}, not JSON ({e}): {text}"));
    (status, json)
}

/// Creates tenant `name` with a key for stream `stream`; returns the key.
fn tenant_with_key(base: &str, name: &str, stream: &str) -> String {
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(OPERATOR),
        Some(json!({ "name": name })),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/tenants/{name}/keys"),
        Some(OPERATOR),
        Some(json!({ "stream": stream })),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// A new tenant token for `tenant`, made by the operator: (id, token).
fn new_token(base: &str, tenant: &str) -> (String, String) {
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/tokens"),
        Some(OPERATOR),
        Some(json!({ "scope": "tenant" })),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tgt_"), "{token}");
    assert!(
        token.rsplit('_').next().unwrap().len() * 4 >= 128,
        "at least 128 bits of secret: {token}"
    );
    assert_eq!(body["scope"], "tenant");
    (body["id"].as_str().unwrap().to_owned(), token)
}

/// The `(tenant, stream)` pairs `GET /api/v1/streams` lists with `token`.
fn listed(base: &str, token: &str) -> Vec<(String, String)> {
    let (status, body) = call("GET", &format!("{base}/api/v1/streams"), Some(token), None);
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant"].as_str().unwrap().to_owned(),
                s["stream"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `/metrics` read with `token`: (status, text).
fn scrape(server: &Server, token: Option<&str>) -> (u16, String) {
    let r = try_get_with(&server.url("/metrics"), token).unwrap();
    (r.status, r.text())
}

/// The value of the sample line that starts with `series` (name and labels), 0 if none.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_tenant_token_sees_and_acts_on_its_own_tenant_only() {
    let server = Server::start(&["--admin-token", OPERATOR]);
    let base = server.url("");
    let acme_key = tenant_with_key(&base, "acme", "main");
    let beta_key = tenant_with_key(&base, "beta", "launch");
    let mut acme_pub = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url(&acme_key),
        &Publish::forever(),
    );
    let mut beta_pub = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url(&beta_key),
        &Publish::forever(),
    );
    let (token_id, acme) = new_token(&base, "acme");

    // The operator lists the token by id and creation time, never its secret or hash.
    let (status, tokens) = call(
        "GET",
        &format!("{base}/api/v1/tenants/acme/tokens"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens[0]["id"], token_id.as_str(), "{tokens}");
    assert!(tokens[0]["created_ms"].is_i64(), "{tokens}");
    assert!(!tokens.to_string().contains(&acme[20..]), "{tokens}");
    assert!(tokens[0].get("hash").is_none(), "{tokens}");

    for (tenant, stream) in [("acme", "main"), ("beta", "launch")] {
        wait_playlist(
            &server.url(&format!("/hls/{tenant}/{stream}/index.m3u8")),
            Duration::from_secs(30),
            "a segment of each tenant",
            |pl| !pl.segments.is_empty(),
        );
    }

    // Listing: the operator sees both, acme's token acme's only.
    let all = listed(&base, OPERATOR);
    assert!(all.contains(&("beta".into(), "launch".into())), "{all:?}");
    assert_eq!(listed(&base, &acme), vec![("acme".into(), "main".into())]);

    // Another tenant's stream is answered exactly as a stream that does not exist.
    let stream = |t: &str, s: &str, tail: &str| format!("{base}/api/v1/streams/{t}/{s}{tail}");
    let (status, own) = call("GET", &stream("acme", "main", ""), Some(&acme), None);
    assert_eq!(status, 200, "its own stream: {own}");
    for (method, tail) in [("GET", ""), ("POST", "/kick"), ("POST", "/end")] {
        let other = call_raw(method, &stream("beta", "launch", tail), Some(&acme), None);
        let absent = call_raw(method, &stream("beta", "no-such", tail), Some(&acme), None);
        let own_absent = call_raw(method, &stream("acme", "no-such", tail), Some(&acme), None);
        assert_eq!(
            other, absent,
            "{method} {tail}: another tenant's live stream"
        );
        assert_eq!(
            other, own_absent,
            "{method} {tail}: as a name that does not exist"
        );
        assert!(matches!(other.0, 404 | 409), "{method} {tail}: {other:?}");
        assert!(!other.1.contains("launch"), "{other:?}");
    }
    // beta's stream was neither kicked nor ended.
    thread::sleep(Duration::from_secs(1));
    assert!(beta_pub.is_running(), "beta's publisher kept streaming");
    let (_, beta_stream) = call("GET", &stream("beta", "launch", ""), Some(OPERATOR), None);
    assert_eq!(beta_stream["live_here"], true, "{beta_stream}");

    // Keys: its own, not the other tenant's (answered as a tenant that does not exist).
    let keys = |t: &str| format!("{base}/api/v1/tenants/{t}/keys");
    let body = || Some(json!({ "stream": "backup" }));
    let (status, made) = call("POST", &keys("acme"), Some(&acme), body());
    assert_eq!(status, 201, "its own key: {made}");
    let other = call_raw("POST", &keys("beta"), Some(&acme), body());
    let absent = call_raw("POST", &keys("nobody"), Some(OPERATOR), body());
    assert_eq!(other.0, 404, "{other:?}");
    assert_eq!(other, absent, "as a tenant that does not exist");
    let (_, beta_record) = call(
        "GET",
        &format!("{base}/api/v1/tenants/beta"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(
        beta_record["keys"].as_array().unwrap().len(),
        1,
        "{beta_record}"
    );

    // Its own record only; the operator's calls are refused.
    let (status, tenants) = call("GET", &format!("{base}/api/v1/tenants"), Some(&acme), None);
    assert_eq!(status, 200);
    assert_eq!(tenants.as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(tenants[0]["name"], "acme");
    let (status, _) = call(
        "GET",
        &format!("{base}/api/v1/tenants/beta"),
        Some(&acme),
        None,
    );
    assert_eq!(status, 404);
    for (method, path, body) in [
        ("POST", "/api/v1/tenants", Some(json!({ "name": "mine" }))),
        (
            "PATCH",
            "/api/v1/tenants/acme",
            Some(json!({ "quotas": {} })),
        ),
        ("DELETE", "/api/v1/tenants/beta", None),
        ("GET", "/api/v1/workers", None),
        (
            "POST",
            "/api/v1/tenants/acme/tokens",
            Some(json!({ "scope": "tenant" })),
        ),
        ("GET", "/api/v1/tenants/acme/tokens", None),
    ] {
        let (status, answer) = call(method, &format!("{base}{path}"), Some(&acme), body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }

    // The dashboard: the page names no stream, and the JSON it polls is the scoped list
    // (checked above); its detail view's call is the scoped one-stream call.
    let page = call_raw("GET", &format!("{base}/"), Some(&acme), None);
    assert_eq!(page.0, 200);
    assert!(page.1.contains("/api/v1/streams") && !page.1.contains("launch"));

    // /metrics: with the token, acme's series and none of beta's.
    let (status, mine) = scrape(&server, Some(&acme));
    assert_eq!(status, 200);
    assert!(mine.contains("tenant=\"acme\""), "{mine}");
    assert!(
        !mine.contains("tenant=\"beta\"") && !mine.contains("launch"),
        "{mine}"
    );
    assert!(
        mine.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.contains("tenant=\"acme\"")),
        "only series labelled with its tenant: {mine}"
    );
    let (status, anonymous) = scrape(&server, None);
    assert_eq!(status, 200, "Prometheus without a token still scrapes");
    assert!(
        !anonymous.contains("tenant=") && !anonymous.contains("stream="),
        "{anonymous}"
    );
    assert!(
        anonymous.contains("tidegate_segments_total"),
        "worker-wide series stay"
    );
    let (_, full) = scrape(&server, Some(OPERATOR));
    assert!(full.contains("tenant=\"beta\"") && full.contains("tenant=\"acme\""));
    assert_eq!(scrape(&server, Some("wrong")).0, 401);

    // Its own stream it may kick.
    let (status, kicked) = call("POST", &stream("acme", "main", "/kick"), Some(&acme), None);
    assert_eq!(status, 200, "{kicked}");
    assert!(
        acme_pub.wait_exit(Duration::from_secs(15)).is_some(),
        "kicked"
    );

    // Revoked, wrong and guessed tokens: 401, as a missing one.
    let (status, _) = call(
        "DELETE",
        &format!("{base}/api/v1/tenants/acme/tokens/{token_id}"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(status, 200);
    let guessed = format!("tgt_{token_id}_{}", "0".repeat(48));
    for token in [
        Some(acme.as_str()),
        Some(guessed.as_str()),
        Some("nope"),
        None,
    ] {
        let (status, _) = call("GET", &format!("{base}/api/v1/streams"), token, None);
        assert_eq!(status, 401, "{token:?}");
    }
    assert_eq!(
        scrape(&server, Some(&acme)).0,
        401,
        "a revoked token reads no metrics"
    );

    // Every refusal counted; no secret in the log.
    let counted = server.metrics();
    let failures = |reason: &str| {
        sample(
            &counted,
            &format!("tidegate_admin_auth_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(failures("out_of_scope") >= 13.0, "{counted}");
    assert!(failures("unknown_token") >= 4.0, "{counted}");
    assert!(failures("missing") >= 1.0, "{counted}");
    let log = server.log_text();
    assert!(log.contains("admin credential refused"), "logged");
    assert!(!log.contains(&acme[20..]) && !log.contains(&guessed[20..]));

    // A guesser cannot fill the log: every guess counted, at most 10 lines a second logged.
    let logged = |log: &str| log.matches("admin credential refused").count();
    let lines_before = logged(&server.log_text());
    let before = failures("unknown_token");
    let suppressed = |m: &str| sample(m, "tidegate_log_lines_suppressed_total{area=\"admin\"}");
    let suppressed_before = suppressed(&counted);
    let started = Instant::now();
    const GUESSES: usize = 200;
    for i in 0..GUESSES {
        let guess = format!("tgt_{:016x}_{}", i, "1".repeat(48));
        let (status, _) = call_raw("GET", &format!("{base}/api/v1/streams"), Some(&guess), None);
        assert_eq!(status, 401);
    }
    let seconds = started.elapsed().as_secs() as usize;
    let after = server.metrics();
    let counted_now = sample(
        &after,
        "tidegate_admin_auth_failures_total{reason=\"unknown_token\"}",
    );
    assert_eq!(counted_now - before, GUESSES as f64, "every guess counted");
    let lines = logged(&server.log_text()) - lines_before;
    assert!(
        lines <= 10 * (seconds + 2),
        "{lines} log lines for {GUESSES} guesses in {seconds} s"
    );
    let suppressed_now = suppressed(&after) - suppressed_before;
    assert!(
        suppressed_now >= (GUESSES - 10 * (seconds + 2)) as f64,
        "{suppressed_now} lines suppressed of {GUESSES} in {seconds} s"
    );
    eprintln!(
        "{GUESSES} guesses in {:?}: {lines} log lines, {suppressed_now} suppressed",
        started.elapsed()
    );
    beta_pub.kill();
}

#[test]
fn a_token_made_through_one_worker_works_on_another_at_once() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec!["--admin-token".into(), OPERATOR.into()],
        ..ClusterOpts::default()
    });
    let a = cluster.workers[0].url("");
    let b = cluster.workers[1].url("");
    tenant_with_key(&a, "acme", "main");
    tenant_with_key(&a, "beta", "main");
    let (id, token) = new_token(&a, "acme");
    let made = Instant::now();
    let seen = wait_for(
        "worker B to accept the token made through A",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let (status, body) = call("GET", &format!("{b}/api/v1/tenants"), Some(&token), None);
            (status == 200).then_some(body)
        },
    );
    eprintln!(
        "token accepted by B {:?} after it was made on A",
        made.elapsed()
    );
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["name"], "acme");
    let (status, _) = call(
        "GET",
        &format!("{b}/api/v1/tenants/beta"),
        Some(&token),
        None,
    );
    assert_eq!(status, 404, "scoped on B too");

    let (status, _) = call(
        "DELETE",
        &format!("{a}/api/v1/tenants/acme/tokens/{id}"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(status, 200);
    let revoked = Instant::now();
    wait_for(
        "worker B to refuse the token revoked through A",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let (status, _) = call("GET", &format!("{b}/api/v1/tenants"), Some(&token), None);
            (status == 401).then_some(())
        },
    );
    eprintln!("revocation reached B after {:?}", revoked.elapsed());
}

/// `tidegate ARGS --api URL --token T`: (success, stdout, stderr).
fn cli(server: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    server.cli(Some(token), args)
}

#[test]
fn the_tenant_token_commands_drive_the_same_api() {
    let server = Server::start(&["--admin-token", OPERATOR]);
    let ok = |token: &str, args: &[&str]| -> Value {
        let (success, stdout, stderr) = cli(&server, token, args);
        assert!(success, "tidegate {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    };
    ok(OPERATOR, &["tenant", "create", "acme"]);
    ok(OPERATOR, &["tenant", "create", "beta"]);
    let made = ok(OPERATOR, &["tenant", "token", "create", "acme"]);
    let token = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let listed = ok(OPERATOR, &["tenant", "token", "list", "acme"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(
        !listed.to_string().contains(&token),
        "a list never shows a token"
    );

    // The printed token drives the key commands for its own tenant only.
    let key = ok(&token, &["key", "create", "acme", "main"]);
    assert!(key["key"].as_str().unwrap().starts_with("tgk_"));
    assert_eq!(ok(&token, &["tenant", "list"]).as_array().unwrap().len(), 1);
    let (success, _, stderr) = cli(&server, &token, &["key", "create", "beta", "main"]);
    assert!(!success && stderr.contains("404"), "{stderr}");
    let (success, _, stderr) = cli(&server, &token, &["tenant", "delete", "beta"]);
    assert!(!success && stderr.contains("403"), "{stderr}");

    assert_eq!(
        ok(OPERATOR, &["tenant", "token", "revoke", "acme", &id])["action"],
        "revoked"
    );
    let (success, _, stderr) = cli(&server, &token, &["tenant", "list"]);
    assert!(!success && stderr.contains("401"), "{stderr}");
    assert_eq!(
        ok(OPERATOR, &["tenant", "token", "list", "acme"]),
        json!([])
    );
}
