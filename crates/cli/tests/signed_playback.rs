//! Signed playback against the real binary, with a real ffmpeg publisher. A tenant with
//! `playback = "signed"`: its playlists and segments answer 403 without `?token=` (with the
//! CORS headers a browser player needs to see the 403), 200 with a token minted by
//! `POST /api/v1/tenants/NAME/playback-tokens`, whose playlists list every URI with the
//! token carried on; a token for another stream, a tampered one and an expired one are
//! refused and counted by reason. A public tenant needs no token (one given is ignored).
//! ffprobe plays the signed URL end to end. Rotating the signing key keeps the previous
//! key's tokens working until the next rotation (or drops them at once when asked), and
//! `tidegate tenant playback-token` mints through the same API. On a two-worker Redis
//! cluster a token minted through worker A plays through worker B at once, and a rotation on
//! A is honoured by B. hls.js in Debian's headless chromium (tests/browser/signed_playback.mjs)
//! plays the signed URL from another origin, fails with a 403 without a token, and is refused
//! once its token expires; the dashboard's preview of the signed stream mints a token and
//! plays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::hostile::metric_sum;
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";
/// A browser page's origin (the player is served from elsewhere than the origin server).
const PLAYER_ORIGIN: &str = "http://player.example";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// A GET as a browser on [`PLAYER_ORIGIN`] makes it: status, lower-case headers, body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn fetch(url: &str) -> Answer {
    let resp = match ureq::get(url).set("Origin", PLAYER_ORIGIN).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| Some((n.to_ascii_lowercase(), resp.header(&n)?.to_owned())))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// A refusal as a browser player must see it: 403, readable cross-origin, never cached.
fn assert_refused(url: &str, why: &str) -> Answer {
    let a = fetch(url);
    assert_eq!(a.status, 403, "{why}: GET {url}: {}", a.text());
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("*"),
        "{why}: the 403 carries CORS headers, or a browser player sees no status: {:?}",
        a.headers
    );
    assert_eq!(a.header("cache-control"), Some("no-store"), "{why}");
    a
}

/// Creates tenant `name` (`playback`) with a stream key for `stream`; returns the key.
fn tenant_with_key(base: &str, name: &str, playback: &str, stream: &str) -> String {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": name, "playback": playback})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["playback"], playback);
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{name}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// Mints a token for `stream` of `tenant`: the answer's JSON.
fn mint(base: &str, tenant: &str, stream: &str, ttl_s: u64) -> Value {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/playback-tokens"),
        Some(json!({"stream": stream, "ttl_s": ttl_s})),
    );
    assert_eq!(status, 201, "{body}");
    body
}

fn token_of(minted: &Value) -> String {
    minted["token"].as_str().unwrap().to_owned()
}

/// `tidegate_playback_denied_total{tenant,reason}` in `metrics`.
fn denied(metrics: &str, tenant: &str, reason: &str) -> f64 {
    let labels = [("tenant", tenant), ("reason", reason)];
    metric_sum(metrics, "tidegate_playback_denied_total", &labels)
}

/// Every URI a playlist lists: URI lines and `URI="..."` attributes.
fn uris_of(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_owned());
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("URI=\"") {
            let value = &rest[at + 5..];
            let end = value.find('"').expect("closed quote");
            out.push(value[..end].to_owned());
            rest = &value[end..];
        }
    }
    out
}

