//! The publish-side server session: one per TCP connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::amf0::{self, Amf0Value};
use crate::chunk::{csid, message_type, ChunkMessage, ChunkWriter, ReaderLimits, MAX_CHUNK_SIZE};
use crate::control::{Control, ControlMessage, Dispatch};
use crate::error::RtmpError;
use crate::handshake::ServerHandshake;

/// Most message streams one connection may create (a publisher needs one).
pub const MAX_STREAMS_LIMIT: u32 = 64;

/// What a connection may hold in unfinished messages while it has no publish pending or
/// accepted: `connect`, `createStream` and `publish` are a few hundred bytes each, so 64 KiB
/// is generous for a real client and keeps an anonymous peer at tens of KB (the full
/// [`ReaderLimits::default`] allows an 8 MiB message and 32 MiB in progress).
pub const LIMITS_BEFORE_PUBLISH: ReaderLimits = ReaderLimits {
    max_message_size: 64 * 1024,
    max_pending_bytes: 64 * 1024,
};

/// Most bytes of replies that may wait in the session for the driver to write them. A driver
/// that writes after every input never gets near it (a publisher's replies are a few hundred
/// bytes; a 64 KiB read of ping requests yields 64 KiB of responses); a peer that provokes
/// replies and never reads them cannot make the session buffer more.
pub const MAX_PENDING_TRANSMIT_BYTES: usize = 256 * 1024;

/// An FLV tag header inside an aggregate message: type, size (24 bits), timestamp (24 bits
/// and an extension byte), stream id (24 bits).
const FLV_TAG_HEADER_LEN: usize = 11;
/// The previous-tag-size field after each tag of an aggregate message.
const FLV_PREVIOUS_TAG_SIZE_LEN: usize = 4;

