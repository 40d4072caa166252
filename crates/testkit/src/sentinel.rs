//! A Sentinel-managed Redis on loopback: a primary, one replica and three Sentinels
//! (`redis-server --sentinel`), without persistence, their files in the test's directory.
//! For the tests of `--state redis+sentinel://` and of a primary's failover.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::ports::free_tcp_port;
use crate::process::wait_for;
use crate::process::Proc;
use crate::tools::require_cmd;

/// The name the Sentinels monitor the primary under.
pub const SENTINEL_MASTER: &str = "tidegate";

/// `redis-cli -p PORT ARGS...`, its output (empty when it could not connect).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new(require_cmd("redis-cli"))
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A `redis-server` (data node or Sentinel) on `port`, answering PING.
fn redis_server(name: &str, port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(require_cmd("redis-server"));
    cmd.args(extra)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    let mut p = Proc::spawn(name, cmd);
    p.wait_ready(
        "redis to answer PING",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (redis_cli(port, &["PING"]) == "PONG").then_some(()),
    );
    p
}

/// The primary, its replica (in sync) and three Sentinels that know both and each other.
pub struct Sentinels {
    /// The primary's process (`kill_primary` sends it SIGKILL).
    pub primary: Proc,
    /// The primary's port.
    pub p_port: u16,
    /// The replica's port.
    pub r_port: u16,
    /// The Sentinels' ports.
    pub s_ports: Vec<u16>,
    _replica: Proc,
    _sentinels: Vec<Proc>,
}

impl Sentinels {
    /// Starts them with their files in `dir` (the replica's full-sync copy, Sentinel's
    /// rewritten configs) and waits until the Sentinels have a quorum of 3 and know the replica.
    pub fn start(dir: &Path) -> Sentinels {
        let dir_arg = dir.display().to_string();
        let no_disk = ["--save", "", "--appendonly", "no", "--dir", &dir_arg];
        let (p_port, r_port) = (free_tcp_port(), free_tcp_port());
        let primary = redis_server("redis-primary", p_port, &no_disk);
        let replica_of = p_port.to_string();
        let mut replica_args = no_disk.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &replica_of]);
        let replica = redis_server("redis-replica", r_port, &replica_args);
        wait_for(
            "the replica to be in sync",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                redis_cli(r_port, &["INFO", "replication"])
                    .contains("master_link_status:up")
                    .then_some(())
            },
        );
        let s_ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
        let sentinels = s_ports
            .iter()
            .map(|&port| {
                let conf = dir.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {p_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
                    ),
                )
                .expect("write a Sentinel config");
                let conf = conf.display().to_string();
                redis_server(
                    "redis-sentinel",
                    port,
                    &[&conf, "--sentinel", "--dir", &dir_arg],
                )
            })
            .collect();
        wait_for(
            "the Sentinels to know each other and the replica",
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                s_ports
                    .iter()
                    .all(|&s| {
                        redis_cli(s, &["SENTINEL", "ckquorum", SENTINEL_MASTER]).starts_with("OK 3")
                            && redis_cli(s, &["SENTINEL", "replicas", SENTINEL_MASTER])
                                .contains(&r_port.to_string())
                    })
                    .then_some(())
            },
        );
        Sentinels {
            primary,
            p_port,
            r_port,
            s_ports,
            _replica: replica,
            _sentinels: sentinels,
        }
    }

    /// `--state` for the workers: `redis+sentinel://` over the three Sentinels, database 0.
    pub fn state_url(&self) -> String {
        format!(
            "redis+sentinel://{}/{SENTINEL_MASTER}/0",
            self.s_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// `redis-cli` against the (first) primary.
    pub fn cli_primary(&self, args: &[&str]) -> String {
        redis_cli(self.p_port, args)
    }

    /// `redis-cli` against the replica.
    pub fn cli_replica(&self, args: &[&str]) -> String {
        redis_cli(self.r_port, args)
    }

    /// `kill -9` of the primary.
    pub fn kill_primary(&self) {
        self.primary.signal(9);
    }

    /// The primary's port as the first Sentinel names it.
    pub fn named_primary(&self) -> Option<u16> {
        let out = redis_cli(
            self.s_ports[0],
            &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits (30 s at most) until the first Sentinel names the replica; whether it did.
    pub fn wait_promotion(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.named_primary() == Some(self.r_port) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }
}
