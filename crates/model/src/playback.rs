//! Signed playback: a tenant's playback signing keys, and the tokens they sign. Pure: the
//! clock comes in as an argument (`now_s`), randomness only from [`PlaybackKey::generate`].
//!
//! A playback token is a JSON Web Token (RFC 7519) signed with HMAC-SHA256 (`HS256`), so
//! an operator's backend can mint one with any JWT library:
//!
//! ```text
//! BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(HMAC-SHA256(secret, BASE64URL(header) "." BASE64URL(claims)))
//! header:  {"alg":"HS256","typ":"JWT","kid":"<the signing key's id>"}
//! claims:  {"tenant":"acme","stream":"main","exp":1767225600}
//! ```
//!
//! Base64url without padding (RFC 4648 section 5), so a token travels unescaped in a query
//! string. The HMAC key is the secret's text exactly as the API shows it (64 hex digits;
//! not decoded). `stream` is a stream name, or a prefix followed by `*` (`event-*`; `*`
//! alone: every stream of the tenant). `exp` is Unix seconds (an integer); an optional
//! `nbf` is honoured; other claims (`iat`, ...) are ignored. See `docs/signed-playback.md`.
//!
//! Verification ([`verify_token`]): the token's shape and size, the header (`alg` must be
//! `HS256`: `none` and every other algorithm are refused; `kid` must name one of the
//! tenant's keys), the signature (compared in constant time by the `hmac` crate), and only
//! then the claims: the tenant and stream of the request, and the time.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::tenant::{KeyId, NoRandomness, KEY_ID_BYTES};

/// Random bytes of a playback signing secret: 256 bits, the size of HMAC-SHA256's output.
pub const PLAYBACK_SECRET_BYTES: usize = 32;

/// Signing keys a tenant keeps: the current one and the one before it, so tokens signed
/// before a rotation keep working until they expire (or the previous key is dropped).
pub const MAX_PLAYBACK_KEYS: usize = 2;

/// The longest token read: a real one is about 200 characters; anything much longer is
/// refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 2048;

/// The longest life the API gives a token it mints: 30 days. (A backend minting its own
/// tokens may choose any `exp`.)
pub const MAX_PLAYBACK_TTL_S: u64 = 30 * 24 * 3600;

/// The algorithm every token is signed with (the header's `alg`).
pub const TOKEN_ALG: &str = "HS256";

/// One of a tenant's playback signing keys: public id, secret, creation time. Its `Debug`
/// never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackKey {
    /// Its public id: the `kid` of the tokens it signs.
    pub id: KeyId,
    /// The secret: [`PLAYBACK_SECRET_BYTES`] random bytes as 64 lower-case hex digits. The
    /// HMAC key is this text itself.
    pub secret: String,
    /// Unix ms when it was made.
    pub created_ms: i64,
}

impl fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaybackKey({}, …)", self.id)
    }
}

impl PlaybackKey {
    /// A new key from the operating system's generator, made at `created_ms`.
    pub fn generate(created_ms: i64) -> Result<Self, NoRandomness> {
        let mut id = [0u8; KEY_ID_BYTES];
        let mut secret = [0u8; PLAYBACK_SECRET_BYTES];
        getrandom::fill(&mut id).map_err(|e| NoRandomness(e.to_string()))?;
        getrandom::fill(&mut secret).map_err(|e| NoRandomness(e.to_string()))?;
        let id = crate::tenant::hex(&id)
            .parse()
            .map_err(|e: String| NoRandomness(e))?;
        Ok(Self {
            id,
            secret: crate::tenant::hex(&secret),
            created_ms,
        })
    }

    /// The HMAC keyed with the secret's text. (HMAC takes keys of any length: this never
    /// fails, but a failure would be a refusal, not a panic.)
    fn mac(&self) -> Option<Hmac<Sha256>> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes()).ok()
    }
}

/// What a token grants: one tenant's stream (or streams by prefix) until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackClaims {
    /// The tenant.
    pub tenant: String,
    /// A stream name, or a prefix followed by `*` ([`valid_stream_pattern`]).
    pub stream: String,
    /// Unix seconds after which the token is refused.
    pub exp: i64,
    /// Unix seconds before which the token is refused, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl PlaybackClaims {
    /// Whether the claims cover stream `stream` of tenant `tenant`.
    pub fn covers(&self, tenant: &str, stream: &str) -> bool {
        self.tenant == tenant
            && match self.stream.strip_suffix('*') {
                Some(prefix) => stream.starts_with(prefix),
                None => self.stream == stream,
            }
    }
}