/// What the server sends as `fmsVer` in the connect reply.
const FMS_VERSION: &str = "FMS/3,0,1,123";
/// The `capabilities` value of the connect reply.
const CAPABILITIES: f64 = 31.0;

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long a client has to finish the handshake (C0 to C2).
    pub handshake_timeout: Duration,
    /// Chunk size the server announces and uses for its own messages.
    pub chunk_size_out: u32,
    /// Window Acknowledgement Size (and peer bandwidth) the server announces.
    pub window_ack_size: u32,
    /// Most message streams a client may create with `createStream` (capped at
    /// [`MAX_STREAMS_LIMIT`]).
    pub max_streams: u32,
    /// Seed for the handshake's filler bytes (any value; a random one is nicer).
    pub seed: u64,
    /// Chunk reader limits until a publish is accepted on the connection
    /// (default [`LIMITS_BEFORE_PUBLISH`]).
    pub limits_before_publish: ReaderLimits,
    /// Chunk reader limits once a publish is accepted (default
    /// [`ReaderLimits::default`]).
    pub limits_publishing: ReaderLimits,
    /// Most bytes of replies waiting for [`ServerSession::poll_transmit`]; past it the
    /// session fails with [`RtmpError::TransmitBacklog`] (default
    /// [`MAX_PENDING_TRANSMIT_BYTES`]).
    pub max_pending_transmit: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            chunk_size_out: 4096,
            window_ack_size: 2_500_000,
            max_streams: 8,
            seed: 0x5EED,
            limits_before_publish: LIMITS_BEFORE_PUBLISH,
            limits_publishing: ReaderLimits::default(),
            max_pending_transmit: MAX_PENDING_TRANSMIT_BYTES,
        }
    }
}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client sent `connect` (already answered).
    Connect {
        /// The application name (`live` in `rtmp://host/live/key`).
        app: String,
        /// The URL the client says it connected to.
        tc_url: Option<String>,
    },
    /// The client wants to publish; answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`].
    PublishRequest {
        /// Message stream the client publishes on.
        stream_id: u32,
        /// The application name from `connect`.
        app: String,
        /// The publishing name without its `?query` (a secret: never log it).
        stream_key: String,
        /// What followed `?` in the publishing name, if anything.
        query: Option<String>,
        /// `live`, `record` or `append` (as sent).
        publish_type: String,
    },
    /// Stream metadata (`@setDataFrame onMetaData` or plain `onMetaData`).
    Metadata {
        /// Message stream it belongs to.
        stream_id: u32,
        /// The metadata object or ECMA array.
        data: Amf0Value,
    },
    /// One audio message (an FLV audio tag body).
    Audio {
        /// Message stream it belongs to.
        stream_id: u32,
        /// Milliseconds, 32-bit wrapping, as on the wire.
        timestamp: u32,
        /// The tag body.
        data: Bytes,
    },
    /// One video message (an FLV video tag body).
    Video {
        /// Message stream it belongs to.
        stream_id: u32,
        /// Milliseconds, 32-bit wrapping, as on the wire.
        timestamp: u32,
        /// The tag body.
        data: Bytes,
    },
    /// The client stopped publishing (FCUnpublish, closeStream or deleteStream) a stream
    /// that was publishing or awaiting an answer.
    Unpublish {
        /// The message stream.
        stream_id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishState {
    Idle,
    Pending,
    Publishing,
}

#[derive(Debug)]
struct Stream {
    id: u32,
    state: PublishState,
    name: String,
}

/// The server side of one RTMP connection (publish only), without I/O.
///
/// Driver contract (one task owns the session):
/// 1. Create it with [`ServerSession::new`] when the TCP connection is accepted.
/// 2. Whenever bytes arrive, append them to a `BytesMut` and call
///    [`handle_input`](Self::handle_input); it consumes whole messages and leaves a partial
///    one in the buffer (keep the buffer for the next read).
/// 3. After every call (input, timeout, accept/reject/end), drain
///    [`poll_transmit`](Self::poll_transmit) to the socket in order, then
///    [`poll_event`](Self::poll_event) until both return `None`.
/// 4. Re-arm one timer at [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it fires.
/// 5. Answer every [`Event::PublishRequest`] with [`accept_publish`](Self::accept_publish) or
///    [`reject_publish`](Self::reject_publish); media on that stream is dropped (and
///    counted) until accepted.
/// 6. On any error, flush what `poll_transmit` still returns (optional) and close the
///    connection; the session accepts no more input.
///
/// Memory a peer can make the session hold: until a publish is accepted,
/// [`SessionConfig::limits_before_publish`] (64 KiB of unfinished messages, and so at most
/// one 64 KiB chunk waiting in the driver's buffer); then
/// [`SessionConfig::limits_publishing`]. Replies waiting to be written are bounded by
/// [`SessionConfig::max_pending_transmit`]. A driver that bounds memory across connections
/// reads [`pending_bytes`](Self::pending_bytes) after each input.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    handshake: ServerHandshake,
    handshake_deadline: Instant,
    control: Control,
    writer: ChunkWriter,
    out: BytesMut,
    events: VecDeque<Event>,
    closed: bool,
    app: Option<String>,
    streams: Vec<Stream>,
    next_stream_id: u32,
    dropped_media: u64,
}

/// The properties of a status object (`onStatus`, `_error`, the connect reply's info).
fn status_properties(level: &str, code: &str, description: &str) -> Vec<(String, Amf0Value)> {
    vec![
        ("level".into(), Amf0Value::String(level.into())),
        ("code".into(), Amf0Value::String(code.into())),
        ("description".into(), Amf0Value::String(description.into())),
    ]
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(status_properties(level, code, description))
}

