//! The RTMP handshake. Server side ([`ServerHandshake`]): C0/C1 in → S0/S1/S2 out, then C2
//! in. Client side ([`ClientHandshake`]): C0/C1 out, S0/S1 in → C2 out, then S2 in (plain
//! flavour only).
//!
//! Two flavours are answered by the server:
//! - **plain** (the RTMP spec): S1 is random with a zero version field, S2 echoes C1;
//! - **digest** (Flash Player 9 era: FMLE, hardware encoders, ffmpeg): C1 carries an
//!   HMAC-SHA256 digest keyed with "Genuine Adobe Flash Player 001" at the scheme-0 or
//!   scheme-1 offset; S1 then carries a digest keyed with "Genuine Adobe Flash Media Server
//!   001" at the same scheme, and S2 ends with an HMAC of its first 1504 bytes keyed by the
//!   HMAC of C1's digest under the full server key.
//!
//! C2's content is not checked (clients disagree on what it holds).

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::RtmpError;

/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The only RTMP version accepted in C0 (and sent in S0).
pub const RTMP_VERSION: u8 = 3;
const DIGEST_LEN: usize = 32;

/// "Genuine Adobe Flash Player 001" followed by the 32 shared bytes.
const FP_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// Length of the printable part of [`FP_KEY`], which keys C1's digest.
const FP_KEY_PARTIAL: usize = 30;
/// "Genuine Adobe Flash Media Server 001" followed by the 32 shared bytes.
const FMS_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
\xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";
/// Length of the printable part of [`FMS_KEY`], which keys S1's digest.
const FMS_KEY_PARTIAL: usize = 36;
/// The version field S1 carries in the digest flavour (what FMS 4.5 sends).
const SERVER_VERSION: [u8; 4] = [0x04, 0x05, 0x00, 0x01];

/// Where a C1/S1 digest lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestScheme {
    /// Digest block first: offset from the 4 bytes at 8, digest at `sum % 728 + 12`.
    Scheme0,
    /// Key block first: offset from the 4 bytes at 772, digest at `sum % 728 + 776`.
    Scheme1,
}

