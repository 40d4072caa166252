//! The publish-side client session: one per outgoing TCP connection (a load generator, a
//! relay, tests).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::amf0::{self, Amf0Value};
use crate::chunk::{csid, message_type, ChunkEncoder, ChunkMessage, MAX_CHUNK_SIZE};
use crate::control::{Control, ControlMessage, Dispatch};
use crate::error::RtmpError;
use crate::handshake::ClientHandshake;

/// Transaction id of `connect`.
const TXN_CONNECT: f64 = 1.0;
/// Transaction id of `releaseStream`.
const TXN_RELEASE_STREAM: f64 = 2.0;
/// Transaction id of `FCPublish`.
const TXN_FC_PUBLISH: f64 = 3.0;
/// Transaction id of `createStream`.
const TXN_CREATE_STREAM: f64 = 4.0;
/// Transaction id of `publish`.
const TXN_PUBLISH: f64 = 5.0;
/// Transaction id of `FCUnpublish`.
const TXN_FC_UNPUBLISH: f64 = 6.0;
/// Transaction id of `deleteStream`.
const TXN_DELETE_STREAM: f64 = 7.0;

/// The `flashVer` the client announces (what encoders of the FMLE lineage send).
const FLASH_VERSION: &str = "FMLE/3.0 (compatible; tidegate)";

/// Client session settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Application name (`live` in `rtmp://host/live/key`).
    pub app: String,
    /// Publishing name; may carry a `?query` (a secret: never log it).
    pub stream_key: String,
    /// The URL announced in `connect` (`rtmp://host:1935/live`).
    pub tc_url: String,
    /// Chunk size announced with Set Chunk Size right after the handshake and used for
    /// everything sent afterwards (clamped to 1..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Deadline, from [`ClientSession::new`], for the handshake to finish and, from then
    /// on, for the server to start or refuse the publish.
    pub handshake_timeout: Duration,
    /// Enhanced RTMP: the codec FourCCs announced as `fourCcList` in `connect`
    /// (e.g. `["hvc1", "av01"]`); `None` announces nothing.
    pub enhanced_fourcc_list: Option<Vec<String>>,
    /// Seed for C1's filler bytes.
    pub seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            app: "live".into(),
            stream_key: String::new(),
            tc_url: "rtmp://127.0.0.1:1935/live".into(),
            chunk_size: 4096,
            handshake_timeout: Duration::from_secs(10),
            enhanced_fourcc_list: None,
            seed: 0x5EED,
        }
    }
}

/// What a [`ClientSession`] tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server accepted `connect`.
    Connected,
    /// The server answered `publish` with `NetStream.Publish.Start`: media may flow.
    PublishStarted {
        /// The message stream media goes on.
        stream_id: u32,
    },
    /// The server refused `connect`, `createStream` or `publish` (e.g.
    /// `NetStream.Publish.BadName`); a [`ClientEvent::Closed`] follows.
    PublishRejected {
        /// The status code (`NetStream.Publish.BadName`, `NetConnection.Connect.Rejected`,
        /// ...).
        code: String,
        /// The server's description.
        description: String,
    },
    /// Any other `onStatus` the server sent (e.g. `NetStream.Unpublish.Success` when the
    /// server ends the publish; [`ClientSession::is_publishing`] is then false).
    StatusMessage {
        /// The status code.
        code: String,
        /// `status`, `warning` or `error`.
        level: String,
        /// The server's description.
        description: String,
    },
    /// The session is over (unpublished, rejected or failed): flush
    /// [`ClientSession::poll_transmit`] and close the connection.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    /// `connect` sent.
    Connecting,
    /// `createStream` sent.
    CreatingStream,
    /// `publish` sent.
    PublishSent,
    Publishing,
    /// Unpublished, rejected, ended by the server or failed.
    Done,
}

