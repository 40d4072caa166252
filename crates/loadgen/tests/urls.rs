//! Publish URL templates: expansion and parsing of rtmp:// and srt:// targets.

use std::time::Duration;

use tidegate_loadgen::target::*;
use tidegate_loadgen::LoadgenError;

#[test]
fn parses_rtmp_urls() {
    let t = RtmpTarget::parse(&expand("rtmp://127.0.0.1:1936/live/bench{i}", 7)).unwrap();
    assert_eq!(
        t,
        RtmpTarget {
            addr: "127.0.0.1:1936".into(),
            app: "live".into(),
            stream_key: "bench7".into(),
            tc_url: "rtmp://127.0.0.1:1936/live".into(),
        }
    );
    let t = RtmpTarget::parse("rtmp://example.com/app/a/b?token=x").unwrap();
    assert_eq!(t.addr, "example.com:1935");
    assert_eq!(t.stream_key, "a/b?token=x");
    let t = RtmpTarget::parse("rtmp://[::1]:19350/live/k").unwrap();
    assert_eq!(t.addr, "[::1]:19350");
    assert_eq!(
        RtmpTarget::parse("rtmp://[::1]/live/k").unwrap().addr,
        "[::1]:1935"
    );
}

#[test]
fn rejects_bad_urls_without_echoing_the_key() {
    for u in [
        "http://h/live/k",
        "rtmp://",
        "rtmp://h",
        "rtmp://h/live",
        "rtmp://h/live/",
        "rtmp://:1935/live/k",
        "rtmp://h:x/live/k",
        "rtmp://h:99999/live/secret",
    ] {
        let e = RtmpTarget::parse(u).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{u}: {e}");
    }
}

#[test]
fn schemes() {
    assert_eq!(Protocol::parse("rtmp://h/live/k").unwrap(), Protocol::Rtmp);
    assert_eq!(
        Protocol::parse("srt://h:9000?streamid=k").unwrap(),
        Protocol::Srt
    );
    assert!(matches!(
        Protocol::parse("rtmps://h/live/k"),
        Err(LoadgenError::Unsupported(_))
    ));
    assert!(matches!(
        Protocol::parse("ftp://h/x"),
        Err(LoadgenError::BadUrl { .. })
    ));
}

#[test]
fn parses_srt_urls() {
    let url = "srt://127.0.0.1:9001?streamid=%23!::r=live/cam{i},m=publish&passphrase=correct%20horse&pbkeylen=32&latency=200&mode=caller";
    let t = SrtTarget::parse(&expand(url, 4), 4).unwrap();
    assert_eq!(t.addr, "127.0.0.1:9001");
    assert_eq!(t.stream_id, "#!::r=live/cam4,m=publish");
    assert_eq!(t.passphrase.as_deref(), Some("correct horse"));
    assert_eq!(t.key_bytes, 32);
    assert_eq!(t.latency, Some(Duration::from_millis(200)));
    // A raw `#` works too (nothing after `?` is a fragment here).
    let t = SrtTarget::parse("srt://h?streamid=#!::r=live/x,m=publish", 0).unwrap();
    assert_eq!(t.addr, "h:9000");
    assert_eq!(t.stream_id, "#!::r=live/x,m=publish");
    // No stream ID: the default RTMP naming, per publisher.
    let t = SrtTarget::parse("srt://[::1]:9000", 7).unwrap();
    assert_eq!(t.addr, "[::1]:9000");
    assert_eq!(t.stream_id, "#!::r=live/bench7,m=publish");
    assert_eq!((t.passphrase, t.key_bytes, t.latency), (None, 16, None));
}

#[test]
fn rejects_bad_srt_urls_without_echoing_secrets() {
    for u in [
        "rtmp://h/live/k",
        "srt://",
        "srt://:9000",
        "srt://h:x",
        "srt://h:99999?streamid=secret",
        "srt://h/live/secret",
        "srt://h:9000?passphrase=secret",
        "srt://h:9000?streamid=secret&pbkeylen=8",
        "srt://h:9000?streamid=secret&latency=-1",
        "srt://h:9000?streamid=%zzsecret",
    ] {
        let e = SrtTarget::parse(u, 0).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{u}: {e}");
        assert!(matches!(e, LoadgenError::BadUrl { .. }), "{u}: {e}");
    }
    let t = SrtTarget::parse("srt://h:9000?streamid=k&passphrase=0123456789", 0).unwrap();
    assert!(!format!("{t:?}").contains("0123456789"));
}

#[test]
fn expands_every_placeholder() {
    assert_eq!(expand("a{i}/b{i}", 3), "a3/b3");
    assert_eq!(expand("plain", 3), "plain");
    assert_eq!(expand("srt://h:{9000+i}?x={i}", 5), "srt://h:9005?x=5");
    // Anything else in braces stays as it is.
    assert_eq!(expand("{x}{+i}{1+j}{i", 2), "{x}{+i}{1+j}{i");
}

#[test]
fn a_list_of_keys_fills_key_in_turn() {
    let config = |url: &str, keys: &[&str]| tidegate_loadgen::BenchConfig {
        url: url.into(),
        publishers: 3,
        ramp_up_per_sec: 10.0,
        duration: Duration::from_secs(1),
        viewers: 0,
        play_url: None,
        viewer_kinds: Vec::new(),
        dash_url: None,
        ll_skip: false,
        viewer_delay: Duration::ZERO,
        metrics_url: None,
        threads: 1,
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    let c = config("rtmp://h/live/{key}", &["tgk_a", "tgk_b"]);
    c.validate().unwrap();
    assert_eq!(c.publish_url(0), "rtmp://h/live/tgk_a");
    assert_eq!(c.publish_url(1), "rtmp://h/live/tgk_b");
    assert_eq!(c.publish_url(2), "rtmp://h/live/tgk_a");
    let srt = config("srt://h:9000?streamid={key}&x={i}", &["k1"]);
    assert_eq!(srt.publish_url(4), "srt://h:9000?streamid=k1&x=4");
    // One without the other is a mistake.
    assert!(config("rtmp://h/live/{key}", &[]).validate().is_err());
    assert!(config("rtmp://h/live/b{i}", &["k"]).validate().is_err());
}
