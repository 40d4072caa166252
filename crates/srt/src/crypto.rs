//! SRT encryption: the KM (key material) message, KEK derivation (PBKDF2-HMAC-SHA1),
//! SEK wrapping (AES key wrap, RFC 3394) and payload encryption (AES-CTR).
//!
//! ```text
//! |S|  V  |  PT   |             Sign (0x2029)     |   Resv1   |KK |
//! |                              KEKI                             |
//! |    Cipher     |      Auth     |      SE       |     Resv2     |
//! |             Resv3             |     SLen/4    |     KLen/4    |
//! |                    Salt (SLen bytes)                          |
//! |        Wrapped keys: 8-byte ICV + one or two SEKs             |
//! ```

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::error::Error;
use crate::packet::KeyFlag;

/// Salt length (libsrt always uses 16).
pub const SALT_LEN: usize = 16;
/// Bytes of the salt used as PBKDF2 salt (the last 8).
pub const PBKDF2_SALT_LEN: usize = 8;
/// PBKDF2 iterations libsrt uses.
pub const PBKDF2_ITERATIONS: u32 = 2048;
/// Length of the fixed KM message header.
pub const KM_HEADER_LEN: usize = 16;
/// AES key wrap integrity check value length.
pub const KW_ICV_LEN: usize = 8;
/// Shortest passphrase libsrt accepts.
pub const MIN_PASSPHRASE_LEN: usize = 10;
/// Longest passphrase libsrt accepts.
pub const MAX_PASSPHRASE_LEN: usize = 79;
/// The KM message signature ("HAI" in PnP vendor ID form).
const KM_SIGN: u16 = 0x2029;
/// First byte of a KM message: S=0, version 1, packet type 2 (KMmsg).
const KM_VERSION_PT: u8 = 0x12;
/// Cipher 2: AES-CTR.
const CIPHER_AES_CTR: u8 = 2;
/// Stream encapsulation 2: MPEG-TS/SRT.
const SE_SRT: u8 = 2;

/// A KM state code sent alone in a 4-byte KMRSP when key material is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum KmState {
    /// No encryption.
    Unsecured = 0,
    /// Securing in progress.
    Securing = 1,
    /// Secured.
    Secured = 2,
    /// The responder has no passphrase.
    NoSecret = 3,
    /// The passphrase differs.
    BadSecret = 4,
}

/// AES key length of the stream-encrypting key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLength {
    /// 16 bytes (`pbkeylen=16`).
    Aes128,
    /// 24 bytes.
    Aes192,
    /// 32 bytes.
    Aes256,
}

impl KeyLength {
    /// Key length in bytes.
    pub fn bytes(self) -> usize {
        match self {
            KeyLength::Aes128 => 16,
            KeyLength::Aes192 => 24,
            KeyLength::Aes256 => 32,
        }
    }
    /// From a length in bytes.
    pub fn from_bytes(n: usize) -> Option<Self> {
        match n {
            16 => Some(KeyLength::Aes128),
            24 => Some(KeyLength::Aes192),
            32 => Some(KeyLength::Aes256),
            _ => None,
        }
    }
    /// The value of the handshake's encryption field (bytes / 8).
    pub fn hs_field(self) -> u16 {
        (self.bytes() / 8) as u16
    }
}

/// A stream-encrypting key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sek(SekBytes);

/// The key bytes, as long as the key is: no length to check when they are used.
#[derive(Clone, PartialEq, Eq)]
enum SekBytes {
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

impl std::fmt::Debug for Sek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sek({:?}, <redacted>)", self.len())
    }
}

