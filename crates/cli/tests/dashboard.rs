//! The dashboard at `/`, in a real browser: Debian's headless chromium, driven by
//! playwright-core from `tests/browser/dashboard.mjs`, opens the page while an ffmpeg
//! publisher is live. The stream appears `healthy` (green); its detail view plays the HLS
//! preview with hls.js (the `<video>`'s `currentTime` advances), in hls.js's low-latency mode
//! exactly when the playlist has LL-HLS parts (`EXT-X-PART-INF`); then the publisher is
//! stopped with SIGSTOP (the connection stays open, the bitrate drops to zero) and the page
//! turns `warning` (amber) with the low-bitrate reason; the kick button, given the admin
//! token at its prompt, turns it `reconnecting` (blue). A second stream, whose name sorts
//! first, stays ahead of it throughout: cards keep their order when a status changes.
//! Screenshots land in
//! `target/test-artifacts/dashboard-*.png`.
//!
//! Before the browser, plain HTTP checks of what the binary serves: the page, its assets
//! with content types, ETags and cache headers.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tidegate_testkit::*;

/// The server's admin token, which the page asks for when kick is pressed.
const ADMIN_TOKEN: &str = "dashboard-test-token";

/// A worker id as long as a Deployment pod's name and port; the page reads it from the API.
const LONG_WORKER_ID: &str = "tidegate-premium-pool-7f9c8d6b5d-x2x9z-8080";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// node, playwright-core (`npm ci` in tests/browser) and Debian's chromium, or a panic that
/// names the install script.
fn require_browser_tools() -> PathBuf {
    let node = require_cmd("node");
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string()),
    );
    assert!(
        chromium.is_file(),
        "required test tool `chromium` is missing ({} not found, Debian package chromium); \
         run ./scripts/install-test-tools.sh",
        chromium.display()
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "required test tool `playwright-core` is missing (npm ci in crates/cli/tests/browser); \
         run ./scripts/install-test-tools.sh"
    );
    node
}

fn header(url: &str, name: &str, if_none_match: Option<&str>) -> (u16, Option<String>) {
    let mut req = ureq::get(url);
    if let Some(tag) = if_none_match {
        req = req.set("If-None-Match", tag);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    (resp.status(), resp.header(name).map(str::to_string))
}

/// The page and its assets, as plain HTTP.
fn check_served_assets(server: &Server) {
    let page = get(&server.url("/"));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    let (_, etag) = header(&server.url("/"), "etag", None);
    let etag = etag.expect("the page has an ETag");
    assert_eq!(header(&server.url("/"), "etag", Some(&etag)).0, 304);
    let (_, cache) = header(&server.url("/"), "cache-control", None);
    assert_eq!(cache.as_deref(), Some("no-cache"));

    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("hls.light.min.js", "text/javascript; charset=utf-8"),
    ] {
        let marker = format!("/{file}\"");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("the page loads {file}: {html}"));
        let start = html[..at].rfind('"').unwrap() + 1;
        let path = &html[start..at + marker.len() - 1];
        assert!(path.starts_with("/dashboard/"), "{path}");
        let r = get(&server.url(path));
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.content_type.as_deref(), Some(ctype), "{path}");
        assert!(r.body.len() > 500, "{path} is {} bytes", r.body.len());
        let (_, cache) = header(&server.url(path), "cache-control", None);
        assert_eq!(
            cache.as_deref(),
            Some("public, max-age=31536000, immutable"),
            "{path}: versioned assets are cached for good"
        );
        let (_, tag) = header(&server.url(path), "etag", None);
        assert_eq!(
            header(&server.url(path), "etag", Some(&tag.unwrap())).0,
            304
        );
    }
    assert_eq!(get(&server.url("/dashboard/x/nope.js")).status, 404);
}

#[test]
fn dashboard_in_chromium_shows_health_and_plays_the_preview() {
    let node = require_browser_tools();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidegate.toml");
    fs::write(&config, FAST_HEALTH_TOML).unwrap();
    let mut server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--admin-token",
        ADMIN_TOKEN,
        // As long as a Kubernetes pod's HOSTNAME-PORT: the card must show all of it.
        "--worker-id",
        LONG_WORKER_ID,
    ]);
    check_served_assets(&server);

    let publisher = publish_ffmpeg(Media::H264Aac, &server.rtmp_url("cam"), &Publish::forever());
    // A second stream whose name sorts first: the page must keep `cam` after it when `cam`
    // turns `warning` (cards do not move on a status change).
    let mut bystander = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("bystander"),
        &Publish::forever(),
    );
    for key in ["cam", "bystander"] {
        wait_playlist(
            &server.playlist_url(key),
            Duration::from_secs(30),
            "two segments",
            |pl| pl.segments.len() >= 2,
        );
    }

    let artifacts = target_dir().join("test-artifacts");
    fs::create_dir_all(&artifacts).unwrap();
    let mut cmd = Command::new(node);
    cmd.current_dir(browser_dir())
        .arg("dashboard.mjs")
        .arg(server.url(""))
        .arg("default/cam")
        .arg(publisher.pid().to_string())
        .arg(&artifacts)
        .env("TIDEGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WORKER_ID", LONG_WORKER_ID);
    let mut browser = Proc::spawn("chromium-dashboard", cmd);
    // The script's own steps time out after 30 s each; this only bounds a hung browser.
    let status = browser.wait_exit(Duration::from_secs(150));
    let out = browser.log_text();
    println!("{out}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("dashboard.mjs failed ({s}):\n{out}"),
        None => panic!("dashboard.mjs still running after 150 s:\n{out}"),
    }
    assert!(out.contains("dashboard.mjs: PASS"), "{out}");
    // The preview's hls.js mode follows the playlist: low latency when it has LL-HLS parts.
    let low_latency = get(&server.playlist_url("cam"))
        .text()
        .contains("#EXT-X-PART-INF:");
    let mode = if low_latency {
        "preview mode: low-latency"
    } else {
        "preview mode: regular"
    };
    assert!(out.contains(mode), "expected {mode:?}:\n{out}");
    for name in ["overview", "detail", "warning", "reconnecting"] {
        let png = artifacts.join(format!("dashboard-{name}.png"));
        let bytes = fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", png.display());
    }
    // The API agrees with what the page showed.
    let v: serde_json::Value = ureq::get(&server.url("/api/v1/streams/default/cam"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .into_string()
        .map(|body| serde_json::from_str(&body).unwrap())
        .unwrap();
    assert_eq!(v["status"], "reconnecting", "kicked from the page: {v}");
    assert!(v["publisher_left_ms"].as_i64().unwrap_or(0) > 0, "{v}");
    server.assert_alive();
    bystander.kill();
    drop(publisher); // SIGKILL works on a stopped process too.
}
