//! The end-to-end test kit of tidegate: start the real `tidegate` binary, publish to it with
//! real clients (ffmpeg, GStreamer), fetch over HTTP, and check what comes out (an RFC 8216
//! media-playlist checker, ffprobe, a full decode, keyframe-first segments); a local cluster
//! (Redis, S3, N workers, HAProxy); a round-robin HTTP proxy over workers ([`proxy`]); real
//! players (hls.js, dash.js, Shaka) in headless chromium ([`browser`]); an MPD reader ([`dash`]); hostile
//! peers; a webhook receiver.
//!
//! A dev-dependency of `crates/cli`, whose integration tests (`crates/cli/tests/*.rs`, one
//! scenario per file) `use tidegate_testkit::*;`: compiled once, not into every test binary.
//! Every item of the modules below is also at the crate root, except [`hostile`] and
//! [`hooks`], which a test imports by name. The binary under test is found by
//! [`tidegate_bin`].
//!
//! Every child process is killed when its handle drops; when a test panics, the logs of the
//! server and the publishers it started are printed. Tools that a test needs and that are
//! missing make it panic with a message naming `scripts/install-test-tools.sh`: no test
//! skips silently.

pub mod backends;
pub mod browser;
pub mod cluster;
pub mod dash;
pub mod hls;
pub mod hooks;
pub mod hostile;
pub mod http;
pub mod media;
pub mod metrics;
pub mod paths;
pub mod ports;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod publish;
pub mod scenario;
pub mod sentinel;
pub mod server;
pub mod tools;

pub use backends::*;
pub use browser::*;
pub use cluster::*;
pub use dash::*;
pub use hls::*;
pub use http::*;
pub use media::*;
pub use metrics::*;
pub use paths::*;
pub use ports::*;
pub use probe::*;
pub use process::*;
pub use proxy::*;
pub use publish::*;
pub use scenario::*;
pub use sentinel::*;
pub use server::*;
pub use tools::*;