/// The first `N` bytes of `bytes` (`N` is at most 32).
fn prefix<const N: usize>(bytes: &[u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

impl Sek {
    /// Builds a key from raw bytes (16, 24 or 32 of them).
    pub fn from_slice(b: &[u8]) -> Option<Sek> {
        let bytes = match KeyLength::from_bytes(b.len())? {
            KeyLength::Aes128 => SekBytes::Aes128(b.try_into().ok()?),
            KeyLength::Aes192 => SekBytes::Aes192(b.try_into().ok()?),
            KeyLength::Aes256 => SekBytes::Aes256(b.try_into().ok()?),
        };
        Some(Sek(bytes))
    }
    /// The first `len` bytes of `bytes` as a key.
    fn from_prefix(bytes: &[u8; 32], len: KeyLength) -> Sek {
        Sek(match len {
            KeyLength::Aes128 => SekBytes::Aes128(prefix(bytes)),
            KeyLength::Aes192 => SekBytes::Aes192(prefix(bytes)),
            KeyLength::Aes256 => SekBytes::Aes256(prefix(bytes)),
        })
    }
    /// The key bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            SekBytes::Aes128(b) => b,
            SekBytes::Aes192(b) => b,
            SekBytes::Aes256(b) => b,
        }
    }
    /// The key length.
    pub fn len(&self) -> KeyLength {
        match self.0 {
            SekBytes::Aes128(_) => KeyLength::Aes128,
            SekBytes::Aes192(_) => KeyLength::Aes192,
            SekBytes::Aes256(_) => KeyLength::Aes256,
        }
    }
}

/// A parsed KM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmMessage {
    /// Which keys are carried: even, odd or both (even first).
    pub keys: KeyFlag,
    /// Salt (16 bytes).
    pub salt: [u8; SALT_LEN],
    /// Key length.
    pub key_len: KeyLength,
    /// ICV followed by the wrapped key(s).
    pub wrapped: Vec<u8>,
}

