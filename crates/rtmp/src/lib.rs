//! A sans-IO RTMP server for publishers (OBS, ffmpeg, GStreamer, librtmp, hardware
//! encoders): handshake, chunk stream, AMF0 and the publish command flow; and the matching
//! publisher, [`ClientSession`] (for `tidegate bench`, relays and tests).
//!
//! Nothing here does I/O or reads the clock. The server's driver owns a [`ServerSession`]
//! per TCP connection and runs this loop:
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
//! A publisher's driver owns a [`ClientSession`] and runs the mirror image:
//!
//! ```text
//! session = ClientSession::new(config, now)       // C0+C1 queued
//! loop {
//!     while let Some(b) = session.poll_transmit() { gather b }   write_vectored(gathered)
//!     while let Some(e) = session.poll_event() {
//!         PublishStarted → start pacing media: session.send_video / send_audio / send_metadata
//!         PublishRejected / Closed → flush and close
//!     }
//!     wait for: socket readable → session.handle_input(now, &mut buf)?
//!               timer at session.poll_timeout() → session.handle_timeout(now)?
//!               next media frame due → session.send_*(..)?
//! }
//! ```
//!
//! Layers, bottom up: [`handshake`] (plain and digest), [`chunk`] (reader, writer and the
//! zero-copy encoder), [`amf0`], protocol control (chunk size, acknowledgements, pings: one
//! state machine both ends embed), [`session`] (server: commands, events) and [`client`]
//! (publisher).
#![deny(missing_docs)]

pub mod amf0;
pub mod chunk;
pub mod client;
mod control;
mod error;
pub mod handshake;
pub mod session;

pub use amf0::Amf0Value;
pub use chunk::{ChunkEncoder, ChunkMessage, ChunkReader, ChunkWriter, ReaderLimits};
pub use client::{ClientConfig, ClientEvent, ClientSession};
pub use error::RtmpError;
pub use session::{Event, ServerSession, SessionConfig};