impl DigestScheme {
    /// Offset of the 32-byte digest in a 1536-byte C1/S1 whose offset bytes are `packet`'s.
    pub fn digest_offset(self, packet: &[u8]) -> Option<usize> {
        let base = match self {
            DigestScheme::Scheme0 => 8,
            DigestScheme::Scheme1 => 772,
        };
        let sum: usize = packet
            .get(base..base + 4)?
            .iter()
            .map(|b| usize::from(*b))
            .sum();
        Some(sum % 728 + base + 4)
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    let mac = Hmac::<Sha256>::new_from_slice(key);
    debug_assert!(mac.is_ok(), "HMAC accepts keys of any length");
    if let Ok(mut mac) = mac {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// The digest a packet would carry at `offset` (HMAC of everything but those 32 bytes).
fn packet_digest(packet: &[u8], offset: usize, key: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let before = packet.get(..offset)?;
    let after = packet.get(offset.checked_add(DIGEST_LEN)?..)?;
    Some(hmac(key, &[before, after]))
}

/// If C1 carries a valid client digest, its scheme and the digest.
pub fn find_client_digest(c1: &[u8]) -> Option<(DigestScheme, [u8; DIGEST_LEN])> {
    for scheme in [DigestScheme::Scheme0, DigestScheme::Scheme1] {
        let offset = scheme.digest_offset(c1)?;
        let expected = packet_digest(c1, offset, &FP_KEY[..FP_KEY_PARTIAL])?;
        if c1.get(offset..offset + DIGEST_LEN) == Some(&expected[..]) {
            return Some((scheme, expected));
        }
    }
    None
}

/// Writes a client digest into a C1 (used by tests and test clients).
pub fn imprint_client_digest(c1: &mut [u8], scheme: DigestScheme) -> Option<()> {
    imprint(c1, scheme, &FP_KEY[..FP_KEY_PARTIAL])
}

/// Checks S1's server digest at `scheme` (used by test clients).
pub fn verify_server_digest(s1: &[u8], scheme: DigestScheme) -> bool {
    let Some(offset) = scheme.digest_offset(s1) else {
        return false;
    };
    let Some(expected) = packet_digest(s1, offset, &FMS_KEY[..FMS_KEY_PARTIAL]) else {
        return false;
    };
    s1.get(offset..offset + DIGEST_LEN) == Some(&expected[..])
}

/// Checks S2's signature against the client digest of C1 (used by test clients).
pub fn verify_s2(s2: &[u8], client_digest: &[u8]) -> bool {
    let key = hmac(&FMS_KEY, &[client_digest]);
    let split = HANDSHAKE_SIZE - DIGEST_LEN;
    match (s2.get(..split), s2.get(split..)) {
        (Some(body), Some(sig)) => sig == hmac(&key, &[body]),
        _ => false,
    }
}

fn imprint(packet: &mut [u8], scheme: DigestScheme, key: &[u8]) -> Option<()> {
    let offset = scheme.digest_offset(packet)?;
    let digest = packet_digest(packet, offset, key)?;
    packet
        .get_mut(offset..offset + DIGEST_LEN)?
        .copy_from_slice(&digest);
    Some(())
}

/// A small deterministic generator for the handshake's filler bytes (they need not be
/// secret; the driver seeds it through the session configuration).
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            for (b, r) in chunk.iter_mut().zip(self.0.to_le_bytes()) {
                *b = r;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    WaitC0C1,
    WaitC2,
    Done,
}

/// Server handshake state machine.
#[derive(Debug)]
pub struct ServerHandshake {
    state: State,
    seed: u64,
}

impl ServerHandshake {
    /// A handshake waiting for C0/C1; `seed` feeds the filler bytes of S1/S2.
    pub fn new(seed: u64) -> Self {
        ServerHandshake {
            state: State::WaitC0C1,
            seed,
        }
    }

    /// Whether C2 has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can of `data`, appending S0/S1/S2 to `out` once C0/C1 are in.
    /// Returns `Ok(true)` once the handshake is complete; whatever follows C2 is left in
    /// `data` for the chunk reader.
    pub fn handle(&mut self, data: &mut BytesMut, out: &mut BytesMut) -> Result<bool, RtmpError> {
        if self.state == State::WaitC0C1 {
            let Some(c1) = take_version_and_packet(data)? else {
                return Ok(false);
            };
            self.respond(&c1, out);
            self.state = State::WaitC2;
        }
        if self.state == State::WaitC2 {
            if !skip_packet(data) {
                return Ok(false);
            }
            self.state = State::Done;
        }
        Ok(true)
    }

    fn respond(&self, c1: &[u8], out: &mut BytesMut) {
        // Mix C1 into the seed so two sessions with the same seed still differ.
        let mut seed = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in c1.iter().take(64) {
            seed = seed.rotate_left(5) ^ u64::from(*b);
        }
        let mut rng = XorShift(seed | 1);
        out.put_u8(RTMP_VERSION);
        let mut s1 = [0u8; HANDSHAKE_SIZE];
        rng.fill(&mut s1[8..]);
        let digest = if c1.get(4..8) == Some(&[0, 0, 0, 0]) {
            None
        } else {
            find_client_digest(c1)
        };
        match digest {
            None => {
                out.put_slice(&s1);
                out.put_slice(c1);
            }
            Some((scheme, client_digest)) => {
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                let imprinted = imprint(&mut s1, scheme, &FMS_KEY[..FMS_KEY_PARTIAL]);
                debug_assert!(
                    imprinted.is_some(),
                    "S1 is long enough for any digest offset"
                );
                out.put_slice(&s1);
                // S2: random bytes, then their HMAC under a key derived from C1's digest.
                let mut body = [0u8; HANDSHAKE_SIZE - DIGEST_LEN];
                rng.fill(&mut body);
                let key = hmac(&FMS_KEY, &[&client_digest]);
                out.put_slice(&body);
                out.put_slice(&hmac(&key, &[&body]));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    WaitS0S1,
    WaitS2,
    Done,
}

/// Client handshake state machine (plain flavour: C1 carries a zero version field, C2
/// echoes S1; S2 is not checked, since digest-speaking servers do not echo C1).
///
/// [`ClientHandshake::new`] returns C0+C1 to send at once; [`ClientHandshake::handle`]
/// then consumes S0/S1 (answering C2) and S2.
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
}

impl ClientHandshake {
    /// A handshake and its C0+C1 (1537 bytes); `seed` feeds C1's filler bytes.
    pub fn new(seed: u64) -> (Self, BytesMut) {
        let mut out = BytesMut::with_capacity(1 + HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        // time (4 bytes) and version (4 bytes) stay zero: the plain handshake.
        XorShift(seed ^ 0xC1C1_C1C1_C1C1_C1C1 | 1).fill(&mut c1[8..]);
        out.put_slice(&c1);
        (
            ClientHandshake {
                state: ClientState::WaitS0S1,
            },
            out,
        )
    }

    /// Whether S2 has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ClientState::Done
    }

    /// Consumes what it can of `data`, appending C2 to `out` once S0/S1 are in. Returns
    /// `Ok(true)` once the handshake is complete; whatever follows S2 is left in `data`.
    pub fn handle(&mut self, data: &mut BytesMut, out: &mut BytesMut) -> Result<bool, RtmpError> {
        if self.state == ClientState::WaitS0S1 {
            let Some(s1) = take_version_and_packet(data)? else {
                return Ok(false);
            };
            out.put_slice(&s1);
            self.state = ClientState::WaitS2;
        }
        if self.state == ClientState::WaitS2 {
            if !skip_packet(data) {
                return Ok(false);
            }
            self.state = ClientState::Done;
        }
        Ok(true)
    }
}

/// The version byte (C0 or S0) and the packet after it (C1 or S1), taken from `data` once
/// both are in; `None` while they are not. Any version but [`RTMP_VERSION`] is refused.
fn take_version_and_packet(data: &mut BytesMut) -> Result<Option<BytesMut>, RtmpError> {
    match data.first() {
        None => return Ok(None),
        Some(&RTMP_VERSION) => {}
        Some(&v) => return Err(RtmpError::UnsupportedVersion(v)),
    }
    if data.len() < 1 + HANDSHAKE_SIZE {
        return Ok(None);
    }
    data.advance(1);
    Ok(Some(data.split_to(HANDSHAKE_SIZE)))
}

/// Drops the last packet (C2 or S2) from `data` once it is in; whether it was.
fn skip_packet(data: &mut BytesMut) -> bool {
    if data.len() < HANDSHAKE_SIZE {
        return false;
    }
    data.advance(HANDSHAKE_SIZE);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c1_plain() -> Vec<u8> {
        let mut c1 = vec![0u8; HANDSHAKE_SIZE];
        c1[..4].copy_from_slice(&[0, 0, 0x12, 0x34]);
        for (i, b) in c1.iter_mut().enumerate().skip(8) {
            *b = (i * 7 % 251) as u8;
        }
        c1
    }

    #[test]
    fn digest_offsets() {
        let mut p = vec![0u8; HANDSHAKE_SIZE];
        p[8..12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]); // 1020 % 728 = 292
        p[772..776].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(DigestScheme::Scheme0.digest_offset(&p), Some(292 + 12));
        assert_eq!(DigestScheme::Scheme1.digest_offset(&p), Some(10 + 776));
    }

    #[test]
    fn hmac_key_bytes() {
        // RFC 4231-style sanity: the HMAC helper matches a known vector (key "key", "The quick
        // brown fox jumps over the lazy dog").
        let d = hmac(
            b"key",
            &[b"The quick brown fox ", b"jumps over the lazy dog"],
        );
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(&FP_KEY[30..34], &[0xF0, 0xEE, 0xC2, 0x4A]);
        assert_eq!(
            &FMS_KEY[..FMS_KEY_PARTIAL],
            b"Genuine Adobe Flash Media Server 001"
        );
    }

    #[test]
    fn plain_s0_s1_s2_structure() {
        let c1 = c1_plain();
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_slice(&c1);
        let mut hs = ServerHandshake::new(1);
        let mut out = BytesMut::new();
        assert!(!hs.handle(&mut input, &mut out).unwrap());
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(&out[..9], &[0x03, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c1[..]);
        input.put_slice(&[0u8; HANDSHAKE_SIZE]);
        input.put_slice(&[0xaa, 0xbb]);
        assert!(hs.handle(&mut input, &mut out).unwrap());
        assert_eq!(input.as_ref(), &[0xaa, 0xbb]);
    }

    #[test]
    fn digest_handshake_both_schemes() {
        for scheme in [DigestScheme::Scheme0, DigestScheme::Scheme1] {
            let mut c1 = c1_plain();
            c1[4..8].copy_from_slice(&[9, 0, 124, 2]);
            imprint_client_digest(&mut c1, scheme).unwrap();
            let (found, client_digest) = find_client_digest(&c1).unwrap();
            assert_eq!(found, scheme);
            let mut input = BytesMut::new();
            input.put_u8(3);
            input.put_slice(&c1);
            let mut out = BytesMut::new();
            ServerHandshake::new(7)
                .handle(&mut input, &mut out)
                .unwrap();
            let s1 = &out[1..1 + HANDSHAKE_SIZE];
            let s2 = &out[1 + HANDSHAKE_SIZE..];
            assert_eq!(&s1[4..8], &SERVER_VERSION);
            assert!(verify_server_digest(s1, scheme));
            assert!(verify_s2(s2, &client_digest));
            // a tampered S2 fails
            let mut bad = s2.to_vec();
            bad[0] ^= 1;
            assert!(!verify_s2(&bad, &client_digest));
        }
    }

    #[test]
    fn nonzero_version_without_digest_falls_back_to_plain() {
        let mut c1 = c1_plain();
        c1[4..8].copy_from_slice(&[1, 2, 3, 4]);
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_slice(&c1);
        let mut out = BytesMut::new();
        ServerHandshake::new(1)
            .handle(&mut input, &mut out)
            .unwrap();
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c1[..]);
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
    }

    #[test]
    fn bad_version_rejected_at_first_byte() {
        let mut input = BytesMut::from(&[0x06u8][..]);
        let mut out = BytesMut::new();
        assert_eq!(
            ServerHandshake::new(1).handle(&mut input, &mut out),
            Err(RtmpError::UnsupportedVersion(6))
        );
    }

    #[test]
    fn client_against_server_handshake() {
        let (mut client, c0c1) = ClientHandshake::new(42);
        assert_eq!(c0c1.len(), 1 + HANDSHAKE_SIZE);
        assert_eq!(&c0c1[..9], &[3, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut server = ServerHandshake::new(1);
        let mut to_server = c0c1;
        let mut to_client = BytesMut::new();
        assert!(!server.handle(&mut to_server, &mut to_client).unwrap());
        // S0+S1+S2 arrive one byte short of S2, then the rest plus a chunk byte.
        let all = to_client.split();
        let mut c2 = BytesMut::new();
        let mut part = BytesMut::from(&all[..all.len() - 1]);
        assert!(!client.handle(&mut part, &mut c2).unwrap());
        assert_eq!(&c2[..], &all[1..1 + HANDSHAKE_SIZE], "C2 echoes S1");
        part.extend_from_slice(&all[all.len() - 1..]);
        part.extend_from_slice(&[0x02]);
        assert!(client.handle(&mut part, &mut c2).unwrap());
        assert!(client.is_done());
        assert_eq!(&part[..], &[0x02]);
        to_server.extend_from_slice(&c2);
        assert!(server.handle(&mut to_server, &mut to_client).unwrap());
        // a bad S0 is refused
        let (mut client, _) = ClientHandshake::new(1);
        assert_eq!(
            client.handle(&mut BytesMut::from(&[9u8][..]), &mut BytesMut::new()),
            Err(RtmpError::UnsupportedVersion(9))
        );
    }
}