impl KmMessage {
    /// Parses a KM message (as found in a KMREQ/KMRSP extension or control packet).
    pub fn parse(b: &[u8]) -> Result<KmMessage, Error> {
        let truncated = |need: usize| Error::Truncated {
            what: "KM message",
            need,
            have: b.len(),
        };
        let (header, rest) = b
            .split_first_chunk::<KM_HEADER_LEN>()
            .ok_or(truncated(KM_HEADER_LEN))?;
        let [version_pt, sign0, sign1, kk, _, _, _, _, cipher, _, _, _, _, _, slen, klen] = *header;
        if version_pt != KM_VERSION_PT {
            return Err(Error::Malformed("KM message version/type"));
        }
        if u16::from_be_bytes([sign0, sign1]) != KM_SIGN {
            return Err(Error::Malformed("KM message signature"));
        }
        let keys = KeyFlag::from_bits(u32::from(kk));
        let nkeys = match keys {
            KeyFlag::None => return Err(Error::Malformed("KM message carries no key")),
            KeyFlag::Even | KeyFlag::Odd => 1,
            KeyFlag::Both => 2,
        };
        if cipher != CIPHER_AES_CTR {
            return Err(Error::Malformed("KM cipher is not AES-CTR"));
        }
        if usize::from(slen) * 4 != SALT_LEN {
            return Err(Error::Malformed("KM salt length"));
        }
        let key_len = KeyLength::from_bytes(usize::from(klen) * 4)
            .ok_or(Error::Malformed("KM key length"))?;
        let wrapped_len = KW_ICV_LEN + nkeys * key_len.bytes();
        let need = KM_HEADER_LEN + SALT_LEN + wrapped_len;
        let (salt, rest) = rest
            .split_first_chunk::<SALT_LEN>()
            .ok_or(truncated(need))?;
        let wrapped = rest.get(..wrapped_len).ok_or(truncated(need))?;
        Ok(KmMessage {
            keys,
            salt: *salt,
            key_len,
            wrapped: wrapped.to_vec(),
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(KM_HEADER_LEN + SALT_LEN + self.wrapped.len());
        v.push(KM_VERSION_PT);
        v.extend_from_slice(&KM_SIGN.to_be_bytes());
        v.push(self.keys.bits() as u8);
        v.extend_from_slice(&[0; 4]); // KEKI
        v.extend_from_slice(&[CIPHER_AES_CTR, 0, SE_SRT, 0, 0, 0]);
        v.push((SALT_LEN / 4) as u8);
        v.push((self.key_len.bytes() / 4) as u8);
        v.extend_from_slice(&self.salt);
        v.extend_from_slice(&self.wrapped);
        v
    }

    /// Builds a KM message carrying `even` and/or `odd`, wrapped under the KEK derived
    /// from `passphrase` and `salt`.
    pub fn seal(
        passphrase: &str,
        salt: [u8; SALT_LEN],
        even: Option<&Sek>,
        odd: Option<&Sek>,
    ) -> Result<KmMessage, Error> {
        let (keys, key_len) = match (even, odd) {
            (Some(e), Some(o)) if e.len() == o.len() => (KeyFlag::Both, e.len()),
            (Some(e), None) => (KeyFlag::Even, e.len()),
            (None, Some(o)) => (KeyFlag::Odd, o.len()),
            _ => {
                return Err(Error::Config(
                    "KM message needs one or two keys of one length",
                ))
            }
        };
        let mut plain = Vec::with_capacity(64);
        for k in [even, odd].into_iter().flatten() {
            plain.extend_from_slice(k.as_slice());
        }
        let kek = derive_kek(passphrase, &salt, key_len);
        let wrapped = key_wrap(&kek, &plain)?;
        Ok(KmMessage {
            keys,
            salt,
            key_len,
            wrapped,
        })
    }

    /// Unwraps the keys with `passphrase`: `(even, odd)`. A wrong passphrase fails the
    /// key-wrap integrity check and returns `Err(Error::Rejected(BADSECRET))`.
    pub fn open(&self, passphrase: &str) -> Result<(Option<Sek>, Option<Sek>), Error> {
        let kek = derive_kek(passphrase, &self.salt, self.key_len);
        let plain = key_unwrap(&kek, &self.wrapped)?;
        let n = self.key_len.bytes();
        let first = plain.get(..n).and_then(Sek::from_slice);
        let second = plain.get(n..2 * n).and_then(Sek::from_slice);
        Ok(match self.keys {
            KeyFlag::Even => (first, None),
            KeyFlag::Odd => (None, first),
            KeyFlag::Both => (first, second),
            KeyFlag::None => (None, None),
        })
    }
}

/// Derives the key-encrypting key: PBKDF2-HMAC-SHA1(passphrase, last 8 salt bytes, 2048).
pub fn derive_kek(passphrase: &str, salt: &[u8; SALT_LEN], len: KeyLength) -> Vec<u8> {
    let mut kek = vec![0u8; len.bytes()];
    let psalt = &salt[SALT_LEN - PBKDF2_SALT_LEN..];
    pbkdf2::pbkdf2_hmac::<Sha1>(passphrase.as_bytes(), psalt, PBKDF2_ITERATIONS, &mut kek);
    kek
}

fn bad_secret() -> Error {
    Error::Rejected(crate::handshake::RejectReason::BADSECRET)
}

/// AES key wrap (RFC 3394) of `plain` under `kek`.
pub fn key_wrap(kek: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
    let r = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek).map(|k| k.wrap_vec(plain)),
        24 => aes_kw::KekAes192::try_from(kek).map(|k| k.wrap_vec(plain)),
        32 => aes_kw::KekAes256::try_from(kek).map(|k| k.wrap_vec(plain)),
        _ => return Err(Error::Config("KEK length")),
    };
    match r {
        Ok(Ok(v)) => Ok(v),
        _ => Err(Error::Config("key wrap input")),
    }
}

/// AES key unwrap (RFC 3394); fails on an integrity check mismatch (wrong passphrase).
pub fn key_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, Error> {
    let r = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek).map(|k| k.unwrap_vec(wrapped)),
        24 => aes_kw::KekAes192::try_from(kek).map(|k| k.unwrap_vec(wrapped)),
        32 => aes_kw::KekAes256::try_from(kek).map(|k| k.unwrap_vec(wrapped)),
        _ => return Err(Error::Config("KEK length")),
    };
    match r {
        Ok(Ok(v)) => Ok(v),
        _ => Err(bad_secret()),
    }
}