fn unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_signed_tenant_plays_only_with_a_valid_token() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    let acme_key = tenant_with_key(&base, "acme", "signed", "main");
    let open_key = tenant_with_key(&base, "open", "public", "main");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{acme_key}", server.rtmp),
        &Publish::forever(),
    );
    let mut public = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{open_key}", server.rtmp),
        &Publish::forever(),
    );

    // A token from the API: its URL is the playlist's, with the token.
    let before = unix_s();
    let minted = mint(&base, "acme", "main", 600);
    let token = token_of(&minted);
    assert_eq!(
        minted["url"].as_str().unwrap(),
        format!("/hls/acme/main/index.m3u8?token={token}")
    );
    let expires_at = minted["expires_at"].as_i64().unwrap();
    assert!(
        (before + 600..=unix_s() + 600).contains(&expires_at),
        "{minted}"
    );
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "URL-safe as it is: {token}"
    );
    let signed_url = server.url(minted["url"].as_str().unwrap());
    let pl = wait_playlist(&signed_url, Duration::from_secs(40), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    let plain_url = server.url("/hls/acme/main/index.m3u8");

    // Without a token: 403, readable by a browser player on another origin.
    let refused = assert_refused(&plain_url, "no token");
    assert!(refused.text().contains("token"), "{}", refused.text());
    assert_refused(
        &server.url("/hls/acme/main/master.m3u8"),
        "no token, multivariant",
    );
    assert_refused(&format!("{plain_url}?token="), "an empty token");

    // With the token: every URI the playlist lists carries it on.
    let a = fetch(&signed_url);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("cache-control"), Some("private, max-age=1"));
    let text = a.text();
    let uris = uris_of(&text);
    assert!(uris.len() >= 3, "a map and segments: {text}");
    for uri in &uris {
        assert!(
            uri.ends_with(&format!("?token={token}")),
            "{uri} does not carry the token:\n{text}"
        );
    }
    let multivariant = fetch(&server.url(&format!("/hls/acme/main/master.m3u8?token={token}")));
    assert_eq!(multivariant.status, 200, "{}", multivariant.text());
    let variants = uris_of(&multivariant.text());
    assert_eq!(
        variants,
        vec![format!("index.m3u8?token={token}")],
        "{}",
        multivariant.text()
    );

    // Segments and the init segment: 200 with the token, 403 without.
    let media: Vec<String> = pl
        .segments
        .iter()
        .flat_map(|s| s.map_uri.iter().chain(std::iter::once(&s.uri)))
        .map(|u| resolve(&pl.url, u))
        .collect();
    assert!(media.len() >= 3, "{media:?}");
    for url in &media {
        assert!(url.contains("?token="), "{url}");
        let a = fetch(url);
        assert_eq!(a.status, 200, "GET {url}");
        assert!(!a.body.is_empty());
        assert_eq!(
            a.header("cache-control"),
            Some("private, max-age=31536000, immutable"),
            "{url}"
        );
        let bare = url.split('?').next().unwrap();
        assert_refused(bare, "a segment without a token");
    }

    // A token for another stream of the tenant, and one for another tenant's stream.
    let other = token_of(&mint(&base, "acme", "other", 600));
    let a = assert_refused(&format!("{plain_url}?token={other}"), "another stream");
    assert!(a.text().contains("another stream"), "{}", a.text());
    let elsewhere = token_of(&mint(&base, "open", "main", 600));
    assert_refused(
        &format!("{plain_url}?token={elsewhere}"),
        "another tenant's token",
    );
    // A tenant-wide prefix token covers the stream.
    let all = mint(&base, "acme", "*", 600);
    assert!(all["url"].is_null(), "{all}");
    assert_eq!(
        fetch(&format!("{plain_url}?token={}", token_of(&all))).status,
        200
    );
    // Tampered: the claims of another stream under this token's signature.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = token_of(&mint(&base, "acme", "other", 600));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        forged_claims.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_refused(&format!("{plain_url}?token={forged}"), "a forged token");
    assert_refused(&format!("{plain_url}?token=garbage"), "garbage");

    // ffprobe reads the signed URL end to end (playlist, init and segments).
    let streams = probe_streams(&signed_url);
    assert_streams(&streams, Some("h264"), true);

    // Expiry: a token with two seconds to live is refused once they have passed.
    let short = mint(&base, "acme", "main", 2);
    let exp = short["expires_at"].as_i64().unwrap();
    while unix_s() <= exp {
        thread::sleep(Duration::from_millis(200));
    }
    let a = assert_refused(
        &format!("{plain_url}?token={}", token_of(&short)),
        "an expired token",
    );
    assert!(a.text().contains("expired"), "{}", a.text());

    // A public tenant: no token needed, one given ignored (not carried on).
    let open_url = server.url("/hls/open/main/index.m3u8");
    let open = wait_playlist(&open_url, Duration::from_secs(40), "a segment", |pl| {
        !pl.segments.is_empty()
    });
    let a = fetch(&open_url);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("cache-control"), Some("max-age=1"));
    let a = fetch(&format!("{open_url}?token=garbage"));
    assert_eq!(a.status, 200, "a token given to a public tenant is ignored");
    assert!(!a.text().contains("token="), "{}", a.text());
    assert_eq!(fetch(&open.segment_url(&open.segments[0])).status, 200);

    // Counted by tenant and reason; the token never reaches a log line.
    let metrics = server.metrics();
    for (reason, at_least) in [
        ("missing", 3.0 + media.len() as f64),
        ("malformed", 1.0),
        ("bad_signature", 1.0),
        ("other_stream", 1.0),
        // The other tenant's token names a key of that tenant: unknown to this one.
        ("unknown_key", 1.0),
        ("expired", 1.0),
    ] {
        let n = denied(&metrics, "acme", reason);
        assert!(n >= at_least, "{reason}: {n} < {at_least}\n{metrics}");
    }
    assert!(
        !metrics.contains("tidegate_playback_denied_total{tenant=\"open\""),
        "a public tenant is never refused"
    );
    let log = server.log_text();
    assert!(log.contains("playback refused"), "refusals are logged");
    assert!(!log.contains(&token), "a token never reaches the log");

    // A deleted tenant's series go with it.
    let (status, body) = api("DELETE", &format!("{base}/api/v1/tenants/acme"), None);
    assert_eq!(status, 200, "{body}");
    let metrics = server.metrics();
    assert!(
        !metrics.contains("tidegate_playback_denied_total{tenant=\"acme\""),
        "{metrics}"
    );
    publisher.kill();
    public.kill();
}