/// Whether `s` may be a token's `stream`: a stream name ([`crate::valid_name`]), or a
/// prefix of one followed by `*` (the prefix may be empty: every stream).
pub fn valid_stream_pattern(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some(prefix) => prefix.is_empty() || crate::valid_name(prefix),
        None => crate::valid_name(s),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDenial {
    /// Not a token of this format: shape, size, encoding, JSON, a missing claim, an
    /// algorithm other than `HS256`.
    Malformed,
    /// Its `kid` names none of the tenant's current keys (another tenant's, or a dropped one).
    UnknownKey,
    /// The signature does not match: tampered, or signed with another secret.
    BadSignature,
    /// Past its `exp`, or before its `nbf`.
    Expired,
    /// Valid, but for another tenant or stream.
    OtherStream,
}

impl TokenDenial {
    /// What the 403's body says.
    pub fn text(self) -> &'static str {
        match self {
            Self::Malformed => "malformed playback token",
            Self::UnknownKey => "playback token signed with an unknown key",
            Self::BadSignature => "playback token signature does not match",
            Self::Expired => "playback token expired or not yet valid",
            Self::OtherStream => "playback token is for another stream",
        }
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    kid: Option<String>,
    /// RFC 7515 section 4.1.11: extensions a reader must understand; this one knows none.
    crit: Option<serde_json::Value>,
}

/// Signs `claims` with `key`: the token to put in `?token=`.
pub fn mint_token(key: &PlaybackKey, claims: &PlaybackClaims) -> String {
    let signature = |signed: &str| {
        key.mac()
            .map(|mut mac| {
                mac.update(signed.as_bytes());
                base64url_encode(&mac.finalize().into_bytes())
            })
            .unwrap_or_default()
    };
    let header = HeaderOut {
        alg: TOKEN_ALG,
        typ: "JWT",
        kid: key.id.as_str(),
    };
    // Serialising these plain structs cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = base64url_encode(&header);
    token.push('.');
    token.push_str(&base64url_encode(&claims));
    let signature = signature(&token);
    token.push('.');
    token.push_str(&signature);
    token
}

/// Checks `token` for a request of stream `stream` of tenant `tenant` at `now_s` (Unix
/// seconds), against the tenant's `keys`; the claims when it grants that request.
pub fn verify_token(
    token: &str,
    keys: &[PlaybackKey],
    tenant: &str,
    stream: &str,
    now_s: i64,
) -> Result<PlaybackClaims, TokenDenial> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenDenial::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenDenial::Malformed);
    };
    let header = base64url_decode(header_b64).ok_or(TokenDenial::Malformed)?;
    let header: HeaderIn = serde_json::from_slice(&header).map_err(|_| TokenDenial::Malformed)?;
    if header.alg != TOKEN_ALG || header.crit.is_some() {
        return Err(TokenDenial::Malformed);
    }
    let kid = header.kid.ok_or(TokenDenial::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id.as_str() == kid)
        .ok_or(TokenDenial::UnknownKey)?;
    let signature = base64url_decode(signature_b64).ok_or(TokenDenial::Malformed)?;
    let mut mac = key.mac().ok_or(TokenDenial::BadSignature)?;
    // The signed text is the token up to its last dot, exactly as presented.
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    mac.update(
        token
            .get(..signed_len)
            .ok_or(TokenDenial::Malformed)?
            .as_bytes(),
    );
    mac.verify_slice(&signature)
        .map_err(|_| TokenDenial::BadSignature)?;
    let claims = base64url_decode(claims_b64).ok_or(TokenDenial::Malformed)?;
    let claims: PlaybackClaims =
        serde_json::from_slice(&claims).map_err(|_| TokenDenial::Malformed)?;
    if now_s >= claims.exp || claims.nbf.is_some_and(|nbf| now_s < nbf) {
        return Err(TokenDenial::Expired);
    }
    if !claims.covers(tenant, stream) {
        return Err(TokenDenial::OtherStream);
    }
    Ok(claims)
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 section 5).
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
    out
}

