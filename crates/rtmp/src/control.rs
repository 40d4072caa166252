//! Protocol control, the part of RTMP both ends speak alike: the receive side of the chunk
//! stream (the chunk size and aborts the peer asks for), byte counting and acknowledgements
//! per the window in force, and answers to pings. [`ServerSession`](crate::ServerSession)
//! and [`ClientSession`](crate::ClientSession) each embed one [`Control`]; what it wants
//! sent comes back as a [`ControlMessage`] the session encodes with its own chunk writer.
//!
//! Call order, per input: [`Control::read`] one message at a time and hand each to
//! [`Control::handle_message`] (sending any reply at once, so replies keep their order
//! among the session's own messages); after the input, [`Control::add_received`] with the
//! bytes consumed (handshake included), then [`Control::poll_ack`].

use bytes::BytesMut;

use crate::chunk::{message_type, ChunkMessage, ChunkReader, ReaderLimits};
use crate::error::RtmpError;

/// User Control event types (the first two bytes of a User Control message).
mod user_control {
    /// Stream Begin: the server tells the client a stream is ready.
    pub const STREAM_BEGIN: u16 = 0;
    /// Ping Request: the receiver answers with a Ping Response carrying the same value.
    pub const PING_REQUEST: u16 = 6;
    /// Ping Response.
    pub const PING_RESPONSE: u16 = 7;
}

/// Limit type of Set Peer Bandwidth: dynamic (the receiver may treat it as hard or soft).
const BANDWIDTH_LIMIT_DYNAMIC: u8 = 2;

/// A protocol control or User Control message to send (on chunk stream 2, message
/// stream 0, timestamp 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlMessage {
    /// Set Chunk Size: the chunk size of everything we send from now on.
    SetChunkSize(u32),
    /// Acknowledgement: the bytes received so far (modulo 2^32).
    Acknowledgement(u32),
    /// Window Acknowledgement Size: acknowledge every this many bytes you receive.
    WindowAckSize(u32),
    /// Set Peer Bandwidth (dynamic limit type).
    SetPeerBandwidth(u32),
    /// User Control Stream Begin of a message stream.
    StreamBegin(u32),
    /// User Control Ping Response echoing the request's timestamp.
    PingResponse(u32),
}

/// The payload of a [`ControlMessage`]: each message has a fixed length.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ControlPayload {
    /// Chunk sizes, windows and acknowledgements.
    Four([u8; 4]),
    /// Set Peer Bandwidth: window and limit type.
    Five([u8; 5]),
    /// User Control: event type and a 4-byte value.
    Six([u8; 6]),
}

impl ControlPayload {
    /// The payload bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            ControlPayload::Four(b) => b,
            ControlPayload::Five(b) => b,
            ControlPayload::Six(b) => b,
        }
    }
}

fn user_control(event: u16, value: u32) -> ControlPayload {
    let [e0, e1] = event.to_be_bytes();
    let [v0, v1, v2, v3] = value.to_be_bytes();
    ControlPayload::Six([e0, e1, v0, v1, v2, v3])
}

impl ControlMessage {
    /// The RTMP message type id.
    pub(crate) fn type_id(self) -> u8 {
        match self {
            ControlMessage::SetChunkSize(_) => message_type::SET_CHUNK_SIZE,
            ControlMessage::Acknowledgement(_) => message_type::ACKNOWLEDGEMENT,
            ControlMessage::WindowAckSize(_) => message_type::WINDOW_ACK_SIZE,
            ControlMessage::SetPeerBandwidth(_) => message_type::SET_PEER_BANDWIDTH,
            ControlMessage::StreamBegin(_) | ControlMessage::PingResponse(_) => {
                message_type::USER_CONTROL
            }
        }
    }

    /// The message's payload.
    pub(crate) fn payload(self) -> ControlPayload {
        match self {
            ControlMessage::SetChunkSize(v)
            | ControlMessage::Acknowledgement(v)
            | ControlMessage::WindowAckSize(v) => ControlPayload::Four(v.to_be_bytes()),
            ControlMessage::SetPeerBandwidth(window) => {
                let [w0, w1, w2, w3] = window.to_be_bytes();
                ControlPayload::Five([w0, w1, w2, w3, BANDWIDTH_LIMIT_DYNAMIC])
            }
            ControlMessage::StreamBegin(stream_id) => {
                user_control(user_control::STREAM_BEGIN, stream_id)
            }
            ControlMessage::PingResponse(ts) => user_control(user_control::PING_RESPONSE, ts),
        }
    }
}