/// The publisher side of one RTMP connection, without I/O.
///
/// Driver contract (one task owns the session):
/// 1. Open the TCP connection, create the session with [`ClientSession::new`] (it queues
///    C0+C1).
/// 2. Drain [`poll_transmit`](Self::poll_transmit) to the socket in order (the pieces are
///    small headers and zero-copy slices of media payloads: gather them into one
///    `write_vectored`), then [`poll_event`](Self::poll_event), after every call below.
/// 3. Whenever bytes arrive, append them to a `BytesMut` and call
///    [`handle_input`](Self::handle_input); it consumes whole messages and leaves a partial
///    one in the buffer.
/// 4. Re-arm one timer at [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it fires.
/// 5. After [`ClientEvent::PublishStarted`], hand in media with
///    [`send_video`](Self::send_video) / [`send_audio`](Self::send_audio) /
///    [`send_metadata`](Self::send_metadata) (FLV tag bodies, millisecond timestamps).
/// 6. To stop, call [`unpublish`](Self::unpublish), flush `poll_transmit` and close. On
///    [`ClientEvent::Closed`] or any error from `handle_*`, flush and close.
///
/// The session runs handshake → Set Chunk Size → `connect` → `releaseStream`, `FCPublish`,
/// `createStream` → `publish(stream_key, "live")` → `NetStream.Publish.Start`. It answers
/// pings, acknowledges per the server's window and echoes Set Peer Bandwidth with a Window
/// Acknowledgement Size.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    phase: Phase,
    handshake: ClientHandshake,
    deadline: Instant,
    control: Control,
    encoder: ChunkEncoder,
    /// Scratch for handshake bytes and small control payloads.
    scratch: BytesMut,
    out: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    failed: bool,
    closed_reported: bool,
    stream_id: Option<u32>,
    bytes_sent: u64,
}

