//! Which connection a datagram received on a listener's socket belongs to.
//!
//! SRT names the destination of a packet by socket ID alone, and the IDs travel in clear
//! text: anyone who sees one packet of a connection can address it. libsrt therefore
//! accepts a connection's packets only from the address the connection was made with; so
//! does [`Routes`]: a packet with a known socket ID from any other address is
//! [`Route::WrongPeer`] and must be dropped (a forged SHUTDOWN from another port must not
//! end a live publisher, a forged ACK or data packet must not reach its state machine).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::packet::{peek_dest_socket_id, HEADER_LEN, MAX_PACKET_SIZE};

/// Where one datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, T> {
    /// Destination socket ID 0: a handshake for the [`crate::Listener`].
    Listener,
    /// A registered connection, from its peer's address.
    Connection(&'a T),
    /// No connection has this socket ID (closed, never existed, or guessed).
    UnknownSocket,
    /// The socket ID is a connection's, but the datagram comes from another address.
    WrongPeer,
    /// Shorter than an SRT header or longer than any SRT packet.
    Malformed,
}

impl<T> Route<'_, T> {
    /// The metric label of a datagram that is dropped here (`None` for the two routes that
    /// deliver it).
    pub fn ignored_reason(&self) -> Option<&'static str> {
        match self {
            Route::Listener | Route::Connection(_) => None,
            Route::UnknownSocket => Some("unknown_socket"),
            Route::WrongPeer => Some("wrong_peer"),
            Route::Malformed => Some("malformed"),
        }
    }
}

/// Established connections by local socket ID, each with the peer address it was made with.
#[derive(Debug)]
pub struct Routes<T> {
    by_id: HashMap<u32, (SocketAddr, T)>,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes {
            by_id: HashMap::new(),
        }
    }
}

impl<T> Routes<T> {
    /// Registers connection `socket_id` (its [`crate::Connection::socket_id`]), made with
    /// `peer`. Replaces an earlier registration of the same ID.
    pub fn insert(&mut self, socket_id: u32, peer: SocketAddr, value: T) {
        self.by_id.insert(socket_id, (peer, value));
    }

    /// Forgets connection `socket_id`.
    pub fn remove(&mut self, socket_id: u32) -> Option<T> {
        self.by_id.remove(&socket_id).map(|(_, v)| v)
    }

    /// Connections registered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Where `datagram`, received from `from`, goes.
    pub fn route(&self, from: SocketAddr, datagram: &[u8]) -> Route<'_, T> {
        if datagram.len() < HEADER_LEN || datagram.len() > MAX_PACKET_SIZE {
            return Route::Malformed;
        }
        let Some(dest) = peek_dest_socket_id(datagram) else {
            return Route::Malformed;
        };
        if dest == 0 {
            return Route::Listener;
        }
        match self.by_id.get(&dest) {
            None => Route::UnknownSocket,
            Some((peer, v)) if same_peer(*peer, from) => Route::Connection(v),
            Some(_) => Route::WrongPeer,
        }
    }
}

/// Whether two addresses are the same peer (an IPv4 peer may show up IPv4-mapped on a dual
/// stack socket).
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-byte SRT SHUTDOWN control packet to `dest`.
    fn shutdown(dest: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&dest.to_be_bytes());
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_connection_gets_only_its_peers_packets() {
        let mut routes = Routes::default();
        routes.insert(0x1234, addr("127.0.0.1:4000"), "pub");
        routes.insert(0x5678, addr("127.0.0.1:4001"), "other");
        assert_eq!(
            routes.route(addr("127.0.0.1:4000"), &shutdown(0x1234)),
            Route::Connection(&"pub")
        );
        // The same socket ID from another port, another host, or another connection's
        // peer: dropped.
        for from in ["127.0.0.1:4001", "127.0.0.2:4000", "127.0.0.1:5000"] {
            let r = routes.route(addr(from), &shutdown(0x1234));
            assert_eq!(r, Route::WrongPeer, "{from}");
            assert_eq!(r.ignored_reason(), Some("wrong_peer"));
        }
        // IPv4-mapped form of the same peer is the same peer.
        assert_eq!(
            routes.route(addr("[::ffff:127.0.0.1]:4000"), &shutdown(0x1234)),
            Route::Connection(&"pub")
        );
    }

    #[test]
    fn unknown_ids_handshakes_and_garbage_are_told_apart() {
        let mut routes = Routes::default();
        routes.insert(7, addr("10.0.0.1:9"), ());
        let from = addr("10.0.0.1:9");
        assert_eq!(routes.route(from, &shutdown(0)), Route::Listener);
        assert_eq!(routes.route(from, &shutdown(8)), Route::UnknownSocket);
        assert_eq!(
            routes.route(from, &shutdown(8)).ignored_reason(),
            Some("unknown_socket")
        );
        assert_eq!(routes.route(from, &shutdown(7)[..15]), Route::Malformed);
        assert_eq!(routes.route(from, &[]), Route::Malformed);
        let mut huge = shutdown(7);
        huge.resize(MAX_PACKET_SIZE + 1, 0);
        assert_eq!(routes.route(from, &huge), Route::Malformed);
        huge.truncate(MAX_PACKET_SIZE);
        assert_eq!(routes.route(from, &huge), Route::Connection(&()));
    }

    #[test]
    fn a_removed_connection_is_unknown() {
        let mut routes = Routes::default();
        routes.insert(7, addr("127.0.0.1:9"), 1u8);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes.remove(7), Some(1));
        assert!(routes.is_empty());
        assert_eq!(
            routes.route(addr("127.0.0.1:9"), &shutdown(7)),
            Route::UnknownSocket
        );
    }
}
