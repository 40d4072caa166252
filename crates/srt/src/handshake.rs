//! The handshake control packet (version 5) and its extensions.
//!
//! ```text
//! Version | Encryption Field (16) Extension Field (16) | Initial Packet Sequence Number
//! MTU | Maximum Flow Window Size | Handshake Type | SRT Socket ID | SYN Cookie
//! Peer IP Address (128 bits) | extensions: Type (16) Length in 4-byte words (16) Contents
//! ```

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;

use crate::error::Error;
use crate::packet::read_u32;
use crate::seq::SeqNo;

/// Length of the fixed part of the handshake CIF.
pub const HANDSHAKE_CIF_LEN: usize = 48;
/// The "SRT magic" the listener puts in the extension field of its induction response.
pub const SRT_MAGIC: u16 = 0x4A17;
/// UDT socket type `SOCK_DGRAM`, sent by HSv5 callers in the induction extension field.
pub const UDT_DGRAM: u16 = 2;
/// Longest stream ID libsrt accepts (`MAX_SID_LENGTH`).
pub const MAX_STREAM_ID_LEN: usize = 512;
/// Most extensions read from one handshake; real peers send at most five.
pub const MAX_HS_EXTENSIONS: usize = 16;

/// Extension-field flags of an HSv5 conclusion: which extensions follow.
pub mod ext_flags {
    /// HSREQ/HSRSP present.
    pub const HSREQ: u16 = 0x1;
    /// KMREQ/KMRSP present.
    pub const KMREQ: u16 = 0x2;
    /// Configuration extensions (stream ID, congestion, filter, group) present.
    pub const CONFIG: u16 = 0x4;
}

/// Flags of the HSREQ/HSRSP extension (`SRT_OPT_*`).
pub mod srt_flags {
    /// The sender uses timestamp-based packet delivery.
    pub const TSBPDSND: u32 = 0x01;
    /// The receiver uses timestamp-based packet delivery.
    pub const TSBPDRCV: u32 = 0x02;
    /// Encryption supported (HaiCrypt).
    pub const HAICRYPT: u32 = 0x04;
    /// Too-late packet drop.
    pub const TLPKTDROP: u32 = 0x08;
    /// Periodic NAK reports.
    pub const NAKREPORT: u32 = 0x10;
    /// The R flag in data packets marks retransmissions.
    pub const REXMITFLG: u32 = 0x20;
    /// Stream (file) mode instead of message mode.
    pub const STREAM: u32 = 0x40;
    /// Packet filter in use.
    pub const PACKET_FILTER: u32 = 0x80;
}

mod ext_type {
    pub const HSREQ: u16 = 1;
    pub const HSRSP: u16 = 2;
    pub const KMREQ: u16 = 3;
    pub const KMRSP: u16 = 4;
    pub const SID: u16 = 5;
}

/// Handshake type values of the fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeType {
    /// 0: wave-a-hand (rendezvous).
    WaveAHand,
    /// 1: induction.
    Induction,
    /// -1: conclusion.
    Conclusion,
    /// -2: agreement (rendezvous).
    Agreement,
    /// -3: done (rendezvous).
    Done,
    /// 1000 and up: rejection with a reason.
    Rejection(RejectReason),
    /// Anything else.
    Unknown(u32),
}

/// Offset of rejection codes in the handshake type field (`URQ_FAILURE_TYPE`).
const URQ_FAILURE_TYPE: u32 = 1000;

impl HandshakeType {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => HandshakeType::WaveAHand,
            1 => HandshakeType::Induction,
            0xFFFF_FFFF => HandshakeType::Conclusion,
            0xFFFF_FFFE => HandshakeType::Agreement,
            0xFFFF_FFFD => HandshakeType::Done,
            v if (URQ_FAILURE_TYPE..0x8000_0000).contains(&v) => {
                HandshakeType::Rejection(RejectReason(v - URQ_FAILURE_TYPE))
            }
            v => HandshakeType::Unknown(v),
        }
    }
    /// To the wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            HandshakeType::WaveAHand => 0,
            HandshakeType::Induction => 1,
            HandshakeType::Conclusion => 0xFFFF_FFFF,
            HandshakeType::Agreement => 0xFFFF_FFFE,
            HandshakeType::Done => 0xFFFF_FFFD,
            HandshakeType::Rejection(r) => r.0.saturating_add(URQ_FAILURE_TYPE),
            HandshakeType::Unknown(v) => v,
        }
    }
}

