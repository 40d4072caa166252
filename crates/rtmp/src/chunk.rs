//! The chunk stream: reassembling messages from chunks ([`ChunkReader`]) and cutting
//! messages into chunks ([`ChunkWriter`], copying, for the server's small replies;
//! [`ChunkEncoder`], zero-copy with compressed headers, for a publisher's media).
//!
//! The reader is lenient where librtmp-based publishers are sloppy (compressed headers on a
//! chunk stream never seen before, extended timestamps not repeated on continuation chunks)
//! and strict where memory is at stake (every limit below).

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::RtmpError;

/// Largest message accepted. The 24-bit length field allows just under 16 MiB; a keyframe
/// of a 50 Mbit/s 4K stream is a few MiB, so 8 MiB leaves room and halves the worst case
/// a hostile peer can make us allocate per message.
pub const MAX_MESSAGE_SIZE: u32 = 8 * 1024 * 1024;
/// Largest chunk size a peer may set (the spec allows 2^31-1; nobody needs that much).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Chunk size both directions start with (RTMP spec).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Most chunk streams whose headers are cached per connection (publishers use about 5).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Most bytes held in partially received messages across all chunk streams.
pub const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;
/// A message that fits in one chunk and is smaller than this is copied out of the input
/// buffer instead of sliced from it: a slice would keep the caller's whole read buffer
/// (typically 64 KiB) alive for as long as the frame lives — a segment's duration for audio
/// frames of a few hundred bytes — and the next read would need a fresh buffer. Larger
/// payloads are sliced (they make up most of the buffer they pin).
pub const COPY_BELOW: usize = 16 * 1024;

/// The memory limits a [`ChunkReader`] enforces; the session lowers them for a peer that is
/// not (yet) a publisher ([`crate::session::LIMITS_BEFORE_PUBLISH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest message accepted (bytes, as announced in the header).
    pub max_message_size: u32,
    /// Most bytes held in partially received messages across all chunk streams (counted as
    /// announced, since the assembly buffer is sized by the announcement).
    pub max_pending_bytes: usize,
}

impl Default for ReaderLimits {
    /// [`MAX_MESSAGE_SIZE`] and [`MAX_PENDING_BYTES`].
    fn default() -> Self {
        ReaderLimits {
            max_message_size: MAX_MESSAGE_SIZE,
            max_pending_bytes: MAX_PENDING_BYTES,
        }
    }
}

/// The timestamp field value that announces an extended timestamp.
const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;

/// RTMP message type ids.
pub mod message_type {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (protocol control).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (protocol control).
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3 encoding.
    pub const DATA_AMF3: u8 = 15;
    /// Command message, AMF3 encoding.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 encoding.
    pub const DATA_AMF0: u8 = 18;
    /// Command message, AMF0 encoding.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message (a run of FLV tags).
    pub const AGGREGATE: u8 = 22;
}