/// What [`Control::handle_message`] made of a message.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// A protocol control or User Control message, handled; nothing to send.
    Handled,
    /// A protocol control or User Control message, handled; send this reply now.
    Reply(ControlMessage),
    /// Not protocol control (a command, data, media, ...): the session's to handle.
    Message(ChunkMessage),
}

/// The big-endian u32 at the front of `payload`, if it holds four bytes.
fn be_u32(payload: &[u8]) -> Option<u32> {
    payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

/// The protocol-control state of one connection, either end (see the module docs).
#[derive(Debug)]
pub(crate) struct Control {
    reader: ChunkReader,
    /// Bytes consumed from the peer so far (handshake included).
    bytes_received: u64,
    /// `bytes_received` when the last Acknowledgement was queued.
    last_ack: u64,
    /// The acknowledgement window in force: the peer's Window Acknowledgement Size, or the
    /// default this end starts with; `None` sends no acknowledgements.
    ack_window: Option<u32>,
    /// Whether Set Peer Bandwidth is answered with a Window Acknowledgement Size (a client
    /// does; the publish-only server ignores it).
    answer_peer_bandwidth: bool,
    /// The last Window Acknowledgement Size sent in answer to Set Peer Bandwidth.
    window_sent: Option<u32>,
}

impl Control {
    /// The server's: acknowledges every `window` bytes (the window it announces) until the
    /// peer sets another; a zero window acknowledges nothing. Set Peer Bandwidth is ignored.
    pub(crate) fn server(window: u32) -> Self {
        Self::new(Some(window).filter(|w| *w > 0), false)
    }

    /// The client's: acknowledges nothing until the server sets a window; answers Set
    /// Peer Bandwidth with a Window Acknowledgement Size when the window changes.
    pub(crate) fn client() -> Self {
        Self::new(None, true)
    }

    fn new(ack_window: Option<u32>, answer_peer_bandwidth: bool) -> Self {
        Control {
            reader: ChunkReader::new(),
            bytes_received: 0,
            last_ack: 0,
            ack_window,
            answer_peer_bandwidth,
            window_sent: None,
        }
    }

    /// Reads the next whole message from the front of `data` (see [`ChunkReader::read`]).
    pub(crate) fn read(&mut self, data: &mut BytesMut) -> Result<Option<ChunkMessage>, RtmpError> {
        self.reader.read(data)
    }

    /// Sets the chunk reader's limits (see [`ChunkReader::set_limits`]).
    pub(crate) fn set_limits(&mut self, limits: ReaderLimits) {
        self.reader.set_limits(limits);
    }

    /// Bytes held in partially received messages.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.reader.pending_bytes()
    }

    /// Bytes consumed from the peer so far (handshake included).
    pub(crate) fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Counts `n` more bytes consumed from the peer.
    pub(crate) fn add_received(&mut self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.bytes_received = self.bytes_received.saturating_add(n);
    }

    /// The Acknowledgement due, if a whole window was received since the last one.
    pub(crate) fn poll_ack(&mut self) -> Option<ControlMessage> {
        let window = u64::from(self.ack_window?);
        if self.bytes_received.saturating_sub(self.last_ack) < window {
            return None;
        }
        self.last_ack = self.bytes_received;
        // The sequence number wraps at 2^32 (RTMP spec).
        let seq = (self.bytes_received & 0xFFFF_FFFF) as u32;
        Some(ControlMessage::Acknowledgement(seq))
    }

    /// Handles `msg` if it is protocol control (types 1 to 6) or User Control; hands any
    /// other message back. Fails on a Set Chunk Size that is short or out of range.
    /// Malformed Abort, window and User Control messages are ignored.
    pub(crate) fn handle_message(&mut self, msg: ChunkMessage) -> Result<Dispatch, RtmpError> {
        let p = &msg.payload;
        match msg.type_id {
            message_type::SET_CHUNK_SIZE => {
                let size = be_u32(p).ok_or(RtmpError::Protocol("short Set Chunk Size"))?;
                self.reader.set_chunk_size(size)?;
            }
            message_type::ABORT => {
                if let Some(csid) = be_u32(p) {
                    self.reader.abort(csid);
                }
            }
            message_type::WINDOW_ACK_SIZE => {
                if let Some(w) = be_u32(p).filter(|w| *w > 0) {
                    self.ack_window = Some(w);
                }
            }
            message_type::SET_PEER_BANDWIDTH => {
                let window = be_u32(p).filter(|w| *w > 0);
                if let Some(w) = window.filter(|_| self.answer_peer_bandwidth) {
                    if self.window_sent != Some(w) {
                        self.window_sent = Some(w);
                        return Ok(Dispatch::Reply(ControlMessage::WindowAckSize(w)));
                    }
                }
            }
            message_type::USER_CONTROL => {
                if let Some((event, rest)) = p.split_first_chunk::<2>() {
                    if u16::from_be_bytes(*event) == user_control::PING_REQUEST {
                        // Lenient: a request without its timestamp is answered with 0.
                        let ts = be_u32(rest).unwrap_or(0);
                        return Ok(Dispatch::Reply(ControlMessage::PingResponse(ts)));
                    }
                }
            }
            // Acknowledgements of what we sent: nothing to do (we never wait for them).
            message_type::ACKNOWLEDGEMENT => {}
            _ => return Ok(Dispatch::Message(msg)),
        }
        Ok(Dispatch::Handled)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(type_id: u8, payload: &[u8]) -> ChunkMessage {
        ChunkMessage {
            chunk_stream_id: crate::chunk::csid::CONTROL,
            timestamp: 0,
            type_id,
            stream_id: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn reply(c: &mut Control, type_id: u8, payload: &[u8]) -> Option<ControlMessage> {
        match c.handle_message(msg(type_id, payload)).unwrap() {
            Dispatch::Reply(m) => Some(m),
            Dispatch::Handled => None,
            Dispatch::Message(m) => panic!("not handled: {m:?}"),
        }
    }

    #[test]
    fn payloads_are_byte_exact() {
        let cases: [(ControlMessage, u8, &[u8]); 6] = [
            (ControlMessage::SetChunkSize(4096), 1, &[0, 0, 0x10, 0]),
            (
                ControlMessage::Acknowledgement(0x0102_0304),
                3,
                &[1, 2, 3, 4],
            ),
            (
                ControlMessage::WindowAckSize(2_500_000),
                5,
                &[0, 0x26, 0x25, 0xa0],
            ),
            (
                ControlMessage::SetPeerBandwidth(2_500_000),
                6,
                &[0, 0x26, 0x25, 0xa0, 2],
            ),
            (ControlMessage::StreamBegin(1), 4, &[0, 0, 0, 0, 0, 1]),
            (
                ControlMessage::PingResponse(0xdead_beef),
                4,
                &[0, 7, 0xde, 0xad, 0xbe, 0xef],
            ),
        ];
        for (m, type_id, payload) in cases {
            assert_eq!(m.type_id(), type_id, "{m:?}");
            assert_eq!(m.payload().as_slice(), payload, "{m:?}");
        }
    }

    #[test]
    fn pings_are_answered_with_their_timestamp_or_zero_when_it_is_missing() {
        for mut c in [Control::server(2_500_000), Control::client()] {
            let r = reply(&mut c, message_type::USER_CONTROL, &[0, 6, 0, 0, 1, 2]);
            assert_eq!(r, Some(ControlMessage::PingResponse(0x102)));
            let r = reply(&mut c, message_type::USER_CONTROL, &[0, 6, 9]);
            assert_eq!(r, Some(ControlMessage::PingResponse(0)));
            // Other events and a lone byte are ignored.
            assert_eq!(
                reply(&mut c, message_type::USER_CONTROL, &[0, 3, 0, 0, 0, 1]),
                None
            );
            assert_eq!(reply(&mut c, message_type::USER_CONTROL, &[0]), None);
        }
    }

    #[test]
    fn the_server_acknowledges_per_its_own_window_until_the_peer_sets_one() {
        let mut c = Control::server(1000);
        c.add_received(999);
        assert_eq!(c.poll_ack(), None);
        c.add_received(1);
        assert_eq!(c.poll_ack(), Some(ControlMessage::Acknowledgement(1000)));
        assert_eq!(c.poll_ack(), None);
        assert_eq!(
            reply(&mut c, message_type::WINDOW_ACK_SIZE, &[0, 0, 0, 10]),
            None
        );
        c.add_received(10);
        assert_eq!(c.poll_ack(), Some(ControlMessage::Acknowledgement(1010)));
        // A zero window from the peer is ignored; a zero window of our own sends nothing.
        assert_eq!(
            reply(&mut c, message_type::WINDOW_ACK_SIZE, &[0, 0, 0, 0]),
            None
        );
        c.add_received(10);
        assert_eq!(c.poll_ack(), Some(ControlMessage::Acknowledgement(1020)));
        let mut silent = Control::server(0);
        silent.add_received(1 << 20);
        assert_eq!(silent.poll_ack(), None);
    }

    #[test]
    fn the_client_acknowledges_nothing_until_told_a_window_and_the_sequence_wraps() {
        let mut c = Control::client();
        c.add_received(1 << 20);
        assert_eq!(c.poll_ack(), None);
        reply(&mut c, message_type::WINDOW_ACK_SIZE, &[0, 0, 0x10, 0]);
        assert_eq!(c.poll_ack(), Some(ControlMessage::Acknowledgement(1 << 20)));
        c.add_received(0xFFFF_FFFF);
        assert_eq!(
            c.poll_ack(),
            Some(ControlMessage::Acknowledgement(
                (((1u64 << 20) + 0xFFFF_FFFF) & 0xFFFF_FFFF) as u32
            ))
        );
        assert_eq!(c.bytes_received(), (1 << 20) + 0xFFFF_FFFF);
    }

    #[test]
    fn peer_bandwidth_is_answered_by_the_client_once_per_window_and_ignored_by_the_server() {
        let bw = [0, 0, 0x10, 0, 2];
        let mut client = Control::client();
        let r = reply(&mut client, message_type::SET_PEER_BANDWIDTH, &bw);
        assert_eq!(r, Some(ControlMessage::WindowAckSize(4096)));
        assert_eq!(
            reply(&mut client, message_type::SET_PEER_BANDWIDTH, &bw),
            None
        );
        let r = reply(
            &mut client,
            message_type::SET_PEER_BANDWIDTH,
            &[0, 0, 0x20, 0, 2],
        );
        assert_eq!(r, Some(ControlMessage::WindowAckSize(8192)));
        assert_eq!(
            reply(
                &mut client,
                message_type::SET_PEER_BANDWIDTH,
                &[0, 0, 0, 0, 2]
            ),
            None
        );
        let mut server = Control::server(2_500_000);
        assert_eq!(
            reply(&mut server, message_type::SET_PEER_BANDWIDTH, &bw),
            None
        );
    }

    #[test]
    fn set_chunk_size_must_be_whole_and_in_range_and_other_messages_come_back() {
        let mut c = Control::client();
        assert_eq!(
            reply(&mut c, message_type::SET_CHUNK_SIZE, &[0, 0, 0x10, 0]),
            None
        );
        assert_eq!(c.reader.chunk_size(), 4096);
        assert_eq!(
            c.handle_message(msg(message_type::SET_CHUNK_SIZE, &[0, 0, 1]))
                .err(),
            Some(RtmpError::Protocol("short Set Chunk Size"))
        );
        assert_eq!(
            c.handle_message(msg(message_type::SET_CHUNK_SIZE, &[0, 0, 0, 0]))
                .err(),
            Some(RtmpError::InvalidChunkSize(0))
        );
        assert_eq!(reply(&mut c, message_type::ABORT, &[0, 0]), None);
        assert_eq!(
            reply(&mut c, message_type::ACKNOWLEDGEMENT, &[0, 0, 0, 1]),
            None
        );
        for type_id in [message_type::AUDIO, message_type::COMMAND_AMF0, 0x7f] {
            match c.handle_message(msg(type_id, &[1, 2])).unwrap() {
                Dispatch::Message(m) => assert_eq!(m, msg(type_id, &[1, 2])),
                other => panic!("type {type_id} was handled: {other:?}"),
            }
        }
    }
}
