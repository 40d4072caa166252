//! Sans-IO SRT (Secure Reliable Transport), live mode, as libsrt 1.5 speaks it.
//!
//! The crate does no I/O and never reads the clock: the driver passes datagrams and the
//! current [`std::time::Instant`] in, and takes datagrams to send, events and the next
//! timeout out.
//!
//! * [`Listener`] answers handshakes on socket ID 0: inductions statelessly with a SYN
//!   cookie bound to the caller's address and a time bucket, conclusions by handing a
//!   [`ConnectionRequest`] (with the stream ID) to the application, which calls
//!   [`Listener::accept`] with that stream's passphrase and latency, or
//!   [`Listener::reject`] with an SRT rejection code ([`RejectReason`]).
//! * [`Caller`] connects to a listener (pull mode, tests, load generation).
//! * [`Connection`] is an established connection: it receives (loss detection, NAK, ACK,
//!   ACKACK/RTT, TSBPD delivery, too-late drop, decryption) and sends (send buffer,
//!   retransmission, drop after the latency, encryption with key rotation).
//!
//! A server owns one UDP socket and routes each datagram by its destination socket ID and
//! its source address ([`Routes`]): ID 0 to the listener, anything else to the connection
//! with that [`Connection::socket_id`] when it comes from that connection's peer, and
//! nowhere otherwise. The run loop per connection is documented on [`Connection`].
//!
//! Nothing a peer sends can make this crate panic; malformed input is an [`Error`].

#![deny(missing_docs)]

pub mod caller;
pub mod connection;
pub mod crypto;
pub mod error;
pub mod handshake;
pub mod listener;
pub mod packet;
pub mod router;
pub mod seq;

pub use caller::{Caller, CallerConfig};
pub use connection::{CloseReason, Connection, Event, Stats};
pub use crypto::KeyLength;
pub use error::Error;
pub use handshake::RejectReason;
pub use listener::{
    AcceptParams, ConnectionRequest, Listener, ListenerConfig, ListenerOutput, Rejection, Verified,
};
pub use packet::{peek_dest_socket_id, Packet};
pub use router::{Route, Routes};
pub use seq::{MsgNo, SeqNo};
