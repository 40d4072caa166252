//! A tiny HTTP receiver for webhook and on-publish tests: a std `TcpListener` on loopback, one
//! thread per connection (keep-alive honoured), every request recorded, the answer chosen by
//! the test. Signatures are checked here with an independent HMAC-SHA256 (the `hmac` crate),
//! not with the server's own code.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret the tests give the server.
pub const SECRET: &str = "test-webhook-secret-0123456789";
/// The replay window the receiver enforces (what the README tells receivers to do).
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Request path.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Hit {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }

    /// Checks `Tidegate-Signature: t=..,v1=..` against `secret` and the replay window.
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        let h = self
            .header("tidegate-signature")
            .ok_or("no Tidegate-Signature header")?;
        let mut t = None;
        let mut v1 = Vec::new();
        for part in h.split(',') {
            match part.split_once('=') {
                Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|e| format!("t: {e}"))?),
                Some(("v1", v)) => v1.push(v.to_owned()),
                _ => {}
            }
        }
        let t = t.ok_or("no t=")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if (now - t).abs() > REPLAY_WINDOW_SECS {
            return Err(format!("t={t} is outside the replay window (now {now})"));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if v1.contains(&want) {
            Ok(())
        } else {
            Err(format!(
                "signature mismatch: header {h}, expected v1={want}"
            ))
        }
    }
}

type Answer = dyn Fn(&Hit, usize) -> (u16, Duration) + Send + Sync;

/// The receiver; stops accepting when dropped (the listener thread exits on its own with the
/// test process).
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    /// Starts a receiver; `answer(hit, n)` (n = requests before this one) gives the status to
    /// answer and a delay before answering.
    pub fn start(answer: impl Fn(&Hit, usize) -> (u16, Duration) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let answer: Arc<Answer> = Arc::new(answer);
        {
            let hits = hits.clone();
            thread::spawn(move || {
                for sock in listener.incoming().flatten() {
                    let hits = hits.clone();
                    let answer = answer.clone();
                    thread::spawn(move || serve(sock, &hits, &*answer));
                }
            });
        }
        Receiver { addr, hits }
    }

    /// `http://127.0.0.1:P{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the requests so far.
    pub fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {what} not seen within {timeout:?}; got:\n{}",
                describe(&hits)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One line per request: answer, type/status or body.
pub fn describe(hits: &[Hit]) -> String {
    hits.iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h.answered,
                h.path,
                String::from_utf8_lossy(&h.body)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Delivered (2xx-answered) events of type `kind`.
pub fn delivered<'a>(hits: &'a [Hit], kind: &str) -> Vec<&'a Hit> {
    hits.iter()
        .filter(|h| (200..300).contains(&h.answered) && h.json()["type"] == kind)
        .collect()
}

fn serve(sock: TcpStream, hits: &Mutex<Vec<Hit>>, answer: &Answer) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match sock.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut hit = Hit {
            path,
            headers,
            body,
            answered: 0,
            at: Instant::now(),
        };
        let n = hits.lock().unwrap().len();
        let (status, delay) = answer(&hit, n);
        hit.answered = status;
        thread::sleep(delay);
        hits.lock().unwrap().push(hit);
        let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