/// `tidegate ARGS --api URL --token T`: (success, stdout, stderr).
fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    server.cli(Some(TOKEN), args)
}

#[test]
fn rotating_the_signing_key_keeps_or_drops_the_previous_tokens() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    let key = tenant_with_key(&base, "acme", "signed", "main");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", server.rtmp),
        &Publish::forever(),
    );
    // The CLI mints through the API.
    let (ok, out, err) = cli(
        &server,
        &[
            "tenant",
            "playback-token",
            "acme",
            "--stream",
            "main",
            "--ttl",
            "10m",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let minted: Value = serde_json::from_str(&out).unwrap();
    let first = token_of(&minted);
    let url = |t: &str| server.url(&format!("/hls/acme/main/index.m3u8?token={t}"));
    wait_playlist(&url(&first), Duration::from_secs(40), "a segment", |pl| {
        !pl.segments.is_empty()
    });
    let (_, tenant) = api("GET", &format!("{base}/api/v1/tenants/acme"), None);
    let ids = tenant["playback_keys"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{tenant}");
    assert_eq!(ids[0]["id"], minted["key_id"]);
    assert!(ids[0].get("secret").is_none(), "GET never shows a secret");

    // Rotation (CLI): the new secret is shown once; the first token still plays.
    let (ok, out, err) = cli(&server, &["tenant", "playback-key-rotate", "acme"]);
    assert!(ok, "{out}\n{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let secret = rotated["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64, "{rotated}");
    let (_, tenant) = api("GET", &format!("{base}/api/v1/tenants/acme"), None);
    assert!(!tenant.to_string().contains(secret), "{tenant}");
    assert_eq!(tenant["playback_keys"][0]["id"], rotated["id"]);
    assert_eq!(
        fetch(&url(&first)).status,
        200,
        "the previous key still verifies"
    );
    let second = token_of(&mint(&base, "acme", "main", 600));
    assert_eq!(fetch(&url(&second)).status, 200);

    // A second rotation drops the first key; one without keeping drops the second at once.
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/acme/playback-keys"),
        None,
    );
    assert_eq!(status, 201, "{body}");
    assert_refused(&url(&first), "a token of a dropped key");
    assert_eq!(fetch(&url(&second)).status, 200);
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/acme/playback-keys"),
        Some(json!({"keep_previous": false})),
    );
    assert_eq!(status, 201, "{body}");
    assert_refused(&url(&second), "a token of the key dropped at once");
    assert!(denied(&server.metrics(), "acme", "unknown_key") >= 2.0);

    // A token minted by the operator's own backend from the secret: the documented format.
    let kid = body["id"].as_str().unwrap();
    let own = hs256_token(
        body["secret"].as_str().unwrap(),
        kid,
        &json!({"tenant": "acme", "stream": "main", "exp": unix_s() + 300}),
    );
    assert_eq!(
        fetch(&url(&own)).status,
        200,
        "a backend-minted token plays"
    );

    // Back to public: no token needed.
    let (status, _) = api(
        "PATCH",
        &format!("{base}/api/v1/tenants/acme"),
        Some(json!({"playback": "public"})),
    );
    assert_eq!(status, 200);
    assert_eq!(fetch(&server.url("/hls/acme/main/index.m3u8")).status, 200);
    publisher.kill();
}

