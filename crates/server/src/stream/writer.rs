//! The per-publish-session writer task: stores what the segmenter cut, then lists it.

use std::collections::HashSet;
use std::sync::Arc;

use tidegate_packager::{SegmentEntry, SegmenterOutput};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Stream, Streams, WriterMsg};
use crate::store::{StoreError, StreamRecord};
use crate::unix_ms;

/// Segments (and inits) that may wait between the connection and the writer. Past it the
/// connection waits, which pushes back on the publisher's TCP window.
pub(super) const QUEUE_DEPTH: usize = 16;

pub(super) struct Writer {
    pub streams: Arc<Streams>,
    pub stream: Arc<Stream>,
    pub epoch: u64,
    pub record: StreamRecord,
    pub rx: mpsc::Receiver<WriterMsg>,
    pub fenced: CancellationToken,
    /// The init segment the next media segments need (fMP4).
    pub map_uri: Option<String>,
}

pub(super) async fn run(mut w: Writer) {
    while let Some(msg) = w.rx.recv().await {
        match msg {
            WriterMsg::Output(SegmenterOutput::Init { data, id }, _, _) => {
                let uri = format!("init-{}-{}.mp4", w.epoch, id);
                let path = format!("{}/{}", w.stream.id.prefix(), uri);
                if let Err(e) = w.streams.media.put(&path, data).await {
                    w.streams.metrics.store_error("put_init");
                    warn!(stream = %w.stream.id, error = %e, "could not store init segment");
                }
                w.map_uri = Some(uri);
            }
            WriterMsg::Output(SegmenterOutput::Segment(seg), cut_at, info) => {
                let ext = w.record.playlist.container.segment_extension();
                let sequence = w.record.playlist.next_sequence;
                let uri = format!("seg-{}-{}.{}", w.epoch, sequence, ext);
                let path = format!("{}/{}", w.stream.id.prefix(), uri);
                if let Err(e) = w.streams.media.put(&path, seg.data.clone()).await {
                    // The segment is lost; the next one must not pretend continuity.
                    w.streams.metrics.store_error("put_segment");
                    warn!(stream = %w.stream.id, error = %e, "could not store segment; marking a gap");
                    w.record.playlist.mark_discontinuity();
                    continue;
                }
                let entry = SegmentEntry::from_cut(&seg, uri, w.map_uri.clone());
                let mut next = w.record.clone();
                if let Some(info) = info {
                    next.playlist.codecs = info.codecs;
                    next.playlist.resolution = info.resolution;
                }
                let evicted = next.playlist.push_segment(entry);
                next.updated_ms = unix_ms();
                match commit(&w, &next).await {
                    Ok(()) => {
                        w.record = next;
                        w.stream.set_rendered(&w.record.playlist);
                        w.streams.metrics.segments.inc();
                        w.streams
                            .metrics
                            .segment_latency
                            .observe(cut_at.elapsed().as_secs_f64());
                        debug!(stream = %w.stream.id, sequence, "segment listed");
                        schedule_deletes(&w, evicted);
                    }
                    Err(StoreError::Conflict { stored, held }) => {
                        warn!(stream = %w.stream.id, stored, held, "stream taken over by a newer epoch; closing this publisher");
                        w.fenced.cancel();
                        let _ = w.streams.media.delete(&path).await;
                        break;
                    }
                    Err(e) => {
                        w.streams.metrics.store_error("put_state");
                        warn!(stream = %w.stream.id, error = %e, "could not update stream state");
                    }
                }
            }
            WriterMsg::Finish => break,
        }
    }
    w.fenced.cancel();
    let mut record = w.record.clone();
    record.publisher_left_ms = Some(unix_ms());
    record.updated_ms = unix_ms();
    match commit(&w, &record).await {
        Ok(()) => {}
        Err(e) => {
            warn!(stream = %w.stream.id, error = %e, "could not record the publisher leaving")
        }
    }
    w.streams.publisher_gone(&w.stream, record).await;
}

async fn commit(w: &Writer, record: &StreamRecord) -> Result<(), StoreError> {
    w.streams.state.compare_and_set(Some(w.epoch), record).await
}

/// Deletes evicted segments (and init segments no longer referenced) after the grace period,
/// so a player that fetched the playlist just before can still fetch them.
fn schedule_deletes(w: &Writer, evicted: Vec<SegmentEntry>) {
    if evicted.is_empty() {
        return;
    }
    let referenced: HashSet<&str> = w
        .record
        .playlist
        .segments
        .iter()
        .filter_map(|s| s.map_uri.as_deref())
        .chain(w.map_uri.as_deref())
        .collect();
    let prefix = w.stream.id.prefix();
    let mut paths: Vec<String> = Vec::new();
    for e in &evicted {
        paths.push(format!("{prefix}/{}", e.uri));
        if let Some(m) = &e.map_uri {
            let p = format!("{prefix}/{m}");
            if !referenced.contains(m.as_str()) && !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    let media = w.streams.media.clone();
    let metrics = w.streams.metrics.clone();
    let grace = w.streams.settings.delete_grace();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        for p in paths {
            if media.delete(&p).await.is_err() {
                metrics.store_error("delete");
            }
        }
    });
}