/// The AES-CTR IV libsrt uses: the first 112 bits of the salt XOR the packet index
/// (sequence number) placed at bytes 10..14, and a 16-bit block counter starting at 0.
pub fn ctr_iv(salt: &[u8; SALT_LEN], packet_index: u32) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[10..14].copy_from_slice(&packet_index.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt.iter()).take(14) {
        *b ^= *s;
    }
    iv
}

/// Encrypts or decrypts (the same operation) `data` in place with AES-CTR.
pub fn ctr_apply(key: &Sek, salt: &[u8; SALT_LEN], packet_index: u32, data: &mut [u8]) {
    let iv = ctr_iv(salt, packet_index);
    let iv = (&iv).into();
    match &key.0 {
        SekBytes::Aes128(k) => {
            ctr::Ctr128BE::<aes::Aes128>::new(k.into(), iv).apply_keystream(data);
        }
        SekBytes::Aes192(k) => {
            ctr::Ctr128BE::<aes::Aes192>::new(k.into(), iv).apply_keystream(data);
        }
        SekBytes::Aes256(k) => {
            ctr::Ctr128BE::<aes::Aes256>::new(k.into(), iv).apply_keystream(data);
        }
    }
}

/// A deterministic generator of unpredictable values (socket IDs, sequence numbers,
/// salts, keys, SYN cookies) keyed by a secret the driver supplies: HMAC-SHA1 of the
/// secret over a counter. Given a random secret its output is unpredictable; given a
/// fixed secret (tests) it is reproducible. The library never reads an entropy source.
#[derive(Clone)]
pub struct KeyedRng {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for KeyedRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedRng(<secret>)")
    }
}

impl KeyedRng {
    /// Seeds the generator.
    pub fn new(secret: [u8; 32]) -> Self {
        KeyedRng {
            key: secret,
            counter: 0,
        }
    }

    /// HMAC-SHA1(secret, parts...) — used for SYN cookies.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut out = [0u8; 20];
        let mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.key);
        debug_assert!(mac.is_ok(), "HMAC accepts keys of any length");
        if let Ok(mut m) = mac {
            for p in parts {
                m.update(p);
            }
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// Fills `out` with fresh bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(20) {
            self.counter = self.counter.wrapping_add(1);
            let block = self.mac(&[b"rng", &self.counter.to_be_bytes()]);
            for (o, b) in chunk.iter_mut().zip(block) {
                *o = b;
            }
        }
    }

    /// A fresh stream-encrypting key of `len` (drawing 32 bytes whatever the length).
    pub fn sek(&mut self, len: KeyLength) -> Sek {
        let mut bytes = [0u8; 32];
        self.fill(&mut bytes);
        Sek::from_prefix(&bytes, len)
    }

    /// A fresh u32.
    pub fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_be_bytes(b)
    }
}

/// Checks a passphrase against libsrt's length rule.
pub fn check_passphrase(p: &str) -> Result<(), Error> {
    if (MIN_PASSPHRASE_LEN..=MAX_PASSPHRASE_LEN).contains(&p.len()) {
        Ok(())
    } else {
        Err(Error::Config("passphrase must be 10 to 79 bytes"))
    }
}

/// Both keys and the salt of one direction of an encrypted connection.
#[derive(Debug, Clone)]
pub(crate) struct KeySet {
    pub salt: [u8; SALT_LEN],
    pub even: Option<Sek>,
    pub odd: Option<Sek>,
}

