//! SRT packets on the wire: the 16-byte header, data packets and every control type.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |0|                    Packet Sequence Number                   |  data
//! |P P|O|K K|R|                   Message Number                  |
//! |1|        Control Type         |            Subtype            |  control
//! |                   Type-specific Information                   |
//! |                           Timestamp                           |  both
//! |                     Destination Socket ID                     |
//! ```

use bytes::Bytes;

use crate::error::Error;
use crate::handshake::Handshake;
use crate::seq::{MsgNo, SeqNo};

/// Length of the common packet header.
pub const HEADER_LEN: usize = 16;
/// Largest datagram this crate reads or writes (libsrt's default MTU, `SRTO_MSS`).
pub const MAX_PACKET_SIZE: usize = 1500;
/// UDP/IPv4 header overhead that the MSS includes.
pub const UDP_IP_OVERHEAD: usize = 28;
/// Largest payload in one live-mode data packet (1500 - 28 - 16 = 1456).
pub const MAX_PAYLOAD_SIZE: usize = MAX_PACKET_SIZE - UDP_IP_OVERHEAD - HEADER_LEN;
/// Most loss entries (single numbers or ranges) written into one NAK so it fits a packet.
pub const MAX_NAK_ENTRIES: usize = (MAX_PAYLOAD_SIZE) / 8;

/// Control type numbers (15 bits).
mod ctype {
    pub const HANDSHAKE: u16 = 0x0000;
    pub const KEEPALIVE: u16 = 0x0001;
    pub const ACK: u16 = 0x0002;
    pub const NAK: u16 = 0x0003;
    pub const CONGESTION: u16 = 0x0004;
    pub const SHUTDOWN: u16 = 0x0005;
    pub const ACKACK: u16 = 0x0006;
    pub const DROPREQ: u16 = 0x0007;
    pub const PEERERROR: u16 = 0x0008;
    pub const USER: u16 = 0x7FFF;
}

/// Subtypes of the user-defined control type used for in-band key material (HSv4 style,
/// still used by HSv5 for key refresh).
mod usertype {
    pub const KMREQ: u16 = 3;
    pub const KMRSP: u16 = 4;
}

/// Where a data packet sits in its message (the `PP` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketPosition {
    /// `10`: first packet of a multi-packet message.
    First,
    /// `00`: a middle packet.
    Middle,
    /// `01`: the last packet.
    Last,
    /// `11`: a message in one packet (always, in live mode).
    Only,
}

impl PacketPosition {
    fn from_bits(b: u32) -> Self {
        match b & 3 {
            0b10 => PacketPosition::First,
            0b00 => PacketPosition::Middle,
            0b01 => PacketPosition::Last,
            _ => PacketPosition::Only,
        }
    }
    fn bits(self) -> u32 {
        match self {
            PacketPosition::First => 0b10,
            PacketPosition::Middle => 0b00,
            PacketPosition::Last => 0b01,
            PacketPosition::Only => 0b11,
        }
    }
}

/// Which stream-encrypting key a data packet uses (the `KK` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFlag {
    /// `00`: not encrypted.
    None,
    /// `01`: encrypted with the even key.
    Even,
    /// `10`: encrypted with the odd key.
    Odd,
    /// `11`: both (only valid in KM messages, never in data packets).
    Both,
}

impl KeyFlag {
    pub(crate) fn from_bits(b: u32) -> Self {
        match b & 3 {
            0 => KeyFlag::None,
            1 => KeyFlag::Even,
            2 => KeyFlag::Odd,
            _ => KeyFlag::Both,
        }
    }
    pub(crate) fn bits(self) -> u32 {
        match self {
            KeyFlag::None => 0,
            KeyFlag::Even => 1,
            KeyFlag::Odd => 2,
            KeyFlag::Both => 3,
        }
    }
}

/// A data packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPacket {
    /// Packet sequence number.
    pub seq: SeqNo,
    /// Position in the message.
    pub position: PacketPosition,
    /// The `O` flag: deliver in order.
    pub in_order: bool,
    /// Encryption key flag.
    pub key: KeyFlag,
    /// The `R` flag: this is a retransmission.
    pub retransmitted: bool,
    /// Message number.
    pub msgno: MsgNo,
    /// Microseconds since the sender's start (wraps).
    pub timestamp: u32,
    /// Destination socket ID.
    pub dest: u32,
    /// Payload (possibly encrypted).
    pub payload: Bytes,
}

