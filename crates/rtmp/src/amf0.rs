//! AMF0 values: decoding and encoding (the encoding of RTMP commands and metadata).
//!
//! Decoding is bounded by [`MAX_AMF0_DEPTH`], [`MAX_AMF0_ELEMENTS`] and [`MAX_AMF0_VALUES`].
//! Long strings and XML documents decode as [`Amf0Value::String`]; typed objects decode as
//! [`Amf0Value::Object`] (the class name is skipped); references are rejected.

use bytes::{BufMut, BytesMut};

use crate::error::RtmpError;

/// Deepest nesting of objects and arrays accepted when decoding. Real commands and metadata
/// nest two or three levels; the limit bounds recursion on hostile input.
pub const MAX_AMF0_DEPTH: usize = 16;
/// Most entries accepted in one object, ECMA array or strict array.
pub const MAX_AMF0_ELEMENTS: usize = 4096;
/// Most values (at any depth) decoded from one buffer.
pub const MAX_AMF0_VALUES: usize = 65_536;

const MARKER_NUMBER: u8 = 0x00;
const MARKER_BOOLEAN: u8 = 0x01;
const MARKER_STRING: u8 = 0x02;
const MARKER_OBJECT: u8 = 0x03;
const MARKER_NULL: u8 = 0x05;
const MARKER_UNDEFINED: u8 = 0x06;
const MARKER_REFERENCE: u8 = 0x07;
const MARKER_ECMA_ARRAY: u8 = 0x08;
const MARKER_OBJECT_END: u8 = 0x09;
const MARKER_STRICT_ARRAY: u8 = 0x0a;
const MARKER_DATE: u8 = 0x0b;
const MARKER_LONG_STRING: u8 = 0x0c;
const MARKER_UNSUPPORTED: u8 = 0x0d;
const MARKER_XML_DOCUMENT: u8 = 0x0f;
const MARKER_TYPED_OBJECT: u8 = 0x10;

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE-754 double.
    Number(f64),
    /// Boolean.
    Boolean(bool),
    /// String, long string or XML document (invalid UTF-8 is replaced).
    String(String),
    /// Anonymous or typed object: properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    /// Null.
    Null,
    /// Undefined (also what the "unsupported" marker decodes to).
    Undefined,
    /// ECMA (associative) array: properties in wire order.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Strict (dense) array.
    StrictArray(Vec<Amf0Value>),
    /// Date: milliseconds since the epoch and a time zone (ignored by everyone).
    Date {
        /// Milliseconds since 1970-01-01 UTC.
        millis: f64,
        /// Time zone offset in minutes (should be 0).
        time_zone: i16,
    },
}