impl KeySet {
    /// Decrypts `data` in place using the key named by `flag`. Returns false if that key
    /// is not known (the packet cannot be decrypted).
    pub fn decrypt(&self, flag: KeyFlag, packet_index: u32, data: &mut [u8]) -> bool {
        let key = match flag {
            KeyFlag::Even => self.even.as_ref(),
            KeyFlag::Odd => self.odd.as_ref(),
            _ => None,
        };
        match key {
            Some(k) => {
                ctr_apply(k, &self.salt, packet_index, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 section 4.1: 128-bit key data with a 128-bit KEK.
        let kek = hex("000102030405060708090A0B0C0D0E0F");
        let key = hex("00112233445566778899AABBCCDDEEFF");
        let w = key_wrap(&kek, &key).unwrap();
        assert_eq!(w, hex("1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"));
        assert_eq!(key_unwrap(&kek, &w).unwrap(), key);
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert_eq!(key_unwrap(&kek, &bad), Err(bad_secret()));
    }

    #[test]
    fn a_drawn_key_is_the_first_bytes_of_32_drawn_and_the_generator_moves_on_by_32() {
        for len in [KeyLength::Aes128, KeyLength::Aes192, KeyLength::Aes256] {
            let mut rng = KeyedRng::new([7; 32]);
            let mut reference = rng.clone();
            let key = rng.sek(len);
            let mut raw = [0u8; 32];
            reference.fill(&mut raw);
            assert_eq!(key.len(), len);
            assert_eq!(key.as_slice(), &raw[..len.bytes()]);
            assert_eq!(rng.next_u32(), reference.next_u32());
        }
    }

    #[test]
    fn keys_are_made_of_16_24_or_32_bytes_only() {
        for n in 0..=40 {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let key = Sek::from_slice(&bytes);
            match KeyLength::from_bytes(n) {
                Some(len) => {
                    let key = key.unwrap();
                    assert_eq!((key.len(), key.as_slice()), (len, &bytes[..]));
                }
                None => assert!(key.is_none(), "{n} bytes"),
            }
        }
    }

    #[test]
    fn a_km_message_cut_anywhere_is_truncated_and_trailing_bytes_are_ignored() {
        let sek = Sek::from_slice(&[5u8; 24]).unwrap();
        let wire = KmMessage::seal("passphrase-1", [3; 16], Some(&sek), None)
            .unwrap()
            .to_bytes();
        for cut in 0..wire.len() {
            assert!(
                matches!(KmMessage::parse(&wire[..cut]), Err(Error::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut padded = wire.clone();
        padded.extend_from_slice(&[0xAA; 8]);
        let m = KmMessage::parse(&padded).unwrap();
        assert_eq!(m.to_bytes(), wire);
        assert_eq!(m.open("passphrase-1").unwrap(), (Some(sek), None));
    }

    #[test]
    fn iv_layout() {
        let salt: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let iv = ctr_iv(&salt, 0x0102_0304);
        assert_eq!(
            iv,
            [
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11 ^ 1,
                12 ^ 2,
                13 ^ 3,
                14 ^ 4,
                0,
                0
            ]
        );
    }

    #[test]
    fn km_round_trip_all_lengths() {
        for n in [16usize, 24, 32] {
            let mut rng = KeyedRng::new([7; 32]);
            let mut k = vec![0u8; n];
            rng.fill(&mut k);
            let sek = Sek::from_slice(&k).unwrap();
            let mut salt = [0u8; 16];
            rng.fill(&mut salt);
            let km = KmMessage::seal("correct horse battery", salt, Some(&sek), None).unwrap();
            let bytes = km.to_bytes();
            assert_eq!(bytes.len(), 16 + 16 + 8 + n);
            assert_eq!(bytes[..4], [0x12, 0x20, 0x29, 0x01]);
            let parsed = KmMessage::parse(&bytes).unwrap();
            assert_eq!(parsed, km);
            let (even, odd) = parsed.open("correct horse battery").unwrap();
            assert_eq!(even.unwrap(), sek);
            assert!(odd.is_none());
            assert_eq!(
                parsed.open("wrong horse battery"),
                Err(Error::Rejected(crate::handshake::RejectReason::BADSECRET))
            );
            for cut in 0..bytes.len() {
                assert!(KmMessage::parse(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn ctr_is_an_involution() {
        let sek = Sek::from_slice(&[9u8; 16]).unwrap();
        let salt = [3u8; 16];
        let mut data = b"hello transport stream".to_vec();
        ctr_apply(&sek, &salt, 42, &mut data);
        assert_ne!(&data[..], b"hello transport stream");
        ctr_apply(&sek, &salt, 42, &mut data);
        assert_eq!(&data[..], b"hello transport stream");
    }
}