/// The chunk streams our sessions send on (the choice is the sender's; these are ffmpeg's).
pub(crate) mod csid {
    /// Protocol control and User Control messages (fixed by the spec).
    pub const CONTROL: u32 = 2;
    /// NetConnection commands and their replies (connect, createStream, ...).
    pub const COMMAND: u32 = 3;
    /// Audio.
    pub const AUDIO: u32 = 4;
    /// NetStream commands and status messages (publish, onStatus) and data messages.
    pub const STREAM: u32 = 5;
    /// Video.
    pub const VIDEO: u32 = 6;
}

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMessage {
    /// The chunk stream it arrived on.
    pub chunk_stream_id: u32,
    /// Timestamp in milliseconds as on the wire (32-bit, wrapping; deltas accumulated).
    pub timestamp: u32,
    /// Message type id (see [`message_type`]).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

impl ChunkMessage {
    /// The AMF0 values of a command or data message: AMF3 command and data messages from
    /// RTMP publishers are AMF0 behind one format byte (0), which this skips.
    pub(crate) fn amf0_body(&self) -> &[u8] {
        let amf3 = matches!(
            self.type_id,
            message_type::COMMAND_AMF3 | message_type::DATA_AMF3
        );
        match self.payload.split_first() {
            Some((0, rest)) if amf3 => rest,
            _ => &self.payload,
        }
    }
}

#[derive(Debug, Default)]
struct ChunkStreamState {
    /// Timestamp of the current (or last) message.
    timestamp: u32,
    /// Last timestamp field read: absolute after fmt 0, a delta after fmt 1/2.
    ts_field: u32,
    /// Whether the last header carried an extended timestamp.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Bytes of the current message received so far (0: no message in progress).
    received: u32,
    /// Assembly buffer for a message spanning several chunks.
    partial: Option<BytesMut>,
}

/// The per-chunk-stream header cache: a short list searched linearly (publishers use about
/// five chunk streams, at most [`MAX_CHUNK_STREAMS`] are allowed), which is cheaper per
/// chunk than hashing the chunk stream id.
#[derive(Debug, Default)]
struct StreamTable(Vec<(u32, ChunkStreamState)>);

impl StreamTable {
    fn get(&self, csid: u32) -> Option<&ChunkStreamState> {
        self.0.iter().find(|(id, _)| *id == csid).map(|(_, st)| st)
    }

    fn get_mut(&mut self, csid: u32) -> Option<&mut ChunkStreamState> {
        self.0
            .iter_mut()
            .find(|(id, _)| *id == csid)
            .map(|(_, st)| st)
    }

    /// The state of `csid`, added if new (always `Some`).
    fn get_or_insert(&mut self, csid: u32) -> Option<&mut ChunkStreamState> {
        match self.0.iter().position(|(id, _)| *id == csid) {
            Some(at) => self.0.get_mut(at),
            None => {
                self.0.push((csid, ChunkStreamState::default()));
                self.0.last_mut()
            }
        }
        .map(|(_, st)| st)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Reassembles messages from the chunk stream.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: u32,
    streams: StreamTable,
    pending_bytes: usize,
    limits: ReaderLimits,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

struct Header {
    fmt: u8,
    csid: u32,
    len: usize,
    ts_field: Option<u32>,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
    extended: bool,
}

fn be24([a, b, c]: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, a, b, c])
}

/// The 4-byte extended timestamp at the front of `rest`, if all of it is there.
fn extended_timestamp(rest: &[u8]) -> Option<u32> {
    rest.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

impl ChunkReader {
    /// A reader with the default chunk size of 128.
    pub fn new() -> Self {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: StreamTable::default(),
            pending_bytes: 0,
            limits: ReaderLimits::default(),
        }
    }

    /// Changes the limits in force (capped at [`MAX_MESSAGE_SIZE`] and
    /// [`MAX_PENDING_BYTES`]). Lowering them below what is already held is allowed: the next
    /// [`read`](Self::read) then fails with [`RtmpError::TooMuchPending`].
    pub fn set_limits(&mut self, limits: ReaderLimits) {
        self.limits = ReaderLimits {
            max_message_size: limits.max_message_size.min(MAX_MESSAGE_SIZE),
            max_pending_bytes: limits.max_pending_bytes.min(MAX_PENDING_BYTES),
        };
    }

    /// The limits in force.
    pub fn limits(&self) -> ReaderLimits {
        self.limits
    }

    /// Applies a Set Chunk Size from the peer: rejects 0, the high bit and sizes above
    /// [`MAX_CHUNK_SIZE`].
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size & 0x8000_0000 != 0 || size > MAX_CHUNK_SIZE {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// The chunk size in force.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies an Abort Message: drops the partial message on `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(st) = self.streams.get_mut(csid) {
            if st.partial.take().is_some() {
                self.pending_bytes = self.pending_bytes.saturating_sub(st.length as usize);
            }
            st.received = 0;
        }
    }

    /// Bytes held in partially received messages.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Parses the chunk header at the front of `buf` without consuming it (`Ok(None)`
    /// until all of it is there).
    fn peek_header(&self, buf: &[u8]) -> Result<Option<Header>, RtmpError> {
        let Some((&b0, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        // Basic header: the chunk stream id in 6 bits, or in 1 or 2 more bytes.
        let (csid, rest) = match b0 & 0x3f {
            0 => match rest.split_first() {
                Some((&b1, rest)) => (64 + u32::from(b1), rest),
                None => return Ok(None),
            },
            1 => match rest.split_first_chunk::<2>() {
                Some((&[b1, b2], rest)) => (64 + u32::from(b1) + 256 * u32::from(b2), rest),
                None => return Ok(None),
            },
            n => (u32::from(n), rest),
        };
        let mut h = Header {
            fmt,
            csid,
            len: 0,
            ts_field: None,
            length: None,
            type_id: None,
            stream_id: None,
            extended: false,
        };
        // Message header: 11, 7, 3 or 0 bytes by format.
        let rest = match fmt {
            0 => {
                let Some((mh, rest)) = rest.split_first_chunk::<11>() else {
                    return Ok(None);
                };
                let [t0, t1, t2, l0, l1, l2, type_id, s0, s1, s2, s3] = *mh;
                h.ts_field = Some(be24([t0, t1, t2]));
                h.length = Some(be24([l0, l1, l2]));
                h.type_id = Some(type_id);
                h.stream_id = Some(u32::from_le_bytes([s0, s1, s2, s3]));
                rest
            }
            1 => {
                let Some((mh, rest)) = rest.split_first_chunk::<7>() else {
                    return Ok(None);
                };
                let [t0, t1, t2, l0, l1, l2, type_id] = *mh;
                h.ts_field = Some(be24([t0, t1, t2]));
                h.length = Some(be24([l0, l1, l2]));
                h.type_id = Some(type_id);
                rest
            }
            2 => {
                let Some((mh, rest)) = rest.split_first_chunk::<3>() else {
                    return Ok(None);
                };
                h.ts_field = Some(be24(*mh));
                rest
            }
            _ => rest,
        };
        h.extended = h.ts_field == Some(EXTENDED_TIMESTAMP);
        let mut len = buf.len() - rest.len();
        if h.extended {
            let Some(ts) = extended_timestamp(rest) else {
                return Ok(None);
            };
            h.ts_field = Some(ts);
            len += 4;
        } else if fmt == 3 {
            if let Some(prev) = self.streams.get(csid) {
                if prev.extended {
                    // The spec (and ffmpeg, FMS) repeat the extended timestamp on type-3
                    // chunks; some clients do not. Consume the 4 bytes only if they match.
                    let Some(ts) = extended_timestamp(rest) else {
                        return Ok(None);
                    };
                    if ts == prev.ts_field {
                        len += 4;
                        h.extended = true;
                    }
                }
            }
        }
        h.len = len;
        Ok(Some(h))
    }

    /// Reads chunks from the front of `buf` until one message is complete (returned) or
    /// the data runs out (`Ok(None)`; an incomplete chunk stays in `buf`).
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<ChunkMessage>, RtmpError> {
        let ReaderLimits {
            max_message_size,
            max_pending_bytes,
        } = self.limits;
        loop {
            // Limits may have been lowered while messages were in progress.
            if self.pending_bytes > max_pending_bytes {
                return Err(RtmpError::TooMuchPending(max_pending_bytes));
            }
            let Some(h) = self.peek_header(buf)? else {
                return Ok(None);
            };
            let known = self.streams.get(h.csid).is_some();
            if !known && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(RtmpError::TooManyChunkStreams(MAX_CHUNK_STREAMS));
            }
            let prev = self.streams.get(h.csid);
            let in_progress = prev.is_some_and(|p| p.received > 0);
            let starts_message = h.fmt <= 2 || !in_progress;

            // The header this chunk establishes (computed before committing anything).
            let (timestamp, ts_field, length, type_id, stream_id, received) = {
                let zero = ChunkStreamState::default();
                let p = prev.unwrap_or(&zero);
                if starts_message {
                    let ts_field = h.ts_field.unwrap_or(p.ts_field);
                    let timestamp = if h.fmt == 0 {
                        ts_field
                    } else {
                        p.timestamp.wrapping_add(ts_field)
                    };
                    let length = h.length.unwrap_or(p.length);
                    let type_id = h.type_id.unwrap_or(p.type_id);
                    // librtmp sends compressed headers on fresh chunk streams: media and
                    // data then belong to stream 1, control and commands to stream 0.
                    let stream_id = h.stream_id.unwrap_or(if known {
                        p.stream_id
                    } else {
                        default_stream_id(type_id)
                    });
                    (timestamp, ts_field, length, type_id, stream_id, 0)
                } else {
                    (
                        p.timestamp,
                        p.ts_field,
                        p.length,
                        p.type_id,
                        p.stream_id,
                        p.received,
                    )
                }
            };
            if length > max_message_size {
                return Err(RtmpError::MessageTooLarge {
                    len: length,
                    max: max_message_size,
                });
            }
            let remaining = length.saturating_sub(received);
            let payload_len = remaining.min(self.chunk_size) as usize;
            if buf.len() < h.len.saturating_add(payload_len) {
                return Ok(None);
            }
            let single = starts_message && payload_len as u32 == length;
            if !single && starts_message {
                // A header interrupting an unfinished message frees that message's bytes.
                let freed = if in_progress {
                    prev.map_or(0, |p| p.length as usize)
                } else {
                    0
                };
                let new_total = self
                    .pending_bytes
                    .saturating_sub(freed)
                    .saturating_add(length as usize);
                if new_total > max_pending_bytes {
                    return Err(RtmpError::TooMuchPending(max_pending_bytes));
                }
            }

            // Commit.
            let Some(st) = self.streams.get_or_insert(h.csid) else {
                return Err(RtmpError::internal("chunk stream missing after insertion"));
            };
            if starts_message && st.partial.take().is_some() {
                // A new header interrupted a message: drop the unfinished one.
                self.pending_bytes = self.pending_bytes.saturating_sub(st.length as usize);
            }
            st.timestamp = timestamp;
            st.ts_field = ts_field;
            st.extended = h.extended;
            st.length = length;
            st.type_id = type_id;
            st.stream_id = stream_id;
            buf.advance(h.len);
            if single {
                st.received = 0;
                let payload = buf.split_to(payload_len);
                let payload = if payload_len < COPY_BELOW {
                    Bytes::copy_from_slice(&payload)
                } else {
                    payload.freeze()
                };
                return Ok(Some(ChunkMessage {
                    chunk_stream_id: h.csid,
                    timestamp,
                    type_id,
                    stream_id,
                    payload,
                }));
            }
            // `buf` holds the whole chunk: checked above before committing.
            let Some(chunk) = buf.get(..payload_len) else {
                return Err(RtmpError::internal("chunk shorter than checked"));
            };
            let mut partial = match st.partial.take() {
                Some(p) => p,
                None => {
                    self.pending_bytes = self.pending_bytes.saturating_add(length as usize);
                    BytesMut::with_capacity(length as usize)
                }
            };
            partial.extend_from_slice(chunk);
            buf.advance(payload_len);
            st.received = received.saturating_add(payload_len as u32);
            if st.received >= length {
                st.received = 0;
                self.pending_bytes = self.pending_bytes.saturating_sub(length as usize);
                return Ok(Some(ChunkMessage {
                    chunk_stream_id: h.csid,
                    timestamp,
                    type_id,
                    stream_id,
                    payload: partial.freeze(),
                }));
            }
            st.partial = Some(partial);
        }
    }
}

fn default_stream_id(type_id: u8) -> u32 {
    match type_id {
        message_type::AUDIO
        | message_type::VIDEO
        | message_type::DATA_AMF0
        | message_type::DATA_AMF3
        | message_type::AGGREGATE => 1,
        _ => 0,
    }
}

/// Cuts messages into chunks (always a type-0 header, then type-3 continuations).
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// A writer with the default chunk size of 128.
    pub fn new() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Changes the outgoing chunk size (after announcing it with Set Chunk Size). Values
    /// outside 1..=[`MAX_CHUNK_SIZE`] are clamped.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// The outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    fn basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
        match csid {
            2..=63 => out.put_u8((fmt << 6) | csid as u8),
            64..=319 => {
                out.put_u8(fmt << 6);
                out.put_u8((csid - 64) as u8);
            }
            _ => {
                let v = csid.clamp(64, 65_599) - 64;
                out.put_u8((fmt << 6) | 1);
                out.put_u8((v & 0xff) as u8);
                out.put_u8((v >> 8) as u8);
            }
        }
    }

    /// Appends `payload` as one message to `out`.
    pub fn write(
        &self,
        out: &mut BytesMut,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        let extended = timestamp >= EXTENDED_TIMESTAMP;
        Self::basic_header(out, 0, csid);
        let ts = if extended {
            EXTENDED_TIMESTAMP
        } else {
            timestamp
        };
        out.put_slice(&ts.to_be_bytes()[1..]);
        // The server's replies are small: far below the 24-bit length field's limit.
        debug_assert!(payload.len() <= 0x00FF_FFFF, "{} bytes", payload.len());
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX) & 0x00FF_FFFF;
        out.put_slice(&len.to_be_bytes()[1..]);
        out.put_u8(type_id);
        out.put_u32_le(stream_id);
        if extended {
            out.put_u32(timestamp);
        }
        let mut chunks = payload.chunks(self.chunk_size.max(1) as usize);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for chunk in chunks {
            Self::basic_header(out, 3, csid);
            if extended {
                out.put_u32(timestamp);
            }
            out.put_slice(chunk);
        }
    }
}