/// An SRT rejection reason: the `SRT_REJ_*` (0..1000), `SRT_REJX_*` (1000..2000) and
/// user-defined (2000 and up) codes of libsrt's `srt_getrejectreason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RejectReason(pub u32);

impl RejectReason {
    /// `SRT_REJ_UNKNOWN`
    pub const UNKNOWN: Self = Self(0);
    /// `SRT_REJ_SYSTEM`
    pub const SYSTEM: Self = Self(1);
    /// `SRT_REJ_PEER`
    pub const PEER: Self = Self(2);
    /// `SRT_REJ_RESOURCE`
    pub const RESOURCE: Self = Self(3);
    /// `SRT_REJ_ROGUE`: incorrect data in the handshake.
    pub const ROGUE: Self = Self(4);
    /// `SRT_REJ_BACKLOG`
    pub const BACKLOG: Self = Self(5);
    /// `SRT_REJ_IPE`: internal program error.
    pub const IPE: Self = Self(6);
    /// `SRT_REJ_CLOSE`
    pub const CLOSE: Self = Self(7);
    /// `SRT_REJ_VERSION`: peer older than the minimum version.
    pub const VERSION: Self = Self(8);
    /// `SRT_REJ_RDVCOOKIE`
    pub const RDVCOOKIE: Self = Self(9);
    /// `SRT_REJ_BADSECRET`: wrong passphrase.
    pub const BADSECRET: Self = Self(10);
    /// `SRT_REJ_UNSECURE`: passphrase required or unexpected.
    pub const UNSECURE: Self = Self(11);
    /// `SRT_REJ_MESSAGEAPI`
    pub const MESSAGEAPI: Self = Self(12);
    /// `SRT_REJ_CONGESTION`
    pub const CONGESTION: Self = Self(13);
    /// `SRT_REJ_FILTER`
    pub const FILTER: Self = Self(14);
    /// `SRT_REJ_GROUP`
    pub const GROUP: Self = Self(15);
    /// `SRT_REJ_TIMEOUT`
    pub const TIMEOUT: Self = Self(16);
    /// `SRT_REJX_BAD_REQUEST`: general syntax error in the stream ID.
    pub const BAD_REQUEST: Self = Self(1400);
    /// `SRT_REJX_UNAUTHORIZED`: authentication failed.
    pub const UNAUTHORIZED: Self = Self(1401);
    /// `SRT_REJX_OVERLOAD`: server overloaded or over quota.
    pub const OVERLOAD: Self = Self(1402);
    /// `SRT_REJX_FORBIDDEN`: access denied.
    pub const FORBIDDEN: Self = Self(1403);
    /// `SRT_REJX_NOTFOUND`: resource not found.
    pub const NOTFOUND: Self = Self(1404);
    /// `SRT_REJX_BAD_MODE`: unsupported mode.
    pub const BAD_MODE: Self = Self(1405);
    /// `SRT_REJX_UNACCEPTABLE`: parameters cannot be satisfied.
    pub const UNACCEPTABLE: Self = Self(1406);
    /// `SRT_REJX_CONFLICT`: resource locked (someone already publishes it).
    pub const CONFLICT: Self = Self(1409);
    /// `SRT_REJX_ISE`: internal server error.
    pub const ISE: Self = Self(1500);
    /// `SRT_REJX_DOWN`: service unavailable (shutting down).
    pub const DOWN: Self = Self(1503);

