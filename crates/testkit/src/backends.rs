//! The cluster's backends as real processes: `redis-server` (append-only), the S3 server
//! moto, and a TCP relay that can be cut to stand in for a network partition.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::http::{agent, try_get};
use crate::ports::free_tcp_port;
use crate::process::Proc;
use crate::tools::require_cmd;

/// A loopback TCP relay the test can cut, standing in for a network partition between the
/// workers and a backend: while closed, new connections are accepted and dropped at once
/// and the ones in flight are shut down, so clients fail fast (no hang, no lost data on the
/// backend, which keeps running).
pub struct TcpGate {
    /// The address clients connect to.
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpGate {
    /// Relays a fresh loopback port to `backend`; starts open.
    pub fn new(backend: SocketAddr) -> TcpGate {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, l) = (open.clone(), live.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(backend) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut l = l.lock().unwrap();
                    l.retain(|s| s.peer_addr().is_ok());
                    l.push(client.try_clone().unwrap());
                    l.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        TcpGate { addr, open, live }
    }

    /// Cuts the backend off: connections in flight are shut down, new ones dropped.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A `redis-server` on a loopback port: with an append-only file in a directory, so a
/// restart on the same directory keeps every record (decision 0005: the fencing is only as
/// durable as Redis), or with no persistence at all.
pub struct RedisServer {
    /// The process (`None` while stopped).
    pub proc: Option<Proc>,
    /// Its port.
    pub port: u16,
    /// Where the append-only file goes (`None`: no persistence).
    dir: Option<PathBuf>,
}

impl RedisServer {
    /// Starts one on a free port with its files in `dir`.
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_in(Some(dir.to_path_buf()))
    }

    /// Starts one on a free port with no persistence: a restart comes back empty.
    pub fn start_ephemeral() -> RedisServer {
        RedisServer::start_in(None)
    }

    fn start_in(dir: Option<PathBuf>) -> RedisServer {
        let mut r = RedisServer {
            proc: None,
            port: free_tcp_port(),
            dir,
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and directory; waits for PONG.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "redis-server already running");
        let mut cmd = Command::new(require_cmd("redis-server"));
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match &self.dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let mut proc = Proc::spawn("redis-server", cmd);
        let port = self.port;
        proc.wait_ready(
            "redis-server to answer PING",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || redis_ping(port).then_some(()),
        );
        self.proc = Some(proc);
    }

    /// Stops it with SIGTERM (it writes its append-only file) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(15);
            if p.wait_exit(Duration::from_secs(10)).is_none() {
                panic!("redis-server did not stop on SIGTERM");
            }
        }
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// The S3 server moto (`python3 -m moto.server`) on a free loopback port, with one bucket.
pub struct MotoS3 {
    /// The process.
    pub proc: Proc,
    /// Its address.
    pub addr: SocketAddr,
    /// The bucket created at start.
    pub bucket: String,
}

impl MotoS3 {
    /// Starts moto and creates `bucket` through the S3 API (`PUT /bucket`).
    pub fn start(bucket: &str) -> MotoS3 {
        let port = free_tcp_port();
        let mut cmd = Command::new(require_cmd("python3"));
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let mut proc = Proc::spawn("moto-s3", cmd);
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(
            "moto to answer (python3 -m moto.server; is `moto[server]` installed? \
             scripts/install-test-tools.sh)",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                try_get(&format!("{base}/"))
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        let put = agent().put(&format!("{base}/{bucket}")).call();
        assert!(put.is_ok(), "CreateBucket {bucket}: {put:?}");
        MotoS3 {
            proc,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            bucket: bucket.to_string(),
        }
    }
}
