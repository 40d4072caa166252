//! The API against its description, `docs/openapi.yaml`, on a real `tidegate serve` with an
//! admin token and a live ffmpeg stream:
//!
//! 1. without the token every call but `openapi.yaml` answers 401 (kick and end included);
//! 2. real responses of the list, one-stream and workers calls, with the stream live (so the
//!    non-empty shapes: reasons, history, load), validate against the document's schemas
//!    (the `jsonschema` crate, JSON Schema 2020-12 as OpenAPI 3.1 uses it);
//! 3. schemathesis (PyPI, version pinned in `scripts/install-test-tools.sh`) runs every
//!    operation with `--checks all` in deterministic mode with a small example budget: status
//!    codes, content types, headers and bodies must all be the documented ones, invalid input
//!    must be rejected and a missing or wrong token refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::*;

const TOKEN: &str = "openapi-conformance-token";
/// The stream name `docs/openapi.yaml` gives as its example, so schemathesis's examples
/// phase reaches the live stream (and kicks and ends it).
const KEY: &str = "cam";
const WORKER: &str = "openapi-w1";

fn doc_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `method url` with an optional bearer token: (status, `WWW-Authenticate`, body as JSON).
fn call(method: &str, url: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = ureq::request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let www = resp.header("www-authenticate").map(str::to_owned);
    let content_type = resp.header("content-type").unwrap_or("").to_owned();
    let body = resp.into_string().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{method} {url}: {status} with content type {content_type:?}: {body}"
    );
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {url}: {status}, not JSON ({e}): {body}"));
    (status, www, json)
}

/// `method url` with the operator token and a JSON body: (status, `WWW-Authenticate`, body).
fn call_json(method: &str, url: &str, body: Value) -> (u16, Option<String>, Value) {
    let resp = match ureq::request(method, url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let www = resp.header("www-authenticate").map(str::to_owned);
    let text = resp.into_string().unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: {status}, not JSON ({e}): {text}"));
    (status, www, json)
}

/// The schemas of `docs/openapi.yaml`, as JSON Schema 2020-12 validators.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        let doc: Value = serde_saphyr::from_str(&doc_text()).expect("docs/openapi.yaml is YAML");
        assert_eq!(doc["openapi"], "3.1.0");
        Spec { doc }
    }

    /// The JSON schema of `method path`'s `status` answer (following a `$ref` to a shared
    /// response).
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Value {
        let mut resp = &self.doc["paths"][path][method]["responses"][status.to_string()];
        if let Some(r) = resp["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/responses/");
            resp = &self.doc["components"]["responses"][name];
        }
        let schema = &resp["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "docs/openapi.yaml documents no JSON {status} answer for {method} {path}"
        );
        schema.clone()
    }

    /// Asserts that `instance`, the `status` answer of `method path`, matches the document.
    fn check(&self, path: &str, method: &str, status: u16, instance: &Value) {
        let mut schema = self.response_schema(path, method, status);
        let obj = schema.as_object_mut().unwrap();
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        // `#/components/schemas/...` references resolve against this root.
        obj.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("schema of {method} {path} {status}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} answered {status} with a body docs/openapi.yaml does not allow:\n{}\nbody: {instance:#}",
            errors.join("\n")
        );
    }
}

/// The pinned schemathesis `scripts/install-test-tools.sh` puts in its own virtualenv
/// (`$TIDEGATE_API_TOOLS`, by default `~/.cache/tidegate/api-tools`).
fn schemathesis() -> std::path::PathBuf {
    let tools = std::env::var_os("TIDEGATE_API_TOOLS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache"))
                })
                .map(|cache| cache.join("tidegate/api-tools"))
        })
        .expect("neither TIDEGATE_API_TOOLS, XDG_CACHE_HOME nor HOME is set");
    let exe = tools.join("bin/schemathesis");
    assert!(
        exe.is_file(),
        "required test tool `schemathesis` is missing ({} not found); run ./scripts/install-test-tools.sh",
        exe.display()
    );
    exe
}

