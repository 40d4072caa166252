//! Ingest protocols: each turns a connection into media events for a stream.

pub mod rtmp;
pub mod srt;
pub mod srt_pull;