/// One entry of a NAK loss list: `first..=last` (equal for a single packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossRange {
    /// First lost sequence number.
    pub first: SeqNo,
    /// Last lost sequence number (inclusive).
    pub last: SeqNo,
}

/// The acknowledgement body of an ACK control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckInfo {
    /// Light ACK: only the sequence number (4 bytes), sent every 64 packets.
    Light,
    /// Small ACK: sequence, RTT, RTT variance, available buffer (16 bytes).
    Small {
        /// RTT in µs.
        rtt: u32,
        /// RTT variance in µs.
        rtt_var: u32,
        /// Free receive buffer, in packets.
        buffer_available: u32,
    },
    /// Full ACK (28 bytes), sent every 10 ms.
    Full {
        /// RTT in µs.
        rtt: u32,
        /// RTT variance in µs.
        rtt_var: u32,
        /// Free receive buffer, in packets.
        buffer_available: u32,
        /// Packets received per second.
        packet_rate: u32,
        /// Estimated link capacity, packets per second.
        link_capacity: u32,
        /// Bytes received per second.
        receive_rate: u32,
    },
}

/// An ACK control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// ACK number (0 for light ACKs), echoed by the ACKACK.
    pub ack_number: u32,
    /// The first sequence number not yet received (all before it are).
    pub ack_seq: SeqNo,
    /// The rest.
    pub info: AckInfo,
}

/// The body of a control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlBody {
    /// Handshake (type 0x0000).
    Handshake(Handshake),
    /// Keep-alive (type 0x0001).
    KeepAlive,
    /// ACK (type 0x0002).
    Ack(Ack),
    /// NAK with the loss list (type 0x0003).
    Nak(Vec<LossRange>),
    /// Congestion warning (type 0x0004, obsolete).
    CongestionWarning,
    /// Shutdown (type 0x0005).
    Shutdown,
    /// ACKACK carrying the ACK number it acknowledges (type 0x0006).
    AckAck(u32),
    /// Message drop request (type 0x0007).
    DropRequest {
        /// The dropped message.
        msgno: MsgNo,
        /// First sequence number of the dropped range.
        first: SeqNo,
        /// Last sequence number of the dropped range.
        last: SeqNo,
    },
    /// Peer error with its code (type 0x0008).
    PeerError(u32),
    /// In-band key material request (user type 0x7FFF, subtype 3): a KM message.
    KmRequest(Bytes),
    /// In-band key material response (user type 0x7FFF, subtype 4).
    KmResponse(Bytes),
    /// Any other control type, kept as is.
    Other {
        /// Control type.
        control_type: u16,
        /// Subtype.
        subtype: u16,
        /// Type-specific information.
        info: u32,
        /// Control information field.
        cif: Bytes,
    },
}

/// A control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// Microseconds since the sender's start (wraps).
    pub timestamp: u32,
    /// Destination socket ID.
    pub dest: u32,
    /// Type and contents.
    pub body: ControlBody,
}

/// Any SRT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A data packet.
    Data(DataPacket),
    /// A control packet.
    Control(ControlPacket),
}

/// Reads the destination socket ID of a datagram without parsing the rest, so a server
/// can route it to the right state machine (0 means "the listener").
pub fn peek_dest_socket_id(data: &[u8]) -> Option<u32> {
    be32_at(data, 12)
}

/// The big-endian u32 at `at`, if `data` holds it.
fn be32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*b))
}

/// Reads a big-endian u32 at `at`, or reports truncation of `what`.
pub(crate) fn read_u32(data: &[u8], at: usize, what: &'static str) -> Result<u32, Error> {
    be32_at(data, at).ok_or(Error::Truncated {
        what,
        need: at.saturating_add(4),
        have: data.len(),
    })
}

