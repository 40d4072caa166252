//! The RTMP publisher driver: one task per publisher owns a TCP socket and a
//! [`ClientSession`], and paces the shared file's tags into it.
//!
//! Loop: drain the session's transmits into a queue of `Bytes` (headers and zero-copy
//! payload slices), drain its events, then wait for the first of: stop, the socket
//! writable (when the queue is not empty: one vectored write of up to [`MAX_IOV`] pieces,
//! repeated until it would block), the socket readable (acks, pings, status), the next
//! media deadline (everything due within [`COALESCE`] is handed in at once, so a wake-up
//! sends video and audio together), or the session's timer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tidegate_rtmp::{ClientConfig, ClientEvent, ClientSession, RtmpError};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use crate::flv_file::{FlvFile, TagKind};
use crate::publisher::{self, note_lag, Exit, Pacer};
use crate::report::{PublisherLive, PublisherOutcome};
use crate::schedule::{wire_timestamp, Schedule};
use crate::target::RtmpTarget;

/// Tags due within this much of now are handed in together: fewer wake-ups and writes,
/// at the price of sending up to this much early.
pub const COALESCE: Duration = Duration::from_millis(20);
/// Most pieces gathered into one vectored write (Linux allows 1024).
const MAX_IOV: usize = 64;
/// Bytes queued but not yet written above which no more media is handed in: a server
/// that reads slowly makes the publisher fall behind (and the report shows it) instead of
/// filling memory.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;
/// Time allowed for the TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed, at the end, to flush the queue and the unpublish commands.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// Everything one RTMP publisher task needs: the file's tags go to an RTMP target.
pub type PublisherTask = publisher::PublisherTask<RtmpTarget, FlvFile>;

/// Runs one publisher to its end.
pub async fn run(mut t: PublisherTask) -> PublisherOutcome {
    let mut out = PublisherOutcome::not_started(t.slot.index);
    let Some(connect_started) = t.slot.start().await else {
        return out;
    };
    let stream = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&t.target.addr)) => r,
        _ = t.slot.stop.changed() => return out,
    };
    let stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return t
                .slot
                .conclude(out, Exit::Lost(format!("connect: {e}")), false)
        }
        Err(_) => {
            return t
                .slot
                .conclude(out, Exit::Lost("connect: timed out".into()), false)
        }
    };
    let _ = stream.set_nodelay(true);
    let mut d = Driver {
        session: ClientSession::new(
            ClientConfig {
                app: t.target.app.clone(),
                stream_key: t.target.stream_key.clone(),
                tc_url: t.target.tc_url.clone(),
                seed: t.slot.index as u64 ^ 0x7469_6465,
                ..ClientConfig::default()
            },
            Instant::now().into_std(),
        ),
        stream,
        queue: VecDeque::new(),
        queued_bytes: 0,
        last_queued: None,
        pacer: None,
        live: t.slot.live.clone(),
        out: &mut out,
    };
    let exit = d.drive(&mut t, connect_started).await;
    let published = d.pacer.is_some();
    t.slot.conclude(out, exit, published)
}

struct Driver<'a> {
    session: ClientSession,
    stream: TcpStream,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// Media time of the last tag queued and not yet known to be written.
    last_queued: Option<Duration>,
    /// The pacing (set at `NetStream.Publish.Start`).
    pacer: Option<Pacer>,
    live: Arc<PublisherLive>,
    out: &'a mut PublisherOutcome,
}