/// Reads base64url without padding; `None` for any other character, padding, an
/// impossible length, or unused bits that are not zero (so each value has one encoding).
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        // Bits past the last whole byte must be zero.
        let used_bits = 8 * bytes;
        if n & (0xff_ffff >> used_bits) != 0 {
            return None;
        }
        for i in 0..bytes {
            out.push(((n >> (16 - 8 * i)) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn key() -> PlaybackKey {
        PlaybackKey {
            id: "0123456789abcdef".parse().unwrap(),
            secret: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
            created_ms: 0,
        }
    }

    fn claims(stream: &str, exp: i64) -> PlaybackClaims {
        PlaybackClaims {
            tenant: "acme".into(),
            stream: stream.into(),
            exp,
            nbf: None,
        }
    }

    #[test]
    fn base64url_round_trips_and_matches_rfc4648_vectors() {
        // RFC 4648 section 10, without padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), encoded);
            assert_eq!(base64url_decode(encoded).unwrap(), plain.as_bytes());
        }
        // The URL-safe alphabet's last two characters.
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for n in 0..64usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)).unwrap(), bytes);
        }
        for bad in ["Zg==", "Z", "Zm9v+", "Zm9v/", "Zh", "Zm9", "a b", "Zm.v"] {
            assert!(base64url_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_minted_token_verifies_for_its_stream_until_it_expires() {
        let k = key();
        let token = mint_token(&k, &claims("main", NOW + 60));
        assert!(token.len() < 250, "{} characters: {token}", token.len());
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        let keys = [k];
        let ok = verify_token(&token, &keys, "acme", "main", NOW).unwrap();
        assert_eq!(ok, claims("main", NOW + 60));
        assert_eq!(
            verify_token(&token, &keys, "acme", "main", NOW + 59).map(|c| c.exp),
            Ok(NOW + 60)
        );
        assert_eq!(
            verify_token(&token, &keys, "acme", "main", NOW + 60),
            Err(TokenDenial::Expired)
        );
        assert_eq!(
            verify_token(&token, &keys, "acme", "other", NOW),
            Err(TokenDenial::OtherStream)
        );
        assert_eq!(
            verify_token(&token, &keys, "beta", "main", NOW),
            Err(TokenDenial::OtherStream)
        );
    }

    #[test]
    fn the_token_is_a_standard_hs256_jwt() {
        // A byte-exact vector, computed independently (Python's hmac, hashlib, base64, json):
        // h = b64(b'{"alg":"HS256","typ":"JWT","kid":"0123456789abcdef"}')
        // c = b64(b'{"tenant":"acme","stream":"main","exp":1767225600}')
        // s = b64(hmac.new(SECRET_TEXT, f"{h}.{c}".encode(), "sha256").digest())
        let token = mint_token(&key(), &claims("main", NOW));
        assert_eq!(token, EXPECTED_JWT);
    }

    const EXPECTED_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjAxMjM0NTY3ODlhYmNkZWYifQ.eyJ0ZW5hbnQiOiJhY21lIiwic3RyZWFtIjoibWFpbiIsImV4cCI6MTc2NzIyNTYwMH0.3tXD81rHafl6KlMMHmINt4tjgnq-H-V2TiMLuHmzRuk";

    #[test]
    fn a_tampered_token_is_refused() {
        let k = key();
        let keys = [k.clone()];
        let token = mint_token(&k, &claims("main", NOW + 60));
        let parts: Vec<&str> = token.split('.').collect();
        // Claims swapped for another stream's, the signature kept.
        let other = base64url_encode(br#"{"tenant":"acme","stream":"other","exp":9999999999}"#);
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        assert_eq!(
            verify_token(&forged, &keys, "acme", "other", NOW),
            Err(TokenDenial::BadSignature)
        );
        // Every single character changed anywhere: never accepted.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(bytes).unwrap();
            assert!(
                verify_token(&t, &keys, "acme", "main", NOW).is_err(),
                "changed at {i}: {t}"
            );
        }
        // Signed with another secret under the same id.
        let mut impostor = k.clone();
        impostor.secret = "ff".repeat(32);
        let t = mint_token(&impostor, &claims("main", NOW + 60));
        assert_eq!(
            verify_token(&t, &keys, "acme", "main", NOW),
            Err(TokenDenial::BadSignature)
        );
        // Signed with a key the tenant does not have.
        let stranger = PlaybackKey::generate(0).unwrap();
        let t = mint_token(&stranger, &claims("main", NOW + 60));
        assert_eq!(
            verify_token(&t, &keys, "acme", "main", NOW),
            Err(TokenDenial::UnknownKey)
        );
        assert_eq!(
            verify_token(&token, &[], "acme", "main", NOW),
            Err(TokenDenial::UnknownKey)
        );
    }

    #[test]
    fn other_algorithms_and_shapes_are_refused() {
        let k = key();
        let keys = [k.clone()];
        let claims_b64 = base64url_encode(br#"{"tenant":"acme","stream":"main","exp":9999999999}"#);
        let none = base64url_encode(br#"{"alg":"none","kid":"0123456789abcdef"}"#);
        let hs512 = base64url_encode(br#"{"alg":"HS512","kid":"0123456789abcdef"}"#);
        let no_kid = base64url_encode(br#"{"alg":"HS256"}"#);
        let crit = base64url_encode(br#"{"alg":"HS256","kid":"0123456789abcdef","crit":["x"]}"#);
        for header in [none, hs512, no_kid, crit] {
            for signature in ["", "AAAA"] {
                let t = format!("{header}.{claims_b64}.{signature}");
                assert_eq!(
                    verify_token(&t, &keys, "acme", "main", NOW),
                    Err(TokenDenial::Malformed),
                    "{t}"
                );
            }
        }
        let good = mint_token(&k, &claims("main", NOW + 60));
        for bad in [
            String::new(),
            "x".into(),
            "a.b".into(),
            format!("{good}.x"),
            format!("{good}="),
            "a".repeat(MAX_TOKEN_LEN + 1),
            "..".into(),
        ] {
            assert!(
                verify_token(&bad, &keys, "acme", "main", NOW).is_err(),
                "{bad}"
            );
        }
        // Signed claims that are not the claims: missing exp, exp as text.
        for body in [
            r#"{"tenant":"acme","stream":"main"}"#,
            r#"{"tenant":"acme","stream":"main","exp":"9999999999"}"#,
            r#"[1,2]"#,
        ] {
            let header = base64url_encode(br#"{"alg":"HS256","kid":"0123456789abcdef"}"#);
            let unsigned = format!("{header}.{}", base64url_encode(body.as_bytes()));
            let mut mac = k.mac().unwrap();
            mac.update(unsigned.as_bytes());
            let t = format!(
                "{unsigned}.{}",
                base64url_encode(&mac.finalize().into_bytes())
            );
            assert_eq!(
                verify_token(&t, &keys, "acme", "main", NOW),
                Err(TokenDenial::Malformed),
                "{body}"
            );
        }
    }

    #[test]
    fn nbf_extra_claims_and_the_previous_key_are_honoured() {
        let old = key();
        let new = PlaybackKey::generate(1).unwrap();
        let keys = [new.clone(), old.clone()];
        let mut c = claims("main", NOW + 60);
        c.nbf = Some(NOW + 10);
        let t = mint_token(&old, &c);
        assert_eq!(
            verify_token(&t, &keys, "acme", "main", NOW),
            Err(TokenDenial::Expired)
        );
        assert!(verify_token(&t, &keys, "acme", "main", NOW + 10).is_ok());
        // A backend's JWT library may add `iat` or other claims: ignored.
        let header = base64url_encode(
            format!(r#"{{"typ":"JWT","alg":"HS256","kid":"{}"}}"#, new.id).as_bytes(),
        );
        let body = base64url_encode(
            br#"{"iat":1,"sub":"x","tenant":"acme","stream":"main","exp":9999999999}"#,
        );
        let unsigned = format!("{header}.{body}");
        let mut mac = new.mac().unwrap();
        mac.update(unsigned.as_bytes());
        let t = format!(
            "{unsigned}.{}",
            base64url_encode(&mac.finalize().into_bytes())
        );
        assert!(verify_token(&t, &keys, "acme", "main", NOW).is_ok());
    }

    #[test]
    fn stream_patterns_cover_by_prefix() {
        let all = claims("*", NOW);
        assert!(all.covers("acme", "main"));
        assert!(!all.covers("beta", "main"));
        let events = claims("event-*", NOW);
        assert!(events.covers("acme", "event-1"));
        assert!(events.covers("acme", "event-"));
        assert!(!events.covers("acme", "main"));
        assert!(!claims("main", NOW).covers("acme", "main2"));
        for good in ["main", "*", "event-*", "a.b*", "A_b-c"] {
            assert!(valid_stream_pattern(good), "{good}");
        }
        for bad in ["", "**", "a*b", ".x", "a/b", "a b", "*x", &"x".repeat(129)] {
            assert!(!valid_stream_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn keys_are_random_and_their_debug_hides_the_secret() {
        let a = PlaybackKey::generate(0).unwrap();
        let b = PlaybackKey::generate(0).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 2 * PLAYBACK_SECRET_BYTES);
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.secret), "{shown}");
        assert!(shown.contains(a.id.as_str()));
    }
}
