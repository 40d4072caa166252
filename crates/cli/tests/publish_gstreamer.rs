//! GStreamer publishers: `rtmp2sink` (GStreamer's own RTMP client) and `rtmpsink`
//! (librtmp, the OBS lineage, which sends compressed chunk headers). Both encode live
//! (x264 zerolatency + AAC) for ten seconds, then send EOS; the output passes every check.

use std::process::Command;
use tidegate_testkit::*;

const SENT: u32 = 10;

fn gst_publisher(sink: &'static str) -> impl FnOnce(&str) -> Proc {
    move |url| {
        let gst = require_cmd("gst-launch-1.0");
        for e in [
            "videotestsrc",
            "audiotestsrc",
            "x264enc",
            "h264parse",
            "flvmux",
            "aacparse",
            sink,
        ] {
            require_gst_element(e);
        }
        let aac = gst_aac_encoder();
        let video_buffers = SENT * 25;
        let audio_buffers = (SENT * 48_000).div_ceil(1024);
        // What was sent is kept beside the logs, to tell publisher from server problems.
        let copy = log_dir().join(format!("{}.flv", unique_name(sink)));
        let copy = copy.display();
        eprintln!("{sink}: the FLV sent is kept in {copy}");
        let pipeline = format!(
            "videotestsrc is-live=true num-buffers={video_buffers} \
             ! video/x-raw,format=I420,width=640,height=360,framerate=25/1 \
             ! x264enc key-int-max=50 tune=zerolatency speed-preset=ultrafast bitrate=800 \
             ! h264parse ! queue ! flvmux streamable=true name=m ! tee name=t \
             ! queue ! {sink} location={url} t. ! queue ! filesink location={copy} \
             audiotestsrc is-live=true wave=sine num-buffers={audio_buffers} samplesperbuffer=1024 \
             ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
             ! {aac} ! aacparse ! queue ! m."
        );
        let mut cmd = Command::new(gst);
        cmd.arg("-e").args(pipeline.split_whitespace());
        Proc::spawn(sink, cmd)
    }
}

#[test]
fn rtmp2sink() {
    let out = publish_once_and_check(&[], true, true, SENT.into(), gst_publisher("rtmp2sink"));
    assert_streams(&out.streams, Some("h264"), true);
}

#[test]
fn rtmpsink_librtmp() {
    let out = publish_once_and_check(&[], true, true, SENT.into(), gst_publisher("rtmpsink"));
    assert_streams(&out.streams, Some("h264"), true);
}