impl Packet {
    /// Parses one datagram. Trailing bytes after a fixed-size control body are ignored
    /// (libsrt pads some control packets).
    pub fn parse(data: &[u8]) -> Result<Packet, Error> {
        let (header, body) = data
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(Error::Truncated {
                what: "packet header",
                need: HEADER_LEN,
                have: data.len(),
            })?;
        let w0 = read_u32(header, 0, "packet header")?;
        let w1 = read_u32(header, 4, "packet header")?;
        let timestamp = read_u32(header, 8, "packet header")?;
        let dest = read_u32(header, 12, "packet header")?;
        if w0 & 0x8000_0000 == 0 {
            return Ok(Packet::Data(DataPacket {
                seq: SeqNo::new(w0),
                position: PacketPosition::from_bits(w1 >> 30),
                in_order: w1 & 0x2000_0000 != 0,
                key: KeyFlag::from_bits(w1 >> 27),
                retransmitted: w1 & 0x0400_0000 != 0,
                msgno: MsgNo::new(w1),
                timestamp,
                dest,
                payload: Bytes::copy_from_slice(body),
            }));
        }
        let control_type = ((w0 >> 16) & 0x7FFF) as u16;
        let subtype = (w0 & 0xFFFF) as u16;
        let body = match control_type {
            ctype::HANDSHAKE => ControlBody::Handshake(Handshake::parse(body)?),
            ctype::KEEPALIVE => ControlBody::KeepAlive,
            ctype::ACK => ControlBody::Ack(parse_ack(w1, body)?),
            ctype::NAK => ControlBody::Nak(parse_nak(body)?),
            ctype::CONGESTION => ControlBody::CongestionWarning,
            ctype::SHUTDOWN => ControlBody::Shutdown,
            ctype::ACKACK => ControlBody::AckAck(w1),
            ctype::DROPREQ => ControlBody::DropRequest {
                msgno: MsgNo::new(w1),
                first: SeqNo::new(read_u32(body, 0, "drop request")?),
                last: SeqNo::new(read_u32(body, 4, "drop request")?),
            },
            ctype::PEERERROR => ControlBody::PeerError(w1),
            ctype::USER if subtype == usertype::KMREQ => {
                ControlBody::KmRequest(Bytes::copy_from_slice(body))
            }
            ctype::USER if subtype == usertype::KMRSP => {
                ControlBody::KmResponse(Bytes::copy_from_slice(body))
            }
            _ => ControlBody::Other {
                control_type,
                subtype,
                info: w1,
                cif: Bytes::copy_from_slice(body),
            },
        };
        Ok(Packet::Control(ControlPacket {
            timestamp,
            dest,
            body,
        }))
    }

