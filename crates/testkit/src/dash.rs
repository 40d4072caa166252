//! Reading a live MPD with an independent parser: pip's `mpegdash`, plus `xml.etree` for what
//! `mpegdash` 0.4 does not model (`ServiceDescription`, and `availabilityTimeComplete`,
//! which it reads as a Python `bool` of the text). The summary is JSON:
//!
//! - the MPD's attributes (`id`, `type`, `profiles`, `availabilityStartTime`, `publishTime`,
//!   `minimumUpdatePeriod`, `timeShiftBufferDepth`, `suggestedPresentationDelay`,
//!   `minBufferTime`), `baseURLs`, `utcTiming` (`[scheme, value]` pairs), the
//!   `ServiceDescription`'s `latency` and `playbackRate` (`null` without one);
//! - `periods`: each with `id`, `start` (seconds) and `adaptation_sets`, each with its
//!   `representations`: their attributes, their `SegmentTemplate`'s (`timescale`,
//!   `startNumber`, `pto`, `initialization`, `media`, `availabilityTimeOffset`,
//!   `availabilityTimeComplete`) and its timeline `S` as `[t, d, r]`.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::require_cmd;

/// Reads an MPD from stdin with `mpegdash` and `xml.etree` and prints the summary.
const MPD_SUMMARY_PY: &str = r#"
import json, re, sys
import xml.etree.ElementTree as ET
from mpegdash.parser import MPEGDASHParser
text = sys.stdin.read()
mpd = MPEGDASHParser.parse(text)
ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
root = ET.fromstring(text.encode())
sd = root.find("d:ServiceDescription", ns)
latency = sd.find("d:Latency", ns) if sd is not None else None
rate = sd.find("d:PlaybackRate", ns) if sd is not None else None
raw_periods = root.findall("d:Period", ns)
def seconds(duration):
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", duration or "")
    if not m:
        return None
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
periods = []
for i, p in enumerate(mpd.periods):
    raw = raw_periods[i].find("d:AdaptationSet/d:Representation/d:SegmentTemplate", ns)
    if raw is None:
        raw = raw_periods[i].find("d:AdaptationSet/d:SegmentTemplate", ns)
    sets = []
    for a in p.adaptation_sets:
        reps = []
        for r in a.representations:
            t = r.segment_templates[0] if r.segment_templates else a.segment_templates[0]
            s = [[x.t, x.d, x.r] for x in t.segment_timelines[0].Ss]
            reps.append({"id": r.id, "bandwidth": r.bandwidth, "codecs": r.codecs,
                         "width": r.width, "height": r.height, "frameRate": r.frame_rate,
                         "audioSamplingRate": r.audio_sampling_rate,
                         "timescale": t.timescale, "startNumber": t.start_number,
                         "pto": t.presentation_time_offset,
                         "initialization": t.initialization, "media": t.media,
                         "availabilityTimeOffset": t.availability_time_offset,
                         "availabilityTimeComplete":
                             None if raw is None else raw.get("availabilityTimeComplete"),
                         "S": s})
        sets.append({"id": a.id, "mimeType": a.mime_type, "contentType": a.content_type,
                     "representations": reps})
    periods.append({"id": p.id, "start": seconds(p.start), "adaptation_sets": sets})
print(json.dumps({
    "id": mpd.id, "type": mpd.type, "profiles": mpd.profiles,
    "availabilityStartTime": mpd.availability_start_time, "publishTime": mpd.publish_time,
    "minimumUpdatePeriod": mpd.minimum_update_period,
    "timeShiftBufferDepth": mpd.time_shift_buffer_depth,
    "suggestedPresentationDelay": mpd.suggested_presentation_delay,
    "minBufferTime": mpd.min_buffer_time,
    "baseURLs": [b.base_url_value for b in (mpd.base_urls or [])],
    "utcTiming": [[u.scheme_id_uri, u.value] for u in (mpd.utc_timings or [])],
    "latency": None if latency is None else {k: float(v) for k, v in latency.attrib.items()},
    "playbackRate": None if rate is None else {k: float(v) for k, v in rate.attrib.items()},
    "periods": periods}))
"#;

/// Runs the Python `script` with `input` on stdin; its stdout as JSON. `what` names the
/// reader for the failure message (a missing pip package: scripts/install-test-tools.sh).
pub fn python_json(script: &str, input: &str, what: &str) -> Value {
    let mut child = Command::new(require_cmd("python3"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("python3's stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("writing to python3");
    }
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "{what} could not read it (installed? scripts/install-test-tools.sh): {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

/// The MPD `text` as `mpegdash` reads it (the summary of the [module](self)).
pub fn mpd_summary(text: &str) -> Value {
    python_json(MPD_SUMMARY_PY, text, "mpegdash")
}

/// The first representation of the first adaptation set of `period` (a summary's period).
pub fn representation_of(period: &Value) -> &Value {
    &period["adaptation_sets"][0]["representations"][0]
}

/// The first representation of the summary's last period (`Null` without periods).
pub fn last_representation(summary: &Value) -> &Value {
    summary["periods"]
        .as_array()
        .and_then(|p| p.last())
        .map_or(&Value::Null, representation_of)
}

/// Segments a representation's timeline lists (`S` elements with their repeats).
pub fn timeline_count(representation: &Value) -> u64 {
    representation["S"].as_array().map_or(0, |s| {
        s.iter().map(|s| 1 + s[2].as_u64().unwrap_or(0)).sum()
    })
}

/// Segments a period's timeline lists.
pub fn segments_in(period: &Value) -> u64 {
    timeline_count(representation_of(period))
}

/// Polls the MPD at `url` (GET, any status) until its summary satisfies `want`, for up to
/// 40 s; returns (text, summary).
pub fn wait_mpd(url: &str, what: &str, want: impl Fn(&Value) -> bool) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, text) = match ureq::get(url).call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        if status == 200 {
            let summary = mpd_summary(&text);
            if want(&summary) {
                return (text, summary);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no MPD with {what} at {url}: {status} {text}"
        );
        thread::sleep(Duration::from_millis(300));
    }
}
