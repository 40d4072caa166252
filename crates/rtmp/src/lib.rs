//! A sans-IO RTMP server for publishers (OBS, ffmpeg, GStreamer, librtmp, hardware
//! encoders): handshake, chunk stream, AMF0 and the publish command flow.
//!
//! Nothing here does I/O or reads the clock. The driver owns a [`ServerSession`] per TCP
//! connection and runs this loop:
//!
//! ```text
//! loop {
//!     read bytes → buf;  session.handle_input(now, &mut buf)?;   // partial data stays in buf
//!     while let Some(b) = session.poll_transmit() { write b }
//!     while let Some(e) = session.poll_event() {
//!         PublishRequest → session.accept_publish(id) / reject_publish(..)
//!         Audio / Video / Metadata → the media pipeline
//!     }
//!     arm timer at session.poll_timeout(); on expiry session.handle_timeout(now)?
//! }
//! ```
//!
//! Layers, bottom up: [`handshake`] (plain and digest), [`chunk`] (reader and writer),
//! [`amf0`], and [`session`] (commands, protocol control, events).
#![deny(missing_docs)]

pub mod amf0;
pub mod chunk;
mod error;
pub mod handshake;
pub mod session;

pub use amf0::Amf0Value;
pub use chunk::{ChunkMessage, ChunkReader, ChunkWriter};
pub use error::RtmpError;
pub use session::{Event, ServerSession, SessionConfig};