    /// Appends the wire form of this packet to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Data(d) => {
                out.extend_from_slice(&d.seq.get().to_be_bytes());
                let w1 = (d.position.bits() << 30)
                    | (u32::from(d.in_order) << 29)
                    | (d.key.bits() << 27)
                    | (u32::from(d.retransmitted) << 26)
                    | d.msgno.get();
                out.extend_from_slice(&w1.to_be_bytes());
                out.extend_from_slice(&d.timestamp.to_be_bytes());
                out.extend_from_slice(&d.dest.to_be_bytes());
                out.extend_from_slice(&d.payload);
            }
            Packet::Control(c) => {
                let (t, sub, info) = match &c.body {
                    ControlBody::Handshake(_) => (ctype::HANDSHAKE, 0, 0),
                    ControlBody::KeepAlive => (ctype::KEEPALIVE, 0, 0),
                    ControlBody::Ack(a) => (ctype::ACK, 0, a.ack_number),
                    ControlBody::Nak(_) => (ctype::NAK, 0, 0),
                    ControlBody::CongestionWarning => (ctype::CONGESTION, 0, 0),
                    ControlBody::Shutdown => (ctype::SHUTDOWN, 0, 0),
                    ControlBody::AckAck(n) => (ctype::ACKACK, 0, *n),
                    ControlBody::DropRequest { msgno, .. } => (ctype::DROPREQ, 0, msgno.get()),
                    ControlBody::PeerError(e) => (ctype::PEERERROR, 0, *e),
                    ControlBody::KmRequest(_) => (ctype::USER, usertype::KMREQ, 0),
                    ControlBody::KmResponse(_) => (ctype::USER, usertype::KMRSP, 0),
                    ControlBody::Other {
                        control_type,
                        subtype,
                        info,
                        ..
                    } => (*control_type & 0x7FFF, *subtype, *info),
                };
                let w0 = 0x8000_0000 | (u32::from(t) << 16) | u32::from(sub);
                out.extend_from_slice(&w0.to_be_bytes());
                out.extend_from_slice(&info.to_be_bytes());
                out.extend_from_slice(&c.timestamp.to_be_bytes());
                out.extend_from_slice(&c.dest.to_be_bytes());
                match &c.body {
                    ControlBody::Handshake(h) => h.write(out),
                    // libsrt sends 4 zero bytes with these; so do we.
                    ControlBody::KeepAlive | ControlBody::Shutdown | ControlBody::AckAck(_) => {
                        out.extend_from_slice(&[0; 4])
                    }
                    ControlBody::Ack(a) => write_ack(a, out),
                    ControlBody::Nak(list) => {
                        for r in list {
                            if r.first == r.last {
                                out.extend_from_slice(&r.first.get().to_be_bytes());
                            } else {
                                out.extend_from_slice(&(r.first.get() | 0x8000_0000).to_be_bytes());
                                out.extend_from_slice(&r.last.get().to_be_bytes());
                            }
                        }
                    }
                    ControlBody::CongestionWarning | ControlBody::PeerError(_) => {}
                    ControlBody::DropRequest { first, last, .. } => {
                        out.extend_from_slice(&first.get().to_be_bytes());
                        out.extend_from_slice(&last.get().to_be_bytes());
                    }
                    ControlBody::KmRequest(b) | ControlBody::KmResponse(b) => {
                        out.extend_from_slice(b)
                    }
                    ControlBody::Other { cif, .. } => out.extend_from_slice(cif),
                }
            }
        }
    }

    /// The wire form of this packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + 64);
        self.write(&mut v);
        v
    }
}

fn parse_ack(ack_number: u32, body: &[u8]) -> Result<Ack, Error> {
    let ack_seq = SeqNo::new(read_u32(body, 0, "ACK")?);
    let info = if body.len() >= 28 {
        AckInfo::Full {
            rtt: read_u32(body, 4, "ACK")?,
            rtt_var: read_u32(body, 8, "ACK")?,
            buffer_available: read_u32(body, 12, "ACK")?,
            packet_rate: read_u32(body, 16, "ACK")?,
            link_capacity: read_u32(body, 20, "ACK")?,
            receive_rate: read_u32(body, 24, "ACK")?,
        }
    } else if body.len() >= 16 {
        AckInfo::Small {
            rtt: read_u32(body, 4, "ACK")?,
            rtt_var: read_u32(body, 8, "ACK")?,
            buffer_available: read_u32(body, 12, "ACK")?,
        }
    } else {
        AckInfo::Light
    };
    Ok(Ack {
        ack_number,
        ack_seq,
        info,
    })
}

fn write_ack(a: &Ack, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.ack_seq.get().to_be_bytes());
    match a.info {
        AckInfo::Light => {}
        AckInfo::Small {
            rtt,
            rtt_var,
            buffer_available,
        } => {
            for v in [rtt, rtt_var, buffer_available] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        AckInfo::Full {
            rtt,
            rtt_var,
            buffer_available,
            packet_rate,
            link_capacity,
            receive_rate,
        } => {
            for v in [
                rtt,
                rtt_var,
                buffer_available,
                packet_rate,
                link_capacity,
                receive_rate,
            ] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

fn parse_nak(body: &[u8]) -> Result<Vec<LossRange>, Error> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= body.len() {
        let v = read_u32(body, i, "NAK")?;
        i += 4;
        if v & 0x8000_0000 != 0 {
            let last = read_u32(body, i, "NAK range")?;
            i += 4;
            let first = SeqNo::new(v);
            let last = SeqNo::new(last);
            if last < first {
                return Err(Error::Malformed("NAK range ends before it starts"));
            }
            out.push(LossRange { first, last });
        } else {
            let s = SeqNo::new(v);
            out.push(LossRange { first: s, last: s });
        }
    }
    Ok(out)
}
