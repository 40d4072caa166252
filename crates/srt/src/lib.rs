//! placeholder
#![deny(missing_docs)]
pub mod crypto;
pub mod error;
pub mod handshake;
pub mod packet;
pub mod seq;