    /// libsrt's symbolic name, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "SRT_REJ_UNKNOWN",
            1 => "SRT_REJ_SYSTEM",
            2 => "SRT_REJ_PEER",
            3 => "SRT_REJ_RESOURCE",
            4 => "SRT_REJ_ROGUE",
            5 => "SRT_REJ_BACKLOG",
            6 => "SRT_REJ_IPE",
            7 => "SRT_REJ_CLOSE",
            8 => "SRT_REJ_VERSION",
            9 => "SRT_REJ_RDVCOOKIE",
            10 => "SRT_REJ_BADSECRET",
            11 => "SRT_REJ_UNSECURE",
            12 => "SRT_REJ_MESSAGEAPI",
            13 => "SRT_REJ_CONGESTION",
            14 => "SRT_REJ_FILTER",
            15 => "SRT_REJ_GROUP",
            16 => "SRT_REJ_TIMEOUT",
            1400 => "SRT_REJX_BAD_REQUEST",
            1401 => "SRT_REJX_UNAUTHORIZED",
            1402 => "SRT_REJX_OVERLOAD",
            1403 => "SRT_REJX_FORBIDDEN",
            1404 => "SRT_REJX_NOTFOUND",
            1405 => "SRT_REJX_BAD_MODE",
            1406 => "SRT_REJX_UNACCEPTABLE",
            1409 => "SRT_REJX_CONFLICT",
            1500 => "SRT_REJX_ISE",
            1503 => "SRT_REJX_DOWN",
            _ => return None,
        })
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "rejection code {}", self.0),
        }
    }
}

/// Contents of the HSREQ/HSRSP extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtHsExt {
    /// SRT library version, `0x00MMmmpp`.
    pub version: u32,
    /// [`srt_flags`].
    pub flags: u32,
    /// The sender of this extension's receive latency (ms).
    pub recv_latency_ms: u16,
    /// The latency the sender of this extension asks its peer to receive with (ms).
    pub send_latency_ms: u16,
}

/// One handshake extension block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsExtension {
    /// SRT_CMD_HSREQ (1).
    HsReq(SrtHsExt),
    /// SRT_CMD_HSRSP (2).
    HsRsp(SrtHsExt),
    /// SRT_CMD_KMREQ (3): a KM message.
    KmReq(Bytes),
    /// SRT_CMD_KMRSP (4): a KM message, or a 4-byte KM state on failure.
    KmRsp(Bytes),
    /// SRT_CMD_SID (5): the stream ID.
    StreamId(String),
    /// Any other extension, kept raw.
    Other {
        /// Extension type.
        ext_type: u16,
        /// Contents (a multiple of 4 bytes).
        data: Bytes,
    },
}

/// A handshake control information field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// 4 for UDT-style induction requests, 5 for HSv5.
    pub version: u32,
    /// Encryption field: advertised key length / 8 (2, 3, 4) or 0.
    pub encryption: u16,
    /// Extension field: [`SRT_MAGIC`], [`UDT_DGRAM`] or [`ext_flags`].
    pub extension_field: u16,
    /// Initial packet sequence number.
    pub initial_seq: SeqNo,
    /// Maximum transmission unit (bytes, including UDP/IP headers).
    pub mtu: u32,
    /// Maximum flow window (packets).
    pub flow_window: u32,
    /// Handshake type.
    pub hs_type: HandshakeType,
    /// The sender's socket ID.
    pub socket_id: u32,
    /// SYN cookie.
    pub syn_cookie: u32,
    /// The receiver's IP address as the sender sees it, in libsrt's word-swapped layout.
    pub peer_ip: [u8; 16],
    /// Extensions (only in conclusion handshakes).
    pub extensions: Vec<HsExtension>,
}