fn string_prop(v: &Amf0Value, key: &str) -> String {
    v.get(key)
        .and_then(Amf0Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl ClientSession {
    /// A session for a connection opened at `now`; C0+C1 are queued for
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let (handshake, c0c1) = ClientHandshake::new(config.seed);
        let deadline = now.checked_add(config.handshake_timeout).unwrap_or(now);
        let mut out = VecDeque::new();
        out.push_back(c0c1.freeze());
        ClientSession {
            config,
            phase: Phase::Handshake,
            handshake,
            deadline,
            control: Control::client(),
            encoder: ChunkEncoder::new(),
            scratch: BytesMut::new(),
            out,
            events: VecDeque::new(),
            failed: false,
            closed_reported: false,
            stream_id: None,
            bytes_sent: 0,
        }
    }

    /// Feeds received bytes. Consumes every complete message; leaves a partial one in
    /// `data`. After an error the session is closed (and reports [`ClientEvent::Closed`]).
    pub fn handle_input(&mut self, now: Instant, data: &mut BytesMut) -> Result<(), RtmpError> {
        let _ = now;
        if self.failed {
            return Err(RtmpError::Closed);
        }
        let before = data.len();
        let res = self.process(data);
        self.control.add_received(before.saturating_sub(data.len()));
        match res {
            Ok(()) => {
                if let Some(ack) = self.control.poll_ack() {
                    self.send_control(ack);
                }
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Fires timers: past the deadline without a finished handshake, or without an answer
    /// to the publish, fails with [`RtmpError::HandshakeTimeout`] or
    /// [`RtmpError::PublishTimeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtmpError> {
        if self.failed {
            return Err(RtmpError::Closed);
        }
        if now < self.deadline {
            return Ok(());
        }
        match self.phase {
            Phase::Handshake => Err(self.fail(RtmpError::HandshakeTimeout)),
            Phase::Connecting | Phase::CreatingStream | Phase::PublishSent => {
                Err(self.fail(RtmpError::PublishTimeout))
            }
            Phase::Publishing | Phase::Done => Ok(()),
        }
    }

    /// The next piece to write to the socket, in order: handshake bytes, chunk headers and
    /// zero-copy slices of the payloads handed in.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let b = self.out.pop_front()?;
        self.bytes_sent = self.bytes_sent.saturating_add(b.len() as u64);
        Some(b)
    }

    /// Pieces waiting in [`poll_transmit`](Self::poll_transmit) (to size a vectored write).
    pub fn pending_transmits(&self) -> usize {
        self.out.len()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            _ if self.failed => None,
            Phase::Handshake | Phase::Connecting | Phase::CreatingStream | Phase::PublishSent => {
                Some(self.deadline)
            }
            Phase::Publishing | Phase::Done => None,
        }
    }

    /// Queues one video message (an FLV video tag body, as is) at `timestamp_ms`.
    /// [`RtmpError::NotPublishing`] before [`ClientEvent::PublishStarted`] or after the
    /// publish ended; [`RtmpError::MessageTooLarge`] above the chunk layer's limit.
    pub fn send_video(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let stream_id = self.publishing_stream()?;
        self.encoder.encode(
            &mut self.out,
            csid::VIDEO,
            timestamp_ms,
            message_type::VIDEO,
            stream_id,
            data,
        )
    }

    /// Queues one audio message (an FLV audio tag body, as is) at `timestamp_ms`; errors as
    /// [`send_video`](Self::send_video).
    pub fn send_audio(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let stream_id = self.publishing_stream()?;
        self.encoder.encode(
            &mut self.out,
            csid::AUDIO,
            timestamp_ms,
            message_type::AUDIO,
            stream_id,
            data,
        )
    }

    /// Queues `@setDataFrame onMetaData <data>` (an AMF0 object or ECMA array) at timestamp
    /// 0; errors as [`send_video`](Self::send_video).
    pub fn send_metadata(&mut self, data: &Amf0Value) -> Result<(), RtmpError> {
        let stream_id = self.publishing_stream()?;
        let payload = amf0::encode_all(&[
            Amf0Value::String("@setDataFrame".into()),
            Amf0Value::String("onMetaData".into()),
            data.clone(),
        ]);
        self.encoder.encode(
            &mut self.out,
            csid::STREAM,
            0,
            message_type::DATA_AMF0,
            stream_id,
            payload.freeze(),
        )
    }

    /// Whether media may be sent (the server said `NetStream.Publish.Start` and nothing has
    /// ended the publish since).
    pub fn is_publishing(&self) -> bool {
        self.phase == Phase::Publishing && !self.failed
    }

    /// The message stream the server gave us, once `createStream` succeeded.
    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    /// Stops publishing: queues `FCUnpublish` and `deleteStream` (if a stream was created)
    /// and reports [`ClientEvent::Closed`]. Idempotent.
    pub fn unpublish(&mut self) {
        if self.failed || self.phase == Phase::Done {
            return;
        }
        if let Some(id) = self.stream_id {
            let key = Amf0Value::String(self.config.stream_key.clone());
            self.send_command(
                csid::COMMAND,
                0,
                &[
                    Amf0Value::String("FCUnpublish".into()),
                    Amf0Value::Number(TXN_FC_UNPUBLISH),
                    Amf0Value::Null,
                    key,
                ],
            );
            self.send_command(
                csid::COMMAND,
                0,
                &[
                    Amf0Value::String("deleteStream".into()),
                    Amf0Value::Number(TXN_DELETE_STREAM),
                    Amf0Value::Null,
                    Amf0Value::Number(f64::from(id)),
                ],
            );
        }
        self.finish();
    }

    /// Bytes handed out by [`poll_transmit`](Self::poll_transmit) so far (handshake
    /// included).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Bytes consumed from the server so far (handshake included).
    pub fn bytes_received(&self) -> u64 {
        self.control.bytes_received()
    }

    fn publishing_stream(&self) -> Result<u32, RtmpError> {
        match self.stream_id {
            Some(id) if self.is_publishing() => Ok(id),
            _ => Err(RtmpError::NotPublishing),
        }
    }

    fn fail(&mut self, e: RtmpError) -> RtmpError {
        self.failed = true;
        self.finish();
        e
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        if !self.closed_reported {
            self.closed_reported = true;
            self.events.push_back(ClientEvent::Closed);
        }
    }

    fn process(&mut self, data: &mut BytesMut) -> Result<(), RtmpError> {
        if self.phase == Phase::Handshake {
            if !self.handshake.handle(data, &mut self.scratch)? {
                self.flush_scratch();
                return Ok(());
            }
            self.flush_scratch();
            self.after_handshake();
        }
        while let Some(msg) = self.control.read(data)? {
            match self.control.handle_message(msg)? {
                Dispatch::Handled => {}
                Dispatch::Reply(reply) => self.send_control(reply),
                Dispatch::Message(msg) => self.handle_message(&msg)?,
            }
        }
        Ok(())
    }

    fn flush_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.out.push_back(self.scratch.split().freeze());
        }
    }

    fn after_handshake(&mut self) {
        let chunk = self.config.chunk_size.clamp(1, MAX_CHUNK_SIZE);
        self.send_control(ControlMessage::SetChunkSize(chunk));
        self.encoder.set_chunk_size(chunk);
        let mut props = vec![
            ("app".into(), Amf0Value::String(self.config.app.clone())),
            ("type".into(), Amf0Value::String("nonprivate".into())),
            ("flashVer".into(), Amf0Value::String(FLASH_VERSION.into())),
            (
                "tcUrl".into(),
                Amf0Value::String(self.config.tc_url.clone()),
            ),
        ];
        if let Some(list) = &self.config.enhanced_fourcc_list {
            let items = list.iter().map(|f| Amf0Value::String(f.clone())).collect();
            props.push(("fourCcList".into(), Amf0Value::StrictArray(items)));
        }
        self.send_command(
            csid::COMMAND,
            0,
            &[
                Amf0Value::String("connect".into()),
                Amf0Value::Number(TXN_CONNECT),
                Amf0Value::Object(props),
            ],
        );
        self.phase = Phase::Connecting;
    }

    fn send_control(&mut self, m: ControlMessage) {
        self.scratch.put_slice(m.payload().as_slice());
        let payload = self.scratch.split().freeze();
        let sent = self
            .encoder
            .encode(&mut self.out, csid::CONTROL, 0, m.type_id(), 0, payload);
        debug_assert!(
            sent.is_ok(),
            "a control payload is at most 6 bytes: {sent:?}"
        );
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values).freeze();
        // A command too large for the chunk layer (a huge stream key) is dropped; the
        // publish then times out.
        let _ = self.encoder.encode(
            &mut self.out,
            csid,
            0,
            message_type::COMMAND_AMF0,
            stream_id,
            payload,
        );
    }

    fn handle_message(&mut self, msg: &ChunkMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            message_type::COMMAND_AMF0 | message_type::COMMAND_AMF3 => {
                let values = amf0::decode_all(msg.amf0_body())?;
                self.command(values);
            }
            // Audio/video/data (a publisher receives none that matter), shared objects and
            // unknown types.
            _ => {}
        }
        Ok(())
    }

    fn command(&mut self, values: Vec<Amf0Value>) {
        let mut it = values.into_iter();
        let Some(Amf0Value::String(name)) = it.next() else {
            return;
        };
        let txn = it.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let _object = it.next();
        let info = it.next().unwrap_or(Amf0Value::Null);
        match name.as_str() {
            "_result" if txn == TXN_CONNECT && self.phase == Phase::Connecting => {
                self.events.push_back(ClientEvent::Connected);
                let key = Amf0Value::String(self.config.stream_key.clone());
                for (cmd, t) in [
                    ("releaseStream", TXN_RELEASE_STREAM),
                    ("FCPublish", TXN_FC_PUBLISH),
                ] {
                    self.send_command(
                        csid::COMMAND,
                        0,
                        &[
                            Amf0Value::String(cmd.into()),
                            Amf0Value::Number(t),
                            Amf0Value::Null,
                            key.clone(),
                        ],
                    );
                }
                self.send_command(
                    csid::COMMAND,
                    0,
                    &[
                        Amf0Value::String("createStream".into()),
                        Amf0Value::Number(TXN_CREATE_STREAM),
                        Amf0Value::Null,
                    ],
                );
                self.phase = Phase::CreatingStream;
            }
            "_result" if txn == TXN_CREATE_STREAM && self.phase == Phase::CreatingStream => {
                let id = info
                    .as_number()
                    .filter(|n| *n >= 1.0 && *n <= f64::from(u32::MAX))
                    .map(|n| n as u32);
                let Some(id) = id else {
                    self.reject("NetStream.Create.Failed", "createStream gave no stream id");
                    return;
                };
                self.stream_id = Some(id);
                self.send_command(
                    csid::STREAM,
                    id,
                    &[
                        Amf0Value::String("publish".into()),
                        Amf0Value::Number(TXN_PUBLISH),
                        Amf0Value::Null,
                        Amf0Value::String(self.config.stream_key.clone()),
                        Amf0Value::String("live".into()),
                    ],
                );
                self.phase = Phase::PublishSent;
            }
            "_error"
                if (txn == TXN_CONNECT && self.phase == Phase::Connecting)
                    || (txn == TXN_CREATE_STREAM && self.phase == Phase::CreatingStream) =>
            {
                let code = string_prop(&info, "code");
                let description = string_prop(&info, "description");
                self.reject(&code, &description);
            }
            "onStatus" => self.on_status(&info),
            // Replies to releaseStream/FCPublish, onFCPublish, onBWDone and the like.
            _ => {}
        }
    }

    fn on_status(&mut self, info: &Amf0Value) {
        let code = string_prop(info, "code");
        let level = string_prop(info, "level");
        let description = string_prop(info, "description");
        if self.phase == Phase::PublishSent {
            if code == "NetStream.Publish.Start" {
                self.phase = Phase::Publishing;
                if let Some(stream_id) = self.stream_id {
                    self.events
                        .push_back(ClientEvent::PublishStarted { stream_id });
                }
                return;
            }
            if level == "error" {
                self.reject(&code, &description);
                return;
            }
        }
        let ended = self.phase == Phase::Publishing
            && (level == "error" || code == "NetStream.Unpublish.Success");
        self.events.push_back(ClientEvent::StatusMessage {
            code,
            level,
            description,
        });
        if ended {
            // The server ended the publish.
            self.finish();
        }
    }

    fn reject(&mut self, code: &str, description: &str) {
        self.events.push_back(ClientEvent::PublishRejected {
            code: code.to_owned(),
            description: description.to_owned(),
        });
        self.finish();
    }
}
