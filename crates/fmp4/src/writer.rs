//! A minimal ISO-BMFF box writer over one `BytesMut`: boxes are opened with a placeholder
//! size that is patched when they are closed, so nesting needs no size pre-computation and
//! no intermediate buffers.

use bytes::{BufMut, BytesMut};

use crate::Fmp4Error;

/// Writes boxes into a buffer.
pub(crate) struct BoxWriter {
    pub(crate) buf: BytesMut,
}

/// An open box: where its size field sits.
#[must_use]
pub(crate) struct OpenBox(usize);

impl BoxWriter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// Opens a plain box.
    pub(crate) fn open(&mut self, fourcc: &[u8; 4]) -> OpenBox {
        let at = self.buf.len();
        self.buf.put_u32(0);
        self.buf.put_slice(fourcc);
        OpenBox(at)
    }

    /// Opens a full box (version + 24-bit flags).
    pub(crate) fn open_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) -> OpenBox {
        let b = self.open(fourcc);
        self.buf
            .put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        b
    }

    /// Closes a box, writing its size.
    pub(crate) fn close(&mut self, open: OpenBox) -> Result<(), Fmp4Error> {
        let size = self
            .buf
            .len()
            .checked_sub(open.0)
            .and_then(|s| u32::try_from(s).ok())
            .ok_or(Fmp4Error::LimitExceeded {
                what: "box size",
                limit: u64::from(u32::MAX),
            })?;
        // `open` put a 4-byte placeholder at `open.0` of this buffer, which only grows.
        let field = self
            .buf
            .get_mut(open.0..)
            .and_then(|rest| rest.first_chunk_mut::<4>());
        debug_assert!(field.is_some(), "box size field at {} missing", open.0);
        if let Some(field) = field {
            *field = size.to_be_bytes();
        }
        Ok(())
    }

    /// Writes a box holding `body` verbatim.
    pub(crate) fn leaf(&mut self, fourcc: &[u8; 4], body: &[u8]) -> Result<(), Fmp4Error> {
        let b = self.open(fourcc);
        self.buf.put_slice(body);
        self.close(b)
    }

    /// Writes a full box holding `body` verbatim.
    pub(crate) fn full_leaf(
        &mut self,
        fourcc: &[u8; 4],
        version: u8,
        flags: u32,
        body: &[u8],
    ) -> Result<(), Fmp4Error> {
        let b = self.open_full(fourcc, version, flags);
        self.buf.put_slice(body);
        self.close(b)
    }
}