impl Amf0Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The first property named `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Decodes every value in `buf` (a command's or a data message's payload).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, RtmpError> {
    let mut reader = Reader {
        buf,
        pos: 0,
        values: 0,
    };
    let mut out = Vec::new();
    while reader.pos < buf.len() {
        if out.len() >= MAX_AMF0_ELEMENTS {
            return Err(RtmpError::Amf("too many top-level values"));
        }
        out.push(reader.value(0)?);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RtmpError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RtmpError::Amf("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RtmpError::Amf("truncated value"))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RtmpError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, RtmpError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RtmpError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RtmpError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn string(&mut self, len: usize) -> Result<String, RtmpError> {
        Ok(String::from_utf8_lossy(self.bytes(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, RtmpError> {
        let len = usize::from(self.u16()?);
        self.string(len)
    }

    fn long_string(&mut self) -> Result<String, RtmpError> {
        let len = usize::try_from(self.u32()?).map_err(|_| RtmpError::Amf("length overflow"))?;
        self.string(len)
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, RtmpError> {
        if depth > MAX_AMF0_DEPTH {
            return Err(RtmpError::Amf("nesting too deep"));
        }
        self.values += 1;
        if self.values > MAX_AMF0_VALUES {
            return Err(RtmpError::Amf("too many values"));
        }
        let marker = self.u8()?;
        Ok(match marker {
            MARKER_NUMBER => Amf0Value::Number(f64::from_be_bytes(self.array()?)),
            MARKER_BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            MARKER_STRING => Amf0Value::String(self.short_string()?),
            MARKER_OBJECT => Amf0Value::Object(self.properties(depth, false)?),
            MARKER_NULL => Amf0Value::Null,
            MARKER_UNDEFINED | MARKER_UNSUPPORTED => Amf0Value::Undefined,
            MARKER_REFERENCE => return Err(RtmpError::Amf("references are not supported")),
            MARKER_ECMA_ARRAY => {
                // The count is advisory (often wrong); the end marker ends the array. Some
                // encoders omit the end marker at the end of the buffer: tolerated.
                let _count = self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth, true)?)
            }
            MARKER_OBJECT_END => return Err(RtmpError::Amf("unexpected object end")),
            MARKER_STRICT_ARRAY => {
                let count = self.u32()?;
                let count = usize::try_from(count).map_err(|_| RtmpError::Amf("array count"))?;
                if count > MAX_AMF0_ELEMENTS {
                    return Err(RtmpError::Amf("too many array elements"));
                }
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            MARKER_DATE => {
                let millis = f64::from_be_bytes(self.array()?);
                let time_zone = i16::from_be_bytes(self.array()?);
                Amf0Value::Date { millis, time_zone }
            }
            MARKER_LONG_STRING | MARKER_XML_DOCUMENT => Amf0Value::String(self.long_string()?),
            MARKER_TYPED_OBJECT => {
                let _class_name = self.short_string()?;
                Amf0Value::Object(self.properties(depth, false)?)
            }
            _ => return Err(RtmpError::Amf("unknown or unsupported marker")),
        })
    }

    fn properties(
        &mut self,
        depth: usize,
        eof_ends: bool,
    ) -> Result<Vec<(String, Amf0Value)>, RtmpError> {
        let mut props = Vec::new();
        loop {
            if eof_ends && self.pos >= self.buf.len() {
                return Ok(props);
            }
            let key = self.short_string()?;
            if key.is_empty() {
                if eof_ends && self.pos >= self.buf.len() {
                    return Ok(props);
                }
                if self.buf.get(self.pos) == Some(&MARKER_OBJECT_END) {
                    self.pos += 1;
                    return Ok(props);
                }
            }
            if props.len() >= MAX_AMF0_ELEMENTS {
                return Err(RtmpError::Amf("too many properties"));
            }
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

/// The first `u32::MAX` elements of `s` at most, and their count: a length field of 32 bits
/// cannot say more (no real value comes near).
fn at_most_u32<T>(s: &[T]) -> (u32, &[T]) {
    let len = s.len().min(u32::MAX as usize);
    // `len <= s.len()`, so `get` returns the whole prefix; `len <= u32::MAX`, so the cast
    // is exact.
    (len as u32, s.get(..len).unwrap_or(s))
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Amf0Value, out: &mut BytesMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(MARKER_NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(MARKER_BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.put_u8(MARKER_STRING);
                out.put_u16(len);
                out.put_slice(s.as_bytes());
            }
            Err(_) => {
                out.put_u8(MARKER_LONG_STRING);
                let (len, bytes) = at_most_u32(s.as_bytes());
                out.put_u32(len);
                out.put_slice(bytes);
            }
        },
        Amf0Value::Object(props) => {
            out.put_u8(MARKER_OBJECT);
            encode_properties(props, out);
        }
        Amf0Value::Null => out.put_u8(MARKER_NULL),
        Amf0Value::Undefined => out.put_u8(MARKER_UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(MARKER_ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(MARKER_STRICT_ARRAY);
            let (count, items) = at_most_u32(items);
            out.put_u32(count);
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, time_zone } => {
            out.put_u8(MARKER_DATE);
            out.put_f64(*millis);
            out.put_i16(*time_zone);
        }
    }
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut BytesMut) {
    for (key, value) in props {
        // A key longer than a u16 can count is cut (no real key comes near).
        let bytes = key.as_bytes();
        let len = bytes.len().min(usize::from(u16::MAX));
        out.put_u16(len as u16);
        out.put_slice(bytes.get(..len).unwrap_or(bytes));
        encode(value, out);
    }
    out.put_slice(&[0, 0, MARKER_OBJECT_END]);
}

/// Encodes a sequence of values (a command) into a new buffer.
pub fn encode_all(values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode(v, &mut out);
    }
    out
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

    #[test]
    fn scalars_byte_exact() {
        let v = vec![
            Amf0Value::Number(1.0),
            Amf0Value::Boolean(true),
            Amf0Value::String("ab".into()),
            Amf0Value::Null,
            Amf0Value::Undefined,
        ];
        let bytes = encode_all(&v);
        assert_eq!(
            bytes.as_ref(),
            hex("00 3ff0000000000000 01 01 02 0002 6162 05 06").as_slice()
        );
        assert_eq!(decode_all(&bytes).unwrap(), v);
    }

    #[test]
    fn object_and_ecma_byte_exact() {
        let v = Amf0Value::Object(vec![("a".into(), Amf0Value::Number(0.0))]);
        let bytes = encode_all(std::slice::from_ref(&v));
        assert_eq!(
            bytes.as_ref(),
            hex("03 0001 61 00 0000000000000000 000009").as_slice()
        );
        assert_eq!(decode_all(&bytes).unwrap(), vec![v]);
        let e = Amf0Value::EcmaArray(vec![("b".into(), Amf0Value::Boolean(false))]);
        let bytes = encode_all(std::slice::from_ref(&e));
        assert_eq!(
            bytes.as_ref(),
            hex("08 00000001 0001 62 01 00 000009").as_slice()
        );
        assert_eq!(decode_all(&bytes).unwrap(), vec![e]);
    }

    #[test]
    fn other_markers_decode() {
        // strict array [1], date, long string "x", xml "y", typed object "C" {k: null}, unsupported
        let bytes = hex("0a 00000001 00 3ff0000000000000
             0b 4000000000000000 0000
             0c 00000001 78
             0f 00000001 79
             10 0001 43 0001 6b 05 000009
             0d");
        let v = decode_all(&bytes).unwrap();
        assert_eq!(
            v,
            vec![
                Amf0Value::StrictArray(vec![Amf0Value::Number(1.0)]),
                Amf0Value::Date {
                    millis: 2.0,
                    time_zone: 0
                },
                Amf0Value::String("x".into()),
                Amf0Value::String("y".into()),
                Amf0Value::Object(vec![("k".into(), Amf0Value::Null)]),
                Amf0Value::Undefined,
            ]
        );
    }

    #[test]
    fn long_string_encodes_as_long() {
        let s = "z".repeat(70_000);
        let bytes = encode_all(&[Amf0Value::String(s.clone())]);
        assert_eq!(&bytes[..5], &hex("0c 00011170")[..]);
        assert_eq!(decode_all(&bytes).unwrap(), vec![Amf0Value::String(s)]);
    }

    #[test]
    fn rejects_reference_truncation_and_depth() {
        assert!(decode_all(&hex("07 0001")).is_err());
        assert!(decode_all(&hex("00 3ff0")).is_err());
        assert!(decode_all(&hex("09")).is_err());
        assert!(decode_all(&hex("03 0001 61")).is_err());
        // 100 nested strict arrays of one element
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&hex("0a 00000001"));
        }
        deep.push(MARKER_NULL);
        assert_eq!(decode_all(&deep), Err(RtmpError::Amf("nesting too deep")));
        // a strict array claiming 4 billion elements
        assert!(decode_all(&hex("0a ffffffff 05")).is_err());
    }

    #[test]
    fn ecma_without_end_marker_is_tolerated() {
        let v = decode_all(&hex("08 00000001 0001 62 01 01")).unwrap();
        assert_eq!(
            v,
            vec![Amf0Value::EcmaArray(vec![(
                "b".into(),
                Amf0Value::Boolean(true)
            )])]
        );
    }
}
