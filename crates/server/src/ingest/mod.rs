//! Ingest protocols: each turns a connection into media events for a stream.

pub mod rtmp;
pub mod srt;
mod srt_limits;
pub mod srt_pull;