/// Bytes reserved at a time for the chunk headers a [`ChunkEncoder`] writes; headers are
/// cut from this arena, so a 4 KiB block serves a few hundred chunks with one allocation.
const HEADER_ARENA: usize = 4096;
/// Longest chunk header: 3-byte basic header, 11-byte message header, extended timestamp.
const MAX_HEADER_LEN: usize = 18;

/// What a [`ChunkEncoder`] remembers of the last message on one chunk stream.
#[derive(Debug, Clone, Copy)]
struct EncoderStream {
    csid: u32,
    timestamp: u32,
    stream_id: u32,
}

/// Cuts messages into chunks without copying their payloads, the way ffmpeg's publisher
/// does: the first message on a chunk stream (or one whose message stream changes or whose
/// timestamp goes back) gets a type-0 header, later ones a type-1 header with the timestamp
/// delta, and every continuation chunk a type-3 header (repeating the extended timestamp,
/// as the spec and ffmpeg do, when the timestamp field is at least `0xFFFFFF`).
///
/// [`encode`](Self::encode) appends to `out` a small header [`Bytes`] followed by a
/// [`Bytes::slice`] of the payload for every chunk, ready for a vectored write.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: Vec<EncoderStream>,
    headers: BytesMut,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder with the default chunk size of 128.
    pub fn new() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            headers: BytesMut::new(),
        }
    }

    /// Changes the outgoing chunk size (after announcing it with Set Chunk Size). Values
    /// outside 1..=[`MAX_CHUNK_SIZE`] are clamped.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// The outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Room for one more header in the arena.
    fn header_buf(&mut self) -> &mut BytesMut {
        if self.headers.capacity() < MAX_HEADER_LEN {
            self.headers.reserve(HEADER_ARENA);
        }
        &mut self.headers
    }

    /// Appends `payload` as one message to `out`: header and payload pieces, in order.
    /// Fails only for a payload above [`MAX_MESSAGE_SIZE`] (nothing is appended then).
    pub fn encode(
        &mut self,
        out: &mut VecDeque<Bytes>,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: Bytes,
    ) -> Result<(), RtmpError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_MESSAGE_SIZE)
            .ok_or(RtmpError::MessageTooLarge {
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                max: MAX_MESSAGE_SIZE,
            })?;
        let prev = self.streams.iter_mut().find(|s| s.csid == csid);
        let (fmt, ts_field) = match prev {
            Some(p) if p.stream_id == stream_id && timestamp >= p.timestamp => {
                let delta = timestamp - p.timestamp;
                p.timestamp = timestamp;
                (1u8, delta)
            }
            Some(p) => {
                p.timestamp = timestamp;
                p.stream_id = stream_id;
                (0u8, timestamp)
            }
            None => {
                self.streams.push(EncoderStream {
                    csid,
                    timestamp,
                    stream_id,
                });
                (0u8, timestamp)
            }
        };
        let extended = ts_field >= EXTENDED_TIMESTAMP;
        let hb = self.header_buf();
        ChunkWriter::basic_header(hb, fmt, csid);
        let ts3 = ts_field.min(EXTENDED_TIMESTAMP);
        hb.put_slice(&ts3.to_be_bytes()[1..]);
        hb.put_slice(&len.to_be_bytes()[1..]);
        hb.put_u8(type_id);
        if fmt == 0 {
            hb.put_u32_le(stream_id);
        }
        if extended {
            hb.put_u32(ts_field);
        }
        out.push_back(hb.split().freeze());
        let size = self.chunk_size.max(1) as usize;
        let total = payload.len();
        let mut pos = 0usize;
        loop {
            let end = pos.saturating_add(size).min(total);
            if end > pos {
                out.push_back(payload.slice(pos..end));
            }
            pos = end;
            if pos >= total {
                break;
            }
            let hb = self.header_buf();
            ChunkWriter::basic_header(hb, 3, csid);
            if extended {
                hb.put_u32(ts_field);
            }
            out.push_back(hb.split().freeze());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn read_all(reader: &mut ChunkReader, buf: &mut BytesMut) -> Vec<ChunkMessage> {
        let mut out = Vec::new();
        while let Some(m) = reader.read(buf).unwrap() {
            out.push(m);
        }
        out
    }

    fn msg(csid: u32, ts: u32, ty: u8, sid: u32, payload: &[u8]) -> ChunkMessage {
        ChunkMessage {
            chunk_stream_id: csid,
            timestamp: ts,
            type_id: ty,
            stream_id: sid,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// fmt 0, then fmt 1 (delta 40, new length), fmt 2 (delta 20), fmt 3 (new message,
    /// same delta 20), all on chunk stream 4.
    const ALL_FOUR: &str = "
        04 000064 000002 08 01000000 aabb
        44 000028 000001 09 cc
        84 000014 dd
        c4 ee";

    #[test]
    fn four_header_types_byte_exact() {
        let mut buf = BytesMut::from(&hex(ALL_FOUR)[..]);
        let mut r = ChunkReader::new();
        let msgs = read_all(&mut r, &mut buf);
        assert_eq!(
            msgs,
            vec![
                msg(4, 100, 8, 1, &[0xaa, 0xbb]),
                msg(4, 140, 9, 1, &[0xcc]),
                msg(4, 160, 9, 1, &[0xdd]),
                msg(4, 180, 9, 1, &[0xee]),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn two_and_three_byte_chunk_stream_ids() {
        let bytes = hex("
            00 00 000001 000001 14 00000000 01
            01 0001 000001 000001 14 00000000 02
            01 ffff 000001 000001 14 00000000 03");
        let mut buf = BytesMut::from(&bytes[..]);
        let msgs = read_all(&mut ChunkReader::new(), &mut buf);
        let ids: Vec<u32> = msgs.iter().map(|m| m.chunk_stream_id).collect();
        assert_eq!(ids, vec![64, 64 + 256, 65_599]);
        // the writer produces the same basic headers
        let mut out = BytesMut::new();
        let w = ChunkWriter::new();
        w.write(&mut out, 64, 1, 0x14, 0, &[1]);
        w.write(&mut out, 320, 1, 0x14, 0, &[2]);
        w.write(&mut out, 65_599, 1, 0x14, 0, &[3]);
        assert_eq!(out.as_ref(), &bytes[..]);
    }

    #[test]
    fn extended_timestamp_repeated_and_not_repeated() {
        // 200-byte message with ts 0x01000000, chunk size 128: the continuation chunk
        // repeats the extended timestamp (spec) ...
        let payload: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut repeated = hex("06 ffffff 0000c8 09 01000000 01000000");
        repeated.extend_from_slice(&payload[..128]);
        repeated.extend_from_slice(&hex("c6 01000000"));
        repeated.extend_from_slice(&payload[128..]);
        let mut buf = BytesMut::from(&repeated[..]);
        let msgs = read_all(&mut ChunkReader::new(), &mut buf);
        assert_eq!(msgs, vec![msg(6, 0x0100_0000, 9, 1, &payload)]);
        // ... or does not (tolerated).
        let mut bare = hex("06 ffffff 0000c8 09 01000000 01000000");
        bare.extend_from_slice(&payload[..128]);
        bare.push(0xc6);
        bare.extend_from_slice(&payload[128..]);
        let mut buf = BytesMut::from(&bare[..]);
        let msgs = read_all(&mut ChunkReader::new(), &mut buf);
        assert_eq!(msgs, vec![msg(6, 0x0100_0000, 9, 1, &payload)]);
        // the writer repeats it
        let mut out = BytesMut::new();
        ChunkWriter::new().write(&mut out, 6, 0x0100_0000, 9, 1, &payload);
        assert_eq!(out.as_ref(), &repeated[..]);
    }

    #[test]
    fn extended_delta_on_fmt1() {
        let bytes = hex("04 000010 000001 08 01000000 aa 44 ffffff 000001 08 01000000 bb");
        let msgs = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&bytes[..]));
        assert_eq!(msgs[1].timestamp, 16 + 0x0100_0000);
    }

    #[test]
    fn timestamps_wrap() {
        let bytes = hex("04 ffffff 000001 08 01000000 fffffff0 aa 84 000020 bb");
        let msgs = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&bytes[..]));
        assert_eq!(msgs[1].timestamp, 0x10);
    }

    #[test]
    fn librtmp_fmt1_on_fresh_chunk_stream() {
        // fmt 1 on never-seen chunk stream 4: timestamp delta from 0, stream id 1 (media).
        let bytes = hex("44 000050 000002 09 1700 48 000000 000001 14 05");
        let msgs = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&bytes[..]));
        assert_eq!(
            msgs,
            vec![msg(4, 80, 9, 1, &[0x17, 0]), msg(8, 0, 0x14, 0, &[5])]
        );
    }

    #[test]
    fn fmt3_on_fresh_stream_is_an_empty_message() {
        let msgs = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&[0xc5u8][..]));
        assert_eq!(msgs, vec![msg(5, 0, 0, 0, &[])]);
    }

    #[test]
    fn interleaved_streams() {
        // 200-byte video on csid 6 and 150-byte audio on csid 4, chunks interleaved.
        let v: Vec<u8> = vec![0x11; 200];
        let a: Vec<u8> = vec![0x22; 150];
        let mut b = hex("06 000000 0000c8 09 01000000");
        b.extend_from_slice(&v[..128]);
        b.extend_from_slice(&hex("04 000000 000096 08 01000000"));
        b.extend_from_slice(&a[..128]);
        b.push(0xc6);
        b.extend_from_slice(&v[128..]);
        b.push(0xc4);
        b.extend_from_slice(&a[128..]);
        let msgs = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&b[..]));
        assert_eq!(msgs, vec![msg(6, 0, 9, 1, &v), msg(4, 0, 8, 1, &a)]);
    }

    #[test]
    fn split_at_every_byte_gives_same_messages() {
        let mut b = hex(ALL_FOUR);
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        b.extend_from_slice(&hex("06 ffffff 00012c 09 01000000 01000000"));
        b.extend_from_slice(&payload[..128]);
        b.extend_from_slice(&hex("c6 01000000"));
        b.extend_from_slice(&payload[128..256]);
        b.push(0xc6);
        b.extend_from_slice(&payload[256..]);
        let expected = read_all(&mut ChunkReader::new(), &mut BytesMut::from(&b[..]));
        assert_eq!(expected.len(), 5);
        for split in 0..=b.len() {
            let mut r = ChunkReader::new();
            let mut buf = BytesMut::from(&b[..split]);
            let mut got = read_all(&mut r, &mut buf);
            buf.extend_from_slice(&b[split..]);
            got.extend(read_all(&mut r, &mut buf));
            assert_eq!(got, expected, "split at {split}");
            assert!(buf.is_empty());
            assert_eq!(r.pending_bytes(), 0);
        }
    }

    #[test]
    fn single_chunk_messages_are_sliced_when_large_and_copied_when_small() {
        // Small: copied, so the input buffer is not kept alive by the message.
        let bytes = hex("04 000000 000003 08 01000000 010203");
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let m = ChunkReader::new().read(&mut buf).unwrap().unwrap();
        assert_eq!(&m.payload[..], &[1, 2, 3]);
        let p = m.payload.as_ptr() as usize;
        assert!(
            p < base || p >= base + bytes.len(),
            "small payload must be a copy"
        );

        // Large (one chunk thanks to a large chunk size): a slice of the input.
        let len = COPY_BELOW + 1;
        let mut big = hex("04 000000");
        big.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        big.extend_from_slice(&hex("09 01000000"));
        big.extend(std::iter::repeat_n(7u8, len));
        let mut buf = BytesMut::from(&big[..]);
        let base = buf.as_ptr() as usize;
        let mut r = ChunkReader::new();
        r.set_chunk_size(64 * 1024).unwrap();
        let m = r.read(&mut buf).unwrap().unwrap();
        assert_eq!(m.payload.len(), len);
        assert_eq!(m.payload.as_ptr() as usize, base + 12);
    }

    #[test]
    fn limits() {
        let mut r = ChunkReader::new();
        let big = hex("04 000000 800001 09 01000000");
        assert!(matches!(
            r.read(&mut BytesMut::from(&big[..])),
            Err(RtmpError::MessageTooLarge { .. })
        ));
        assert!(r.set_chunk_size(0).is_err());
        assert!(r.set_chunk_size(0x8000_0080).is_err());
        assert!(r.set_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
        assert!(r.set_chunk_size(4096).is_ok());
        // too many chunk streams
        let mut r = ChunkReader::new();
        let mut b = Vec::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u32 {
            b.extend_from_slice(&[0x00, csid as u8, 0, 0, 0, 0, 0, 1, 0x14, 0, 0, 0, 0, 5]);
        }
        let mut buf = BytesMut::from(&b[..]);
        let mut res = Ok(None);
        for _ in 0..=MAX_CHUNK_STREAMS {
            res = r.read(&mut buf);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(RtmpError::TooManyChunkStreams(MAX_CHUNK_STREAMS)));
        // pending bytes across streams
        let mut r = ChunkReader::new();
        let mut err = None;
        for csid in 3..40u8 {
            let mut b = vec![csid, 0, 0, 0, 0x7f, 0, 0, 9, 1, 0, 0, 0];
            b.extend_from_slice(&[0; 128]);
            if let Err(e) = r.read(&mut BytesMut::from(&b[..])) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(RtmpError::TooMuchPending(MAX_PENDING_BYTES)));
    }

    #[test]
    fn interrupting_header_cannot_bypass_pending_limit() {
        // Four large partial messages (4 x 0x7f0000 bytes, just under the total), one small
        // one on csid 8; then csid 8 restarts with a large message: that would pass the
        // total, so it is refused.
        let mut r = ChunkReader::new();
        for csid in 3..7u8 {
            let mut b = vec![csid, 0, 0, 0, 0x7f, 0, 0, 9, 1, 0, 0, 0];
            b.extend_from_slice(&[0; 128]);
            assert_eq!(r.read(&mut BytesMut::from(&b[..])), Ok(None));
        }
        let mut b = hex("08 000000 0000c8 09 01000000");
        b.extend_from_slice(&[0; 128]);
        assert_eq!(r.read(&mut BytesMut::from(&b[..])), Ok(None));
        let mut b = vec![8, 0, 0, 0, 0x7f, 0, 0, 9, 1, 0, 0, 0];
        b.extend_from_slice(&[0; 128]);
        assert_eq!(
            r.read(&mut BytesMut::from(&b[..])),
            Err(RtmpError::TooMuchPending(MAX_PENDING_BYTES))
        );
        assert!(r.pending_bytes() <= MAX_PENDING_BYTES);
    }

    #[test]
    fn lowered_limits_apply_to_new_messages_and_to_what_is_held() {
        let small = ReaderLimits {
            max_message_size: 1000,
            max_pending_bytes: 1500,
        };
        let mut r = ChunkReader::new();
        r.set_limits(small);
        assert_eq!(r.limits(), small);
        // A 1001-byte message is refused at its header.
        let b = hex("06 000000 0003e9 09 01000000");
        assert_eq!(
            r.read(&mut BytesMut::from(&b[..])),
            Err(RtmpError::MessageTooLarge {
                len: 1001,
                max: 1000
            })
        );
        // Two 1000-byte messages in progress would hold 2000 > 1500.
        let mut r = ChunkReader::new();
        r.set_limits(small);
        let mut b = hex("06 000000 0003e8 09 01000000");
        b.extend_from_slice(&[0; 128]);
        assert_eq!(r.read(&mut BytesMut::from(&b[..])), Ok(None));
        let mut b = hex("07 000000 0003e8 09 01000000");
        b.extend_from_slice(&[0; 128]);
        assert_eq!(
            r.read(&mut BytesMut::from(&b[..])),
            Err(RtmpError::TooMuchPending(1500))
        );
        // Raised, then lowered below what is held: the next read fails.
        let mut r = ChunkReader::new();
        let mut b = hex("06 000000 0007d0 09 01000000");
        b.extend_from_slice(&[0; 128]);
        assert_eq!(r.read(&mut BytesMut::from(&b[..])), Ok(None));
        r.set_limits(small);
        assert_eq!(
            r.read(&mut BytesMut::from(&[0xc6u8][..])),
            Err(RtmpError::TooMuchPending(1500))
        );
        // Limits above the crate's maxima are capped.
        r.set_limits(ReaderLimits {
            max_message_size: u32::MAX,
            max_pending_bytes: usize::MAX,
        });
        assert_eq!(r.limits(), ReaderLimits::default());
    }

    #[test]
    fn restarted_message_replaces_partial() {
        let mut r = ChunkReader::new();
        let mut b = hex("06 000000 0000c8 09 01000000");
        b.extend_from_slice(&[0; 128]);
        b.extend_from_slice(&hex("06 000005 000002 09 01000000 abcd"));
        let msgs = read_all(&mut r, &mut BytesMut::from(&b[..]));
        assert_eq!(msgs, vec![msg(6, 5, 9, 1, &[0xab, 0xcd])]);
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn abort_drops_partial() {
        let mut r = ChunkReader::new();
        let mut b = hex("06 000000 0000c8 09 01000000");
        b.extend_from_slice(&[0; 128]);
        assert_eq!(r.read(&mut BytesMut::from(&b[..])).unwrap(), None);
        assert_eq!(r.pending_bytes(), 200);
        r.abort(6);
        assert_eq!(r.pending_bytes(), 0);
    }

    fn encode_all(enc: &mut ChunkEncoder, msgs: &[ChunkMessage]) -> Vec<Bytes> {
        let mut out = VecDeque::new();
        for m in msgs {
            enc.encode(
                &mut out,
                m.chunk_stream_id,
                m.timestamp,
                m.type_id,
                m.stream_id,
                m.payload.clone(),
            )
            .unwrap();
        }
        out.into_iter().collect()
    }

    #[test]
    fn encoder_byte_exact_header_compression() {
        let msgs = vec![
            msg(6, 100, 9, 1, &[1, 2, 3, 4, 5, 6]),
            msg(6, 140, 9, 1, &[0xaa]),
            // delta 0x01000074: extended, repeated on the continuation chunk
            msg(6, 0x0100_0100, 9, 1, &[1, 2, 3, 4, 5]),
            // timestamp goes back: type 0 again
            msg(6, 50, 9, 1, &[0xbb]),
            // another message stream on the same chunk stream: type 0
            msg(6, 60, 9, 2, &[0xcc]),
            // empty payload
            msg(6, 70, 9, 2, &[]),
        ];
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(4);
        let pieces = encode_all(&mut enc, &msgs);
        let wire: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
        let expected = hex("
            06 000064 000006 09 01000000 01020304 c6 0506
            46 000028 000001 09 aa
            46 ffffff 000005 09 01000074 01020304 c6 01000074 05
            06 000032 000001 09 01000000 bb
            06 00003c 000001 09 02000000 cc
            46 00000a 000000 09");
        assert_eq!(wire, expected);
        let got = read_all(
            &mut {
                let mut r = ChunkReader::new();
                r.set_chunk_size(4).unwrap();
                r
            },
            &mut BytesMut::from(&wire[..]),
        );
        assert_eq!(got, msgs);
    }

    #[test]
    fn encoder_payload_pieces_are_slices_of_the_input() {
        let payload = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(4096);
        let mut out = VecDeque::new();
        enc.encode(&mut out, 6, 0, 9, 1, payload.clone()).unwrap();
        let pieces: Vec<Bytes> = out.into_iter().collect();
        // header, 4096, header, 4096, header, 1808
        let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![12, 4096, 1, 4096, 1, 1808]);
        let base = payload.as_ptr() as usize;
        for (i, at) in [(1, 0), (3, 4096), (5, 8192)] {
            assert_eq!(pieces[i].as_ptr() as usize, base + at);
        }
        // too large
        let big = Bytes::from(vec![0u8; MAX_MESSAGE_SIZE as usize + 1]);
        let mut out = VecDeque::new();
        assert!(matches!(
            enc.encode(&mut out, 6, 0, 9, 1, big),
            Err(RtmpError::MessageTooLarge { .. })
        ));
        assert!(out.is_empty());
    }
}