#[test]
fn the_api_matches_docs_openapi_yaml() {
    let schemathesis = schemathesis();
    let spec = Spec::load();
    let mut server = Server::start(&["--admin-token", TOKEN, "--worker-id", WORKER]);
    let stream_path = "/api/v1/streams/{tenant}/{stream}";
    let one = server.url(&format!("/api/v1/streams/default/{KEY}"));
    let list = server.url("/api/v1/streams");
    let workers = server.url("/api/v1/workers");

    // 1. No token, or a wrong one: 401 with a challenge, before anything else.
    for (method, url, path) in [
        ("GET", list.clone(), "/api/v1/streams"),
        ("GET", one.clone(), stream_path),
        ("GET", workers.clone(), "/api/v1/workers"),
        (
            "POST",
            format!("{one}/kick"),
            "/api/v1/streams/{tenant}/{stream}/kick",
        ),
        (
            "POST",
            format!("{one}/end"),
            "/api/v1/streams/{tenant}/{stream}/end",
        ),
        ("GET", server.url("/api/v1/tenants"), "/api/v1/tenants"),
        ("POST", server.url("/api/v1/tenants"), "/api/v1/tenants"),
        (
            "POST",
            server.url("/api/v1/tenants/acme/keys"),
            "/api/v1/tenants/{tenant}/keys",
        ),
        (
            "POST",
            server.url("/api/v1/tenants/acme/tokens"),
            "/api/v1/tenants/{tenant}/tokens",
        ),
        (
            "GET",
            server.url("/api/v1/tenants/acme/tokens"),
            "/api/v1/tenants/{tenant}/tokens",
        ),
        (
            "POST",
            server.url("/api/v1/tenants/acme/playback-tokens"),
            "/api/v1/tenants/{tenant}/playback-tokens",
        ),
        (
            "POST",
            server.url("/api/v1/tenants/acme/playback-keys"),
            "/api/v1/tenants/{tenant}/playback-keys",
        ),
    ] {
        for token in [None, Some("not-the-token")] {
            let (status, www, body) = call(method, &url, token);
            assert_eq!(status, 401, "{method} {url} with {token:?}: {body}");
            assert!(
                www.is_some_and(|w| w.starts_with("Bearer")),
                "{method} {url}: 401 without WWW-Authenticate: Bearer"
            );
            spec.check(path, &method.to_lowercase(), 401, &body);
        }
    }
    let served = get(&server.url("/api/v1/openapi.yaml"));
    assert_eq!(served.status, 200, "the description needs no token");
    assert_eq!(
        served.text(),
        doc_text(),
        "the served description is docs/openapi.yaml"
    );

    // 2. Real answers with a live stream validate against the schemas.
    let (status, _, body) = call("GET", &one, Some(TOKEN));
    assert_eq!(status, 404, "{body}");
    spec.check(stream_path, "get", 404, &body);
    let (status, _, body) = call("POST", &format!("{one}/kick"), Some(TOKEN));
    assert_eq!(status, 409, "nothing to kick yet: {body}");
    spec.check("/api/v1/streams/{tenant}/{stream}/kick", "post", 409, &body);

    let _publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url(KEY), &Publish::forever());
    wait_playlist(
        &server.playlist_url(KEY),
        Duration::from_secs(25),
        "a segment",
        |pl| !pl.segments.is_empty(),
    );
    let detail = wait_for(
        "the stream healthy with a bitrate and health events",
        Duration::from_secs(25),
        Duration::from_millis(300),
        || {
            let (status, _, v) = call("GET", &one, Some(TOKEN));
            (status == 200
                && v["status"] == "healthy"
                && v["bitrate_bps"].as_u64().unwrap_or(0) > 0
                && !v["history"].as_array().is_none_or(Vec::is_empty))
            .then_some(v)
        },
    );
    spec.check(stream_path, "get", 200, &detail);
    assert_eq!(detail["worker"], WORKER, "{detail}");
    assert_eq!(detail["live_here"], true, "{detail}");
    assert_eq!(detail["protocol"], "rtmp", "{detail}");
    assert!(detail["uptime_s"].is_u64(), "{detail}");

    let (status, _, streams) = call("GET", &list, Some(TOKEN));
    assert_eq!(status, 200);
    spec.check("/api/v1/streams", "get", 200, &streams);
    let listed = streams.as_array().unwrap();
    assert!(listed.iter().any(|s| s["stream"] == KEY), "{streams:#}");
    assert!(
        listed.iter().all(|s| s.get("history").is_none()),
        "the list carries no history"
    );

    let members = wait_for(
        "this worker's heartbeat to report the live publisher",
        Duration::from_secs(15),
        Duration::from_millis(300),
        || {
            let (status, _, v) = call("GET", &workers, Some(TOKEN));
            let me = v.as_array()?.first()?.clone();
            (status == 200
                && me["load"]["live_publishers"] == 1
                && me["load"]["ingest_bitrate_bps"].as_u64().unwrap_or(0) > 0)
                .then_some(v)
        },
    );
    spec.check("/api/v1/workers", "get", 200, &members);
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 1, "{members:#?}");
    let me = &members[0];
    assert_eq!(me["id"], WORKER);
    assert_eq!(me["self"], true);
    assert_eq!(me["incarnations"], 1);
    assert_eq!(me["state"], "ready");
    assert_eq!(me["addresses"]["http"], server.http.to_string());
    assert!(me["load"]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{me}");

    // Tenant admin tokens: the answers that carry and list one, and a tenant token's 403
    // on an operator-only call, validate too (the tenant is deleted again before the run).
    let tokens_path = "/api/v1/tenants/{tenant}/tokens";
    let (status, _, _) = call_json(
        "POST",
        &server.url("/api/v1/tenants"),
        json!({"name": "scoped"}),
    );
    assert_eq!(status, 201);
    let (status, _, issued) = call_json(
        "POST",
        &server.url("/api/v1/tenants/scoped/tokens"),
        json!({"scope": "tenant"}),
    );
    assert_eq!(status, 201, "{issued}");
    spec.check(tokens_path, "post", 201, &issued);
    let (status, _, listed) = call(
        "GET",
        &server.url("/api/v1/tenants/scoped/tokens"),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{listed}");
    spec.check(tokens_path, "get", 200, &listed);
    let tenant_token = issued["token"].as_str().unwrap();
    let (status, _, refused) = call("GET", &workers, Some(tenant_token));
    assert_eq!(status, 403, "{refused}");
    spec.check("/api/v1/workers", "get", 403, &refused);
    let (status, _, revoked) = call(
        "DELETE",
        &server.url(&format!(
            "/api/v1/tenants/scoped/tokens/{}",
            issued["id"].as_str().unwrap()
        )),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{revoked}");
    spec.check(
        "/api/v1/tenants/{tenant}/tokens/{id}",
        "delete",
        200,
        &revoked,
    );
    let (status, _, _) = call("DELETE", &server.url("/api/v1/tenants/scoped"), Some(TOKEN));
    assert_eq!(status, 200);

    // 3. schemathesis, every operation, every check.
    let report = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(&schemathesis)
        .current_dir(report.path())
        // The file, which the server serves unchanged (checked above): given the URL,
        // schemathesis would leave out the operation that serves the description itself.
        .args([
            "run",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml"),
        ])
        .args(["--url", &server.url("")])
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "12"])
        .arg("--generation-deterministic")
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis ran {:.1} s:\n{text}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis found the server and docs/openapi.yaml disagree (exit {}); see above",
        out.status
    );
    let operations: usize = spec.doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            ["get", "put", "post", "delete", "patch", "head", "options"]
                .iter()
                .filter(|m| item.get(**m).is_some())
                .count()
        })
        .sum();
    assert!(
        text.contains(&format!("{operations} selected / {operations} total")),
        "schemathesis did not test all {operations} operations"
    );
    server.assert_alive();

    // What the run left (kicked, ended) still matches.
    let (status, _, streams) = call("GET", &list, Some(TOKEN));
    assert_eq!(status, 200);
    spec.check("/api/v1/streams", "get", 200, &streams);
}