impl Handshake {
    /// Parses a handshake CIF (the bytes after the 16-byte header).
    pub fn parse(cif: &[u8]) -> Result<Handshake, Error> {
        let (fixed, mut rest) =
            cif.split_first_chunk::<HANDSHAKE_CIF_LEN>()
                .ok_or(Error::Truncated {
                    what: "handshake",
                    need: HANDSHAKE_CIF_LEN,
                    have: cif.len(),
                })?;
        let w = |i: usize| read_u32(fixed, i * 4, "handshake");
        let enc_ext = w(1)?;
        let hs_type = HandshakeType::from_u32(w(5)?);
        let mut peer_ip = [0u8; 16];
        peer_ip.copy_from_slice(&fixed[32..48]);
        let mut hs = Handshake {
            version: w(0)?,
            encryption: (enc_ext >> 16) as u16,
            extension_field: (enc_ext & 0xFFFF) as u16,
            initial_seq: SeqNo::new(w(2)?),
            mtu: w(3)?,
            flow_window: w(4)?,
            hs_type,
            socket_id: w(6)?,
            syn_cookie: w(7)?,
            peer_ip,
            extensions: Vec::new(),
        };
        if hs.version >= 5 && hs.hs_type == HandshakeType::Conclusion {
            // Extension blocks: a 16-bit type, a 16-bit length in 4-byte words, the data.
            // Fewer than 4 bytes left (padding) end the list.
            while let Some((head, after)) = rest.split_first_chunk::<4>() {
                if hs.extensions.len() >= MAX_HS_EXTENSIONS {
                    return Err(Error::Malformed("too many handshake extensions"));
                }
                let head = u32::from_be_bytes(*head);
                let ext_type = (head >> 16) as u16;
                let len = (head & 0xFFFF) as usize * 4;
                let (data, tail) = after.split_at_checked(len).ok_or(Error::Truncated {
                    what: "handshake extension",
                    need: 4 + len,
                    have: rest.len(),
                })?;
                hs.extensions.push(parse_extension(ext_type, data)?);
                rest = tail;
            }
        }
        Ok(hs)
    }

    /// Appends the wire form to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let enc_ext = (u32::from(self.encryption) << 16) | u32::from(self.extension_field);
        for v in [
            self.version,
            enc_ext,
            self.initial_seq.get(),
            self.mtu,
            self.flow_window,
            self.hs_type.to_u32(),
            self.socket_id,
            self.syn_cookie,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.peer_ip);
        for e in &self.extensions {
            write_extension(e, out);
        }
    }

    /// The stream ID extension, if present.
    pub fn stream_id(&self) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::StreamId(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The HSREQ extension, if present.
    pub fn hsreq(&self) -> Option<SrtHsExt> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::HsReq(h) => Some(*h),
            _ => None,
        })
    }

    /// The HSRSP extension, if present.
    pub fn hsrsp(&self) -> Option<SrtHsExt> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::HsRsp(h) => Some(*h),
            _ => None,
        })
    }

    /// The KMREQ extension, if present.
    pub fn kmreq(&self) -> Option<&Bytes> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::KmReq(b) => Some(b),
            _ => None,
        })
    }

    /// The KMRSP extension, if present.
    pub fn kmrsp(&self) -> Option<&Bytes> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::KmRsp(b) => Some(b),
            _ => None,
        })
    }
}

/// Encodes an IP address the way libsrt puts it in the handshake: four 32-bit words,
/// each holding the address bytes in reverse order (IPv4 in the first word).
pub fn encode_peer_ip(ip: IpAddr) -> [u8; 16] {
    let mut raw = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => raw[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => raw.copy_from_slice(&v6.octets()),
    }
    for word in raw.chunks_exact_mut(4) {
        word.reverse();
    }
    raw
}

fn parse_extension(ext_type: u16, data: &[u8]) -> Result<HsExtension, Error> {
    Ok(match ext_type {
        ext_type::HSREQ | ext_type::HSRSP => {
            let lat = read_u32(data, 8, "HSREQ")?;
            let ext = SrtHsExt {
                version: read_u32(data, 0, "HSREQ")?,
                flags: read_u32(data, 4, "HSREQ")?,
                recv_latency_ms: (lat >> 16) as u16,
                send_latency_ms: (lat & 0xFFFF) as u16,
            };
            if ext_type == ext_type::HSREQ {
                HsExtension::HsReq(ext)
            } else {
                HsExtension::HsRsp(ext)
            }
        }
        ext_type::KMREQ => HsExtension::KmReq(Bytes::copy_from_slice(data)),
        ext_type::KMRSP => HsExtension::KmRsp(Bytes::copy_from_slice(data)),
        ext_type::SID => HsExtension::StreamId(decode_stream_id(data)?),
        _ => HsExtension::Other {
            ext_type,
            data: Bytes::copy_from_slice(data),
        },
    })
}