impl ServerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let handshake_deadline = now.checked_add(config.handshake_timeout).unwrap_or(now);
        ServerSession {
            handshake: ServerHandshake::new(config.seed),
            handshake_deadline,
            control: Control::server(config.window_ack_size),
            writer: ChunkWriter::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            closed: false,
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            dropped_media: 0,
            config,
        }
    }

    /// Feeds received bytes. Consumes every complete message; leaves a partial one in
    /// `data`. After an error the session is closed.
    pub fn handle_input(&mut self, now: Instant, data: &mut BytesMut) -> Result<(), RtmpError> {
        let _ = now;
        if self.closed {
            return Err(RtmpError::Closed);
        }
        let before = data.len();
        let res = self.process(data);
        self.control.add_received(before.saturating_sub(data.len()));
        if res.is_err() {
            self.closed = true;
        } else {
            self.maybe_ack();
        }
        res
    }

    /// Fires timers: after the handshake deadline without a finished handshake, returns
    /// `Err(RtmpError::HandshakeTimeout)` and closes the session.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtmpError> {
        if self.closed {
            return Err(RtmpError::Closed);
        }
        if !self.handshake.is_done() && now >= self.handshake_deadline {
            self.closed = true;
            return Err(RtmpError::HandshakeTimeout);
        }
        Ok(())
    }

    /// Bytes to write to the socket, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.handshake.is_done() {
            None
        } else {
            Some(self.handshake_deadline)
        }
    }

    /// Accepts a pending publish: sends Stream Begin and `NetStream.Publish.Start`. Media on
    /// the stream flows as events (including what arrived while the publish was pending).
    /// Does nothing if no publish is pending there.
    pub fn accept_publish(&mut self, stream_id: u32) {
        let Some(s) = self.stream_mut(stream_id) else {
            return;
        };
        if s.state != PublishState::Pending {
            return;
        }
        s.state = PublishState::Publishing;
        self.send_control(ControlMessage::StreamBegin(stream_id));
        self.send_on_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            "Start publishing",
        );
    }

    /// Refuses a pending publish with `onStatus` level `error` and the given code (e.g.
    /// `NetStream.Publish.BadName`); media events already queued for it must be ignored by
    /// the driver. Does nothing if no publish is pending there.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        let Some(s) = self.stream_mut(stream_id) else {
            return;
        };
        if s.state != PublishState::Pending {
            return;
        }
        s.state = PublishState::Idle;
        self.send_on_status(stream_id, "error", code, description);
    }

    /// Ends a publish from the server side (a kicked publisher): sends
    /// `NetStream.Unpublish.Success`; later media on the stream is dropped.
    pub fn end_publish(&mut self, stream_id: u32) {
        let Some(s) = self.stream_mut(stream_id) else {
            return;
        };
        if s.state == PublishState::Idle {
            return;
        }
        s.state = PublishState::Idle;
        self.send_on_status(
            stream_id,
            "status",
            "NetStream.Unpublish.Success",
            "Stop publishing",
        );
    }

    /// Bytes held in partially received messages (counted as their headers announced
    /// them), not counting the driver's own input buffer.
    pub fn pending_bytes(&self) -> usize {
        self.control.pending_bytes()
    }

    /// Bytes consumed from the peer so far (handshake included).
    pub fn bytes_received(&self) -> u64 {
        self.control.bytes_received()
    }

    /// Audio, video and metadata messages dropped because their stream was not publishing.
    pub fn dropped_media_messages(&self) -> u64 {
        self.dropped_media
    }

    /// Whether the handshake has completed.
    pub fn is_handshake_complete(&self) -> bool {
        self.handshake.is_done()
    }

    fn stream_mut(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|s| s.id == id)
    }

    /// Whether media on stream `id` is delivered: publishing, or waiting for the driver's
    /// answer. (Nothing behind a `publish` is parsed until it is answered, so media on a
    /// pending stream only comes from the same message, e.g. an aggregate; the driver ignores
    /// it if it refuses.)
    fn is_publishing(&self, id: u32) -> bool {
        self.streams.iter().any(|s| {
            s.id == id && matches!(s.state, PublishState::Publishing | PublishState::Pending)
        })
    }

    fn maybe_ack(&mut self) {
        if !self.handshake.is_done() {
            return;
        }
        if let Some(ack) = self.control.poll_ack() {
            self.send_control(ack);
        }
    }

    /// Whether a publish was accepted on any stream of the connection: only then do the
    /// reader limits rise to [`SessionConfig::limits_publishing`]. A publish that is only
    /// pending does not count: its key may be bad or the driver may refuse it.
    fn has_publish(&self) -> bool {
        self.streams
            .iter()
            .any(|s| s.state == PublishState::Publishing)
    }

    /// Whether a `publish` waits for the driver's answer. Until it is answered the session
    /// parses no more input: what the peer sent behind `publish` (media, or an attack that
    /// announces large messages) stays in the driver's buffer and is parsed under the limits
    /// the answer sets.
    pub fn awaiting_publish_answer(&self) -> bool {
        self.streams
            .iter()
            .any(|s| s.state == PublishState::Pending)
    }

    fn process(&mut self, data: &mut BytesMut) -> Result<(), RtmpError> {
        if !self.handshake.is_done() && !self.handshake.handle(data, &mut self.out)? {
            return Ok(());
        }
        loop {
            // Nothing behind a `publish` is parsed until the driver answers it (see
            // `awaiting_publish_answer`); the bytes stay in `data`.
            if self.awaiting_publish_answer() {
                return Ok(());
            }
            // The limits follow the publish state: an accepted publish raises them for the
            // messages behind it, a refusal or an unpublish lowers them again.
            let publishing = self.has_publish();
            self.control.set_limits(if publishing {
                self.config.limits_publishing
            } else {
                self.config.limits_before_publish
            });
            let msg = match self.control.read(data) {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(()),
                Err(RtmpError::MessageTooLarge { max, .. }) if !publishing => {
                    return Err(RtmpError::PrePublishBuffer(max as usize));
                }
                Err(RtmpError::TooMuchPending(max)) if !publishing => {
                    return Err(RtmpError::PrePublishBuffer(max));
                }
                Err(e) => return Err(e),
            };
            match self.control.handle_message(msg)? {
                Dispatch::Handled => {}
                Dispatch::Reply(reply) => self.send_control(reply),
                Dispatch::Message(msg) => self.handle_message(msg)?,
            }
            if self.out.len() > self.config.max_pending_transmit {
                return Err(RtmpError::TransmitBacklog(self.config.max_pending_transmit));
            }
        }
    }

    fn send_control(&mut self, m: ControlMessage) {
        let payload = m.payload();
        self.writer.write(
            &mut self.out,
            csid::CONTROL,
            0,
            m.type_id(),
            0,
            payload.as_slice(),
        );
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values);
        self.writer.write(
            &mut self.out,
            csid,
            0,
            message_type::COMMAND_AMF0,
            stream_id,
            &payload,
        );
    }

    fn send_on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.send_command(
            csid::STREAM,
            stream_id,
            &[
                Amf0Value::String("onStatus".into()),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                status_object(level, code, description),
            ],
        );
    }

    fn send_result(&mut self, txn: f64, values: Vec<Amf0Value>) {
        let mut v = vec![Amf0Value::String("_result".into()), Amf0Value::Number(txn)];
        v.extend(values);
        self.send_command(csid::COMMAND, 0, &v);
    }

    fn send_error(&mut self, txn: f64, description: &str) {
        self.send_command(
            csid::COMMAND,
            0,
            &[
                Amf0Value::String("_error".into()),
                Amf0Value::Number(txn),
                Amf0Value::Null,
                status_object("error", "NetConnection.Call.Failed", description),
            ],
        );
    }

    fn handle_message(&mut self, msg: ChunkMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            message_type::AUDIO | message_type::VIDEO => {
                self.media(msg.type_id, msg.stream_id, msg.timestamp, msg.payload);
            }
            message_type::DATA_AMF0 | message_type::DATA_AMF3 => {
                self.data_message(msg.stream_id, msg.amf0_body());
            }
            message_type::COMMAND_AMF0 | message_type::COMMAND_AMF3 => {
                let values = amf0::decode_all(msg.amf0_body())?;
                self.command(msg.stream_id, values)?;
            }
            message_type::AGGREGATE => self.aggregate(&msg),
            // Shared objects and unknown types: nothing to do for a publish-only server.
            _ => {}
        }
        Ok(())
    }

    fn media(&mut self, type_id: u8, stream_id: u32, timestamp: u32, data: Bytes) {
        if !self.is_publishing(stream_id) {
            self.dropped_media = self.dropped_media.saturating_add(1);
            return;
        }
        self.events.push_back(if type_id == message_type::AUDIO {
            Event::Audio {
                stream_id,
                timestamp,
                data,
            }
        } else {
            Event::Video {
                stream_id,
                timestamp,
                data,
            }
        });
    }

    fn data_message(&mut self, stream_id: u32, body: &[u8]) {
        // Undecodable or unrelated data messages are ignored: metadata is advisory.
        let Ok(values) = amf0::decode_all(body) else {
            return;
        };
        let mut it = values.into_iter();
        let mut first = it.next();
        if first.as_ref().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            first = it.next();
        }
        if first.as_ref().and_then(Amf0Value::as_str) != Some("onMetaData") {
            return;
        }
        let Some(data) = it.next().filter(|v| v.properties().is_some()) else {
            return;
        };
        if !self.is_publishing(stream_id) {
            self.dropped_media = self.dropped_media.saturating_add(1);
            return;
        }
        self.events.push_back(Event::Metadata { stream_id, data });
    }

    /// Splits an aggregate message (FLV tags: type, size, timestamp, stream id, body,
    /// previous tag size) into audio/video/metadata.
    fn aggregate(&mut self, msg: &ChunkMessage) {
        let p = &msg.payload;
        let mut pos = 0usize;
        let mut first_ts: Option<u32> = None;
        while let Some(h) = p
            .get(pos..)
            .and_then(<[u8]>::first_chunk::<FLV_TAG_HEADER_LEN>)
        {
            let [flags, s0, s1, s2, t1, t2, t3, t0, ..] = *h;
            let tag_type = flags & 0x1f;
            let size = usize::from(s0) << 16 | usize::from(s1) << 8 | usize::from(s2);
            let ts = u32::from_be_bytes([t0, t1, t2, t3]);
            let start = pos.saturating_add(FLV_TAG_HEADER_LEN);
            // A tag cut short ends the aggregate (what came before it was delivered).
            let Some(end) = start.checked_add(size).filter(|e| *e <= p.len()) else {
                return;
            };
            let base = *first_ts.get_or_insert(ts);
            let timestamp = msg.timestamp.wrapping_add(ts.wrapping_sub(base));
            match tag_type {
                message_type::AUDIO | message_type::VIDEO => {
                    self.media(tag_type, msg.stream_id, timestamp, p.slice(start..end));
                }
                message_type::DATA_AMF0 => {
                    let body = p.slice(start..end);
                    self.data_message(msg.stream_id, &body);
                }
                _ => {}
            }
            pos = end.saturating_add(FLV_PREVIOUS_TAG_SIZE_LEN);
        }
    }

    fn command(&mut self, stream_id: u32, values: Vec<Amf0Value>) -> Result<(), RtmpError> {
        let mut it = values.into_iter();
        let name = match it.next() {
            Some(Amf0Value::String(s)) => s,
            _ => return Err(RtmpError::Protocol("command without a name")),
        };
        let txn = it.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let object = it.next().unwrap_or(Amf0Value::Null);
        let args: Vec<Amf0Value> = it.collect();
        let arg_str = |i: usize| args.get(i).and_then(Amf0Value::as_str).map(str::to_owned);
        match name.as_str() {
            "connect" => self.connect(txn, &object)?,
            "releaseStream" => self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]),
            "FCPublish" => {
                let name = arg_str(0).unwrap_or_default();
                self.send_command(
                    csid::COMMAND,
                    0,
                    &[
                        Amf0Value::String("onFCPublish".into()),
                        Amf0Value::Number(0.0),
                        Amf0Value::Null,
                        Amf0Value::Object(vec![
                            (
                                "code".into(),
                                Amf0Value::String("NetStream.Publish.Start".into()),
                            ),
                            ("description".into(), Amf0Value::String(name)),
                        ]),
                    ],
                );
                self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]);
            }
            "createStream" => {
                let limit = self.config.max_streams.min(MAX_STREAMS_LIMIT) as usize;
                if self.streams.len() >= limit {
                    self.send_error(txn, "too many streams");
                } else {
                    let id = self.next_stream_id;
                    self.next_stream_id = self.next_stream_id.saturating_add(1);
                    self.streams.push(Stream {
                        id,
                        state: PublishState::Idle,
                        name: String::new(),
                    });
                    self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Number(f64::from(id))]);
                }
            }
            "publish" => self.publish(stream_id, arg_str(0), arg_str(1))?,
            "FCUnpublish" => {
                let name = arg_str(0).unwrap_or_default();
                let target = self
                    .streams
                    .iter()
                    .find(|s| s.state != PublishState::Idle && s.name == name)
                    .or_else(|| self.streams.iter().find(|s| s.state != PublishState::Idle))
                    .map(|s| s.id);
                if let Some(id) = target {
                    self.client_unpublish(id);
                }
                if txn != 0.0 {
                    self.send_result(txn, vec![Amf0Value::Null, Amf0Value::Undefined]);
                }
            }
            "closeStream" => self.client_unpublish(stream_id),
            "deleteStream" => {
                if let Some(id) = args.first().and_then(Amf0Value::as_number) {
                    if id >= 0.0 && id <= f64::from(u32::MAX) {
                        let id = id as u32;
                        self.client_unpublish(id);
                        self.streams.retain(|s| s.id != id);
                    }
                }
            }
            // Replies and probes publishers send that need no answer.
            "_result" | "_error" | "onStatus" | "onBWDone" | "_checkbw" | "getStreamLength" => {}
            _ => {
                if txn != 0.0 {
                    self.send_error(txn, "unknown command");
                }
            }
        }
        Ok(())
    }

    fn connect(&mut self, txn: f64, object: &Amf0Value) -> Result<(), RtmpError> {
        if self.app.is_some() {
            return Err(RtmpError::Protocol("second connect"));
        }
        let app = object
            .get("app")
            .and_then(Amf0Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let tc_url = object
            .get("tcUrl")
            .and_then(Amf0Value::as_str)
            .map(str::to_owned);
        let encoding = object
            .get("objectEncoding")
            .and_then(Amf0Value::as_number)
            .unwrap_or(0.0);
        let window = self.config.window_ack_size;
        self.send_control(ControlMessage::WindowAckSize(window));
        self.send_control(ControlMessage::SetPeerBandwidth(window));
        let chunk = self.config.chunk_size_out.clamp(1, MAX_CHUNK_SIZE);
        self.send_control(ControlMessage::SetChunkSize(chunk));
        self.writer.set_chunk_size(chunk);
        let mut props = vec![
            ("fmsVer".into(), Amf0Value::String(FMS_VERSION.into())),
            ("capabilities".into(), Amf0Value::Number(CAPABILITIES)),
        ];
        // Enhanced RTMP: echo the client's codec list to say we accept those codecs.
        if let Some(list) = object.get("fourCcList") {
            props.push(("fourCcList".into(), list.clone()));
        }
        let mut info = status_properties(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        info.push(("objectEncoding".into(), Amf0Value::Number(encoding)));
        self.send_result(txn, vec![Amf0Value::Object(props), Amf0Value::Object(info)]);
        self.app = Some(app.clone());
        self.events.push_back(Event::Connect { app, tc_url });
        Ok(())
    }

    fn publish(
        &mut self,
        stream_id: u32,
        name: Option<String>,
        publish_type: Option<String>,
    ) -> Result<(), RtmpError> {
        let Some(app) = self.app.clone() else {
            return Err(RtmpError::Protocol("publish before connect"));
        };
        if stream_id == 0 {
            return Err(RtmpError::Protocol("publish on stream 0"));
        }
        if self.stream_mut(stream_id).is_none() {
            // Lenient: a client that publishes on a stream id it never created.
            let limit = self.config.max_streams.min(MAX_STREAMS_LIMIT) as usize;
            if self.streams.len() >= limit {
                return Err(RtmpError::Protocol("too many streams"));
            }
            self.streams.push(Stream {
                id: stream_id,
                state: PublishState::Idle,
                name: String::new(),
            });
        }
        let name = name.unwrap_or_default();
        let Some(stream) = self.stream_mut(stream_id) else {
            return Ok(());
        };
        if stream.state != PublishState::Idle {
            self.send_on_status(
                stream_id,
                "error",
                "NetStream.Publish.BadName",
                "Stream already publishing",
            );
            return Ok(());
        }
        stream.state = PublishState::Pending;
        stream.name = name.clone();
        let (stream_key, query) = match name.split_once('?') {
            Some((k, q)) => (k.to_owned(), Some(q.to_owned())),
            None => (name, None),
        };
        self.events.push_back(Event::PublishRequest {
            stream_id,
            app,
            stream_key,
            query,
            publish_type: publish_type.unwrap_or_else(|| "live".into()),
        });
        Ok(())
    }

    fn client_unpublish(&mut self, stream_id: u32) {
        if let Some(s) = self.stream_mut(stream_id) {
            if s.state != PublishState::Idle {
                s.state = PublishState::Idle;
                self.events.push_back(Event::Unpublish { stream_id });
            }
        }
    }
}
