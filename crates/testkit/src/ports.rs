//! Loopback ports for the servers a test starts, reserved across the parallel test
//! processes of one machine by lock files in `$TMPDIR/tidegate-test-ports`.

use std::fs::{self, File};
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

/// A free loopback TCP port, reserved for this test process (see [`reserve_port`]).
pub fn free_tcp_port() -> u16 {
    reserve_port()
}

/// A free loopback UDP port, reserved for this test process (see [`reserve_port`]).
pub fn free_udp_port() -> u16 {
    reserve_port()
}

/// The lock files of the ports this process reserved, held open until it exits.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port, free for both TCP and UDP, that no other test process of this
/// machine holds and this process never handed out before.
///
/// Asking the kernel for port 0 and closing the socket is not enough: nextest runs
/// tests as parallel processes, and the kernel hands the same ephemeral port to the
/// next one who asks (a CI run saw worker 0's RTMP port given to worker 2's HTTP
/// listener). So ports come from below the ephemeral range, where neither `bind(0)`
/// nor an outgoing connection ever lands, and each is claimed by an advisory lock on
/// a file named after it; the lock dies with the process.
pub fn reserve_port() -> u16 {
    let dir = std::env::temp_dir().join("tidegate-test-ports");
    fs::create_dir_all(&dir).unwrap();
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let hi = ephemeral_low.clamp(11_024, 65_535);
    let lo = hi.saturating_sub(20_000).max(10_000);
    let span = hi - lo;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut reserved = RESERVED.lock().unwrap();
    for i in 0..span {
        let port = (lo + (seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        let Ok(file) = File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another test process holds it, or this one already does
        }
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            reserved.push(file);
            return port;
        }
    }
    panic!("no free loopback port in {lo}..{hi}");
}