fn write_block(ext_type: u16, data: &[u8], out: &mut Vec<u8>) {
    let words = data.len().div_ceil(4);
    out.extend_from_slice(&ext_type.to_be_bytes());
    out.extend_from_slice(&(words.min(0xFFFF) as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (words * 4 - data.len()), 0);
}

fn write_extension(e: &HsExtension, out: &mut Vec<u8>) {
    match e {
        HsExtension::HsReq(h) | HsExtension::HsRsp(h) => {
            let t = if matches!(e, HsExtension::HsReq(_)) {
                ext_type::HSREQ
            } else {
                ext_type::HSRSP
            };
            let mut d = Vec::with_capacity(12);
            d.extend_from_slice(&h.version.to_be_bytes());
            d.extend_from_slice(&h.flags.to_be_bytes());
            let lat = (u32::from(h.recv_latency_ms) << 16) | u32::from(h.send_latency_ms);
            d.extend_from_slice(&lat.to_be_bytes());
            write_block(t, &d, out);
        }
        HsExtension::KmReq(b) => write_block(ext_type::KMREQ, b, out),
        HsExtension::KmRsp(b) => write_block(ext_type::KMRSP, b, out),
        HsExtension::StreamId(s) => write_block(ext_type::SID, &encode_stream_id(s), out),
        HsExtension::Other { ext_type, data } => write_block(*ext_type, data, out),
    }
}

/// Encodes a stream ID as libsrt does: zero-padded to whole 4-byte words, each word's
/// bytes reversed (libsrt copies the string into host-order words, then byte-swaps them).
/// Strings longer than [`MAX_STREAM_ID_LEN`] are cut.
pub fn encode_stream_id(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let bytes = bytes.get(..MAX_STREAM_ID_LEN).unwrap_or(bytes);
    let mut v = bytes.to_vec();
    v.resize(bytes.len().div_ceil(4) * 4, 0);
    for w in v.chunks_exact_mut(4) {
        w.reverse();
    }
    v
}

/// Decodes a stream ID extension (inverse of [`encode_stream_id`]; trailing zeros dropped).
pub fn decode_stream_id(data: &[u8]) -> Result<String, Error> {
    if data.len() > MAX_STREAM_ID_LEN {
        return Err(Error::Malformed("stream ID longer than 512 bytes"));
    }
    let mut v = data.to_vec();
    for w in v.chunks_exact_mut(4) {
        w.reverse();
    }
    while v.last() == Some(&0) {
        v.pop();
    }
    String::from_utf8(v).map_err(|_| Error::Malformed("stream ID is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_swaps_words() {
        assert_eq!(encode_stream_id("abcdef"), b"dcba\0\0fe".to_vec());
        assert_eq!(decode_stream_id(b"dcba\0\0fe").unwrap(), "abcdef");
        let s = "#!::r=live/key,m=publish";
        assert_eq!(decode_stream_id(&encode_stream_id(s)).unwrap(), s);
        assert!(decode_stream_id(&[0xFF, 0xFE, 0, 0]).is_err());
        assert!(decode_stream_id(&[b'a'; 516]).is_err());
    }

    #[test]
    fn reject_codes_on_the_wire() {
        let t = HandshakeType::Rejection(RejectReason::BADSECRET);
        assert_eq!(t.to_u32(), 1010);
        assert_eq!(
            HandshakeType::from_u32(2403),
            HandshakeType::Rejection(RejectReason::FORBIDDEN)
        );
        assert_eq!(
            HandshakeType::from_u32(0xFFFF_FFFF),
            HandshakeType::Conclusion
        );
        assert_eq!(
            RejectReason::CONFLICT.to_string(),
            "SRT_REJX_CONFLICT (1409)"
        );
    }

    #[test]
    fn peer_ip_layout() {
        let ip = encode_peer_ip("127.0.0.1".parse().unwrap());
        assert_eq!(ip[..4], [1, 0, 0, 127]);
        assert_eq!(ip[4..], [0; 12]);
    }
}