/// HS256 with python3's standard library, as an operator's backend would mint a token (an
/// implementation independent of the server's).
fn hs256_token(secret: &str, kid: &str, claims: &Value) -> String {
    let script = r#"
import base64, hashlib, hmac, json, sys
secret, kid, claims = sys.argv[1], sys.argv[2], sys.argv[3]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
body = b64(claims.encode())
signature = b64(hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
print(f"{header}.{body}.{signature}")
"#;
    let out = Command::new(require_cmd("python3"))
        .args(["-c", script, secret, kid, &claims.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn hls_js_in_chromium_plays_a_signed_stream_and_is_refused_without_or_after_its_token() {
    let node = require_cmd("node");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "required test tool `chromium` is missing (Debian package chromium); run ./scripts/install-test-tools.sh"
    );
    for module in ["playwright-core", "hls.js"] {
        assert!(
            browser_dir()
                .join(format!("node_modules/{module}/package.json"))
                .is_file(),
            "required test tool `{module}` is missing (npm ci in crates/cli/tests/browser); \
             run ./scripts/install-test-tools.sh"
        );
    }
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    let key = tenant_with_key(&base, "acme", "signed", "main");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", server.rtmp),
        &Publish::forever(),
    );
    let warm = token_of(&mint(&base, "acme", "main", 600));
    wait_playlist(
        &server.url(&format!("/hls/acme/main/index.m3u8?token={warm}")),
        Duration::from_secs(40),
        "two segments",
        |pl| pl.segments.len() >= 2,
    );
    let artifacts = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let started = Instant::now();
    let out = Command::new(node)
        .arg(browser_dir().join("signed_playback.mjs"))
        .args([&base, "acme", "main", artifacts.to_str().unwrap()])
        .env("TIDEGATE_ADMIN_TOKEN", TOKEN)
        .env("CHROMIUM", &chromium)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("PASS"),
        "signed_playback.mjs failed after {:.1} s:\n{text}",
        started.elapsed().as_secs_f64()
    );
    let metrics = server.metrics();
    assert!(denied(&metrics, "acme", "missing") >= 1.0, "{metrics}");
    assert!(denied(&metrics, "acme", "expired") >= 1.0, "{metrics}");
    publisher.kill();
}

#[test]
fn a_token_minted_through_one_worker_plays_through_another() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec!["--admin-token".into(), TOKEN.into()],
        ..ClusterOpts::default()
    });
    let a = &cluster.workers[0];
    let b = &cluster.workers[1];
    let key = tenant_with_key(&a.url(""), "acme", "signed", "main");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", a.rtmp),
        &Publish::forever(),
    );
    let url = |w: &Server, t: &str| w.url(&format!("/hls/acme/main/index.m3u8?token={t}"));
    // The first token makes the tenant's signing key on A; B verifies it at once (the key is
    // in the shared state: B hears of the change, or reads the tenants again on an unknown
    // key), with nothing configured on either worker.
    let first = token_of(&mint(&a.url(""), "acme", "main", 600));
    let answer = fetch(&url(b, &first));
    assert!(
        matches!(answer.status, 200 | 404),
        "B knows A's new key at once (404 only while no segment exists yet): {} {}",
        answer.status,
        answer.text()
    );
    let pl = wait_playlist(
        &url(b, &first),
        Duration::from_secs(40),
        "a segment through B",
        |pl| !pl.segments.is_empty(),
    );
    assert_eq!(fetch(&pl.segment_url(&pl.segments[0])).status, 200);
    assert_refused(&b.url("/hls/acme/main/index.m3u8"), "no token, on B");

    // A rotation on A that drops the old key: B refuses the old token and plays the new one.
    let (status, body) = api(
        "POST",
        &a.url("/api/v1/tenants/acme/playback-keys"),
        Some(json!({"keep_previous": false})),
    );
    assert_eq!(status, 201, "{body}");
    let second = token_of(&mint(&a.url(""), "acme", "main", 600));
    wait_for(
        "B to play the new key's token",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (fetch(&url(b, &second)).status == 200).then_some(()),
    );
    wait_for(
        "B to refuse the dropped key's token",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (fetch(&url(b, &first)).status == 403).then_some(()),
    );
    publisher.kill();
}