impl Driver<'_> {
    async fn drive(&mut self, t: &mut PublisherTask, connect_started: Instant) -> Exit {
        let mut sched = Schedule::new(t.media.clone());
        let end_at = t.slot.end_at;
        let mut stop_deadline: Option<Instant> = None;
        let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            self.pull_transmits();
            while let Some(ev) = self.session.poll_event() {
                match ev {
                    ClientEvent::PublishStarted { .. } => {
                        let pacer = t.slot.publishing(
                            self.out,
                            connect_started,
                            Instant::now(),
                            t.media.gop_ms,
                        );
                        if let Err(e) = self.send_headers(&t.media) {
                            return Exit::Lost(e.to_string());
                        }
                        self.pacer = Some(pacer);
                    }
                    ClientEvent::PublishRejected { code, .. } => {
                        self.pull_transmits();
                        self.flush_best_effort().await;
                        return Exit::Refused(code);
                    }
                    ClientEvent::Closed if stop_deadline.is_none() => {
                        return Exit::Lost("the session closed".into());
                    }
                    ClientEvent::StatusMessage { code, .. }
                        if stop_deadline.is_none()
                            && self.pacer.is_some()
                            && !self.session.is_publishing() =>
                    {
                        return Exit::Lost(format!("server ended the publish: {code}"));
                    }
                    _ => {}
                }
            }
            self.pull_transmits();
            if stop_deadline.is_some() && self.queue.is_empty() {
                return Exit::Stopped;
            }
            let media_due = match self.pacer {
                Some(pacer) if stop_deadline.is_none() && self.queued_bytes < MAX_QUEUED_BYTES => {
                    Some(pacer.wake_at(sched.next_due(), COALESCE))
                }
                _ => None,
            };
            let session_due = self.session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = t.slot.stop_requested(), if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop(&sched));
                }
                _ = sleep_until(stop_deadline.unwrap_or(end_at)), if stop_deadline.is_some() => {
                    return Exit::Stopped;
                }
                r = self.stream.writable(), if !self.queue.is_empty() => {
                    if let Err(e) = r.and_then(|()| self.write_some()) {
                        return Exit::Lost(format!("write: {e}"));
                    }
                }
                r = self.stream.readable() => {
                    if let Err(e) = r {
                        return Exit::Lost(format!("read: {e}"));
                    }
                    if inbuf.capacity() - inbuf.len() < READ_CHUNK {
                        inbuf.reserve(READ_CHUNK);
                    }
                    match self.stream.try_read_buf(&mut inbuf) {
                        Ok(0) if stop_deadline.is_some() => return Exit::Stopped,
                        Ok(0) => return Exit::Lost("the server closed the connection".into()),
                        Ok(_) => {
                            if let Err(e) = self.session.handle_input(Instant::now().into_std(), &mut inbuf) {
                                if stop_deadline.is_some() { return Exit::Stopped; }
                                return Exit::Lost(e.to_string());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if stop_deadline.is_some() => { let _ = e; return Exit::Stopped; }
                        Err(e) => return Exit::Lost(format!("read: {e}")),
                    }
                }
                _ = sleep_until(media_due.unwrap_or(end_at)), if media_due.is_some() => {
                    if let Err(e) = self.queue_due(&mut sched) {
                        return Exit::Lost(e.to_string());
                    }
                }
                _ = sleep_until(session_due.unwrap_or(end_at)), if session_due.is_some() => {
                    if let Err(e) = self.session.handle_timeout(Instant::now().into_std()) {
                        return Exit::Lost(e.to_string());
                    }
                }
            }
        }
    }

    fn send_headers(&mut self, file: &FlvFile) -> Result<(), RtmpError> {
        if let Some(m) = &file.metadata {
            self.session.send_metadata(m)?;
        }
        for h in &file.headers {
            match h.kind {
                TagKind::Video => self.session.send_video(0, h.data.clone())?,
                TagKind::Audio => self.session.send_audio(0, h.data.clone())?,
            }
        }
        Ok(())
    }

    /// Hands every tag due within [`COALESCE`] to the session, measuring how late each is.
    fn queue_due(&mut self, sched: &mut Schedule<FlvFile>) -> Result<(), RtmpError> {
        let Some(mut pacer) = self.pacer else {
            return Ok(());
        };
        let now = Instant::now();
        let until = pacer.due_by(now, COALESCE);
        let session = &mut self.session;
        let mut err = None;
        let mut max_lag = 0u64;
        let mut n = 0u64;
        let mut last = None;
        sched.pop_due(until, |media, tag| {
            if err.is_some() {
                return;
            }
            let lag = pacer.hand_in(now, media);
            max_lag = max_lag.max(lag);
            let ts = wire_timestamp(media.as_millis() as u64);
            let r = match tag.kind {
                TagKind::Video => session.send_video(ts, tag.data.clone()),
                TagKind::Audio => session.send_audio(ts, tag.data.clone()),
            };
            if let Err(e) = r {
                err = Some(e);
            }
            n += 1;
            last = Some(pacer.newest());
        });
        if let Some(e) = err {
            return Err(e);
        }
        self.out.tags_sent += n;
        self.pacer = Some(pacer);
        if last.is_some() {
            self.last_queued = last;
        }
        note_lag(&self.live, self.out, max_lag);
        self.pull_transmits();
        Ok(())
    }

    fn pull_transmits(&mut self) {
        while let Some(b) = self.session.poll_transmit() {
            self.queued_bytes += b.len();
            self.queue.push_back(b);
        }
    }

    /// Vectored writes until the queue is empty or the socket would block.
    fn write_some(&mut self) -> std::io::Result<()> {
        while !self.queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (slot, b) in iov.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(b);
                n += 1;
            }
            let written = match self.stream.try_write_vectored(&iov[..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.live
                .bytes_sent
                .fetch_add(written as u64, Ordering::Relaxed);
            self.queued_bytes = self.queued_bytes.saturating_sub(written);
            let mut rest = written;
            while rest > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if front.len() <= rest {
                    rest -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(rest);
                    rest = 0;
                }
            }
        }
        // Everything queued is in the kernel: how late was the last tag?
        if let (Some(pacer), Some(media)) = (self.pacer, self.last_queued.take()) {
            let lag = pacer.late_ms(Instant::now(), media);
            self.out.max_lag_ms = self.out.max_lag_ms.max(lag);
        }
        Ok(())
    }

    fn begin_stop(&mut self, sched: &Schedule<FlvFile>) -> Instant {
        if let Some(pacer) = self.pacer {
            let next = sched.next_due();
            pacer.record_stop(self.out, Instant::now(), COALESCE, next);
        }
        self.session.unpublish();
        self.pull_transmits();
        Instant::now() + STOP_FLUSH_TIMEOUT
    }

    async fn flush_best_effort(&mut self) {
        let deadline = Instant::now() + STOP_FLUSH_TIMEOUT;
        while !self.queue.is_empty() {
            tokio::select! {
                r = self.stream.writable() => {
                    if r.and_then(|()| self.write_some()).is_err() { return; }
                }
                _ = sleep_until(deadline) => return,
            }
        }
    }
}
