//! Stream state in Redis, shared by every worker of a cluster.
//!
//! Layout (every key under [`KEY_PREFIX`], or the prefix given to
//! [`RedisStateStore::connect_with_prefix`]):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:stream:TENANT/NAME` | string | the [`StreamRecord`] as JSON (the same bytes `fs.rs` writes) |
//! | `P:streams` | set | `TENANT/NAME` of every stream with a record ([`StateStore::list`]) |
//! | `P:active` | set | `TENANT/NAME` of every stream whose record is not ended ([`StateStore::list_active`]) |
//! | `P:changes` | channel | `TENANT/NAME` published after each successful write of a stream, `tenant:NAME` after each of a tenant |
//! | `P:tenant:NAME` | string | the [`TenantRecord`] as JSON ([`StateStore::put_tenant`]) |
//! | `P:tenants` | set | names of every tenant with a record ([`StateStore::tenants`]) |
//! | `P:worker:ID:incarnations` | integer | how often worker `ID` registered ([`StateStore::register_worker`]) |
//! | `P:worker:ID` | string, with a TTL | the [`WorkerRecord`] as JSON, refreshed by each heartbeat ([`StateStore::put_worker`]) |
//! | `P:workers` | set | ids of workers that wrote a record; members whose record expired are pruned when listed |
//! | `P:attempts:TENANT:SECOND` | integer, 2 s TTL | publish attempts of a tenant in that unix second, across the cluster ([`StateStore::count_publish_attempt`]) |
//!
//! The compare-and-set is one Lua script ([`CAS_SCRIPT`]): Redis runs it atomically, so the
//! read of the stored epoch, the comparison, the write, the set membership and the change
//! notification are one step no other client can interleave with. The epoch is read from the
//! stored JSON with `cjson`, whose numbers are doubles: epochs are exact up to 2^53, which one
//! publish session per epoch never reaches.
//!
//! Every call is bounded by [`CALL_TIMEOUT`]. The [`ConnectionManager`] reconnects in the
//! background after a failure; meanwhile calls fail with [`StoreError::Unavailable`] instead of
//! waiting, and succeed again once the server is back.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisError, Script, Value};
use tokio::sync::{mpsc, watch};

use super::{Change, StateStore, StoreError, StreamId, StreamRecord, TenantRecord, WorkerRecord};
use tidegate_model::SentinelUrl;

/// Default key prefix: every key and the change channel start with `tidegate:`.
pub const KEY_PREFIX: &str = "tidegate";

/// How long a tenant's per-second attempt counter lives: its second and the next (a
/// worker whose clock is a little behind still finds it), then Redis drops it.
pub const ATTEMPT_COUNT_TTL_SECS: i64 = 2;

/// Upper bound on one store call (connect, command, script), so a dead or partitioned Redis
/// turns into an error instead of a hung writer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Delay before the change subscriber tries again after its connection failed.
pub const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// How often an idle change subscription checks (PING, answered within [`CALL_TIMEOUT`])
/// that its server is still there.
pub const SUBSCRIPTION_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Change notifications buffered for a slow consumer; past this the subscriber waits (Redis
/// then buffers on its side, up to its own client-output-buffer limit).
pub const CHANGES_BUFFER: usize = 1024;

/// The error code [`CAS_SCRIPT`] replies with when the stored record is not JSON.
const CORRUPT_CODE: &str = "TIDEGATE_CORRUPT";

/// The compare-and-set, run atomically by Redis.
///
/// `KEYS[1]` the record, `KEYS[2]` the set of streams, `KEYS[3]` the set of streams not
/// ended; `ARGV[1]` the expected epoch (`""` for "no record"), `ARGV[2]` the new JSON,
/// `ARGV[3]` the set member / change payload (`TENANT/NAME`), `ARGV[4]` the change channel,
/// `ARGV[5]` `1` when the new record is ended.
///
/// Returns `{1}` when written, `{0, stored}` on a conflict (`stored` = -1 when there is no
/// record), or an error reply when the stored record is not JSON.
pub const CAS_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
local stored = -1
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' then
    return redis.error_reply('TIDEGATE_CORRUPT record ' .. ARGV[3] .. ' is not JSON')
  end
  stored = 0
  if type(rec['playlist']) == 'table' and type(rec['playlist']['epoch']) == 'number' then
    stored = rec['playlist']['epoch']
  end
end
local expected = -1
if ARGV[1] ~= '' then expected = tonumber(ARGV[1]) end
if stored ~= expected then
  return {0, stored}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[5] == '1' then
  redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('SADD', KEYS[3], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1}
"#;

/// Deletes an ended record whose epoch is still the expected one, run atomically by Redis.
///
/// `KEYS[1]` the record, `KEYS[2]` the set of streams, `KEYS[3]` the set of streams not
/// ended; `ARGV[1]` the epoch, `ARGV[2]` the set member / change payload, `ARGV[3]` the
/// change channel. Returns 1 when deleted, 0 otherwise (absent, another epoch, not ended,
/// or not JSON: a record this script cannot read is left alone).
pub const DELETE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 0
end
local ok, rec = pcall(cjson.decode, cur)
if not ok or type(rec) ~= 'table' or type(rec['playlist']) ~= 'table' then
  return 0
end
if rec['playlist']['ended'] ~= true or rec['playlist']['epoch'] ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"#;

/// The compare-and-set of a tenant record on its revision, run atomically by Redis.
///
/// `KEYS[1]` the record, `KEYS[2]` the set of tenants; `ARGV[1]` the expected revision
/// (`""` for "no record"), `ARGV[2]` the new JSON, `ARGV[3]` the tenant name, `ARGV[4]` the
/// change channel, `ARGV[5]` the change payload. Replies as [`CAS_SCRIPT`].
pub const TENANT_CAS_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
local stored = -1
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' then
    return redis.error_reply('TIDEGATE_CORRUPT tenant ' .. ARGV[3] .. ' is not JSON')
  end
  stored = 0
  if type(rec['revision']) == 'number' then
    stored = rec['revision']
  end
end
local expected = -1
if ARGV[1] ~= '' then expected = tonumber(ARGV[1]) end
if stored ~= expected then
  return {0, stored}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1}
"#;

/// Deletes a tenant record whose revision is still the expected one, run atomically.
///
/// `KEYS[1]` the record, `KEYS[2]` the set of tenants; `ARGV[1]` the revision, `ARGV[2]`
/// the tenant name, `ARGV[3]` the change channel, `ARGV[4]` the change payload. Returns 1
/// when deleted, 0 otherwise (a record that is not JSON is left alone).
pub const TENANT_DELETE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 0
end
local ok, rec = pcall(cjson.decode, cur)
if not ok or type(rec) ~= 'table' or rec['revision'] ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// The change payload announcing a write of tenant `name`.
fn tenant_payload(name: &str) -> String {
    format!("{TENANT_PAYLOAD_PREFIX}{name}")
}

/// What starts a tenant's change payload (a stream's is `TENANT/NAME`, which has no `:`, so
/// a worker of an older version ignores it).
const TENANT_PAYLOAD_PREFIX: &str = "tenant:";

// --- Sentinel (issue #14 item 3, decision 0020) ---

/// How often a store behind Sentinel asks which server is the primary (a switch is
/// followed within this, after Sentinel itself decided it).
pub const SENTINEL_POLL: Duration = Duration::from_millis(500);

/// How long one Sentinel may take to answer before the next one is asked.
pub const SENTINEL_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an epoch write waits for a replica's acknowledgement (`WAIT 1 ms`) behind
/// Sentinel before it goes on without it (decision 0020).
pub const REPLICA_ACK_TIMEOUT_MS: u64 = 100;

/// Where a store's commands and its change subscription go.
#[derive(Clone)]
enum Target {
    /// One server.
    Direct(Box<Client>),
    /// The primary the Sentinels name, asked again on every (re)connection.
    Sentinel(Arc<SentinelUrl>),
}

impl Target {
    /// A client for the server to use now, and its address (empty for a direct one).
    async fn resolve(&self) -> Result<(String, Client), StoreError> {
        match self {
            Self::Direct(client) => Ok((String::new(), Client::clone(client))),
            Self::Sentinel(spec) => {
                let (host, port) = ask_sentinels(spec).await?;
                let client = Client::open(spec.node_url(&host, port)).map_err(unavailable)?;
                Ok((format!("{host}:{port}"), client))
            }
        }
    }
}

/// The primary's address as the first Sentinel that answers names it
/// (`SENTINEL get-master-addr-by-name`).
async fn ask_sentinels(spec: &SentinelUrl) -> Result<(String, u16), StoreError> {
    let mut last = String::from("no Sentinel given");
    for sentinel in &spec.sentinels {
        let asked = async {
            let client = Client::open(format!("redis://{sentinel}"))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&spec.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(SENTINEL_CALL_TIMEOUT, asked).await {
            Ok(Ok(Some(addr))) => return Ok(addr),
            Ok(Ok(None)) => last = format!("Sentinel {sentinel} knows no master `{}`", spec.master),
            Ok(Err(e)) => last = format!("Sentinel {sentinel}: {e}"),
            Err(_) => last = format!("Sentinel {sentinel} did not answer in time"),
        }
    }
    Err(StoreError::Unavailable(format!(
        "redis: no Sentinel names a primary for `{}` ({last})",
        spec.master
    )))
}

/// The Sentinel channel on which a Sentinel announces that it switched a master to its
/// promoted replica (`+switch-master NAME OLD-IP OLD-PORT NEW-IP NEW-PORT`).
const SWITCH_MASTER_CHANNEL: &str = "+switch-master";

/// Counts the Sentinels' announcements that the primary of `spec.master` moved: a task holds
/// a subscription to [`SWITCH_MASTER_CHANNEL`] on the first Sentinel that accepts it (in the
/// order [`ask_sentinels`] asks them, so the one that announced is the one asked next), probed
/// every [`SUBSCRIPTION_PING_INTERVAL`], and moves to the next Sentinel when it fails. The
/// store and the change subscription follow a failover on this notice at once instead of at
/// their next [`SENTINEL_POLL`] (which stays: a notice lost with a Sentinel is still caught
/// within a poll). The task ends when every receiver is gone.
fn switch_notices(spec: Arc<SentinelUrl>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Some(sentinel) = spec.sentinels.get(next % spec.sentinels.len().max(1)) else {
                return;
            };
            next = next.wrapping_add(1);
            let attempt = async {
                let client = Client::open(format!("redis://{sentinel}"))?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(SWITCH_MASTER_CHANNEL).await?;
                Ok::<_, RedisError>(pubsub)
            };
            let subscribed = tokio::select! {
                r = tokio::time::timeout(SENTINEL_CALL_TIMEOUT, attempt) => r,
                () = tx.closed() => return,
            };
            if let Ok(Ok(pubsub)) = subscribed {
                // Subscribed: ask this Sentinel first again after a failure.
                next = next.wrapping_sub(1);
                let mut subscription = Probed::new(pubsub).await;
                loop {
                    let msg = tokio::select! {
                        m = subscription.next() => m,
                        () = tx.closed() => return,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if payload.split(' ').next() == Some(spec.master.as_str()) {
                        tracing::debug!(sentinel = %sentinel, announcement = %payload, "Sentinel announced a new Redis primary");
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                next = next.wrapping_add(1);
            }
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// A subscription whose server is probed with a PING every [`SUBSCRIPTION_PING_INTERVAL`]
/// without a message: a partitioned server never closes the connection, and without the
/// probe the subscription would wait silently forever.
struct Probed {
    sink: redis::aio::PubSubSink,
    messages: redis::aio::PubSubStream,
    ping: tokio::time::Interval,
}

impl Probed {
    async fn new(pubsub: redis::aio::PubSub) -> Self {
        let (sink, messages) = pubsub.split();
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        Self {
            sink,
            messages,
            ping,
        }
    }

    /// The next message; `None` when the connection ended or the server did not answer the
    /// probe in time.
    async fn next(&mut self) -> Option<redis::Msg> {
        loop {
            tokio::select! {
                m = self.messages.next() => return m,
                _ = self.ping.tick() => {
                    if bounded("PING", self.sink.ping::<Value>()).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Waits for the next [`switch_notices`] notice; never returns once the notices ended (the
/// caller's polling goes on).
async fn next_notice(notices: &mut Option<watch::Receiver<u64>>) {
    match notices {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *notices = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The server a store's commands go to now.
struct Primary {
    /// `host:port` as Sentinel named it (empty for a direct connection).
    addr: String,
    conn: ConnectionManager,
}

fn connection_manager(client: Client) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(Some(CALL_TIMEOUT))
        // Reconnection is retried in the background on the next failing call; a call
        // never waits for more than one attempt.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)
}

/// Follows the primary the Sentinels name: asks them every [`SENTINEL_POLL`] and at each
/// [`switch_notices`] notice, and moves the store's commands to a new primary as soon as
/// they name one. Ends with the store.
fn follow_primary(spec: Arc<SentinelUrl>, primary: Weak<RwLock<Primary>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SENTINEL_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notices = Some(switch_notices(spec.clone()));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = next_notice(&mut notices) => {}
            }
            let Some(current) = primary.upgrade() else {
                return;
            };
            let named = match ask_sentinels(&spec).await {
                Ok((host, port)) => format!("{host}:{port}"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask Sentinel for the Redis primary; keeping the last one");
                    continue;
                }
            };
            let known = current.read().map(|p| p.addr.clone()).unwrap_or_default();
            if named == known {
                continue;
            }
            let Some((host, port)) = named
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            else {
                continue;
            };
            let conn = Client::open(spec.node_url(&host, port))
                .map_err(unavailable)
                .and_then(connection_manager);
            match conn {
                Ok(conn) => {
                    tracing::warn!(from = %known, to = %named, master = %spec.master, "Sentinel names a new Redis primary: following it");
                    if let Ok(mut p) = current.write() {
                        *p = Primary { addr: named, conn };
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect to the new Redis primary"),
            }
        }
    });
}

/// Stream records in Redis with an atomic compare-and-set on the epoch.
#[derive(Clone)]
pub struct RedisStateStore {
    target: Target,
    primary: Arc<RwLock<Primary>>,
    prefix: String,
    cas: Script,
    delete: Script,
    tenant_cas: Script,
    tenant_delete: Script,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a password.
        f.debug_struct("RedisStateStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Runs `fut` within [`CALL_TIMEOUT`], mapping Redis and timeout errors.
async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis: {what} took longer than {CALL_TIMEOUT:?}"
        ))),
    }
}

impl RedisStateStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]` or `rediss://`) with the
    /// default [`KEY_PREFIX`]. Fails when the server does not answer a PING in time.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_prefix(url, KEY_PREFIX).await
    }

    /// As [`RedisStateStore::connect`], with every key under `prefix:` (several deployments
    /// sharing one Redis, or isolated tests).
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(unavailable)?;
        Self::connect_to(Target::Direct(Box::new(client)), prefix).await
    }

    /// Connects to the primary the Sentinels of `spec` name, and follows it across
    /// failovers ([`SENTINEL_POLL`]); epoch writes then wait for a replica's
    /// acknowledgement (decision 0020). Fails when no Sentinel names a primary that
    /// answers a PING in time.
    pub async fn connect_sentinel(spec: &SentinelUrl) -> Result<Self, StoreError> {
        let spec = Arc::new(spec.clone());
        let store = Self::connect_to(Target::Sentinel(spec.clone()), KEY_PREFIX).await?;
        follow_primary(spec, Arc::downgrade(&store.primary));
        Ok(store)
    }

    async fn connect_to(target: Target, prefix: &str) -> Result<Self, StoreError> {
        let (addr, client) = target.resolve().await?;
        let conn = connection_manager(client)?;
        let store = Self {
            target,
            primary: Arc::new(RwLock::new(Primary { addr, conn })),
            prefix: prefix.to_owned(),
            cas: Script::new(CAS_SCRIPT),
            delete: Script::new(DELETE_SCRIPT),
            tenant_cas: Script::new(TENANT_CAS_SCRIPT),
            tenant_delete: Script::new(TENANT_DELETE_SCRIPT),
        };
        store.ping().await?;
        Ok(store)
    }

    /// The connection to the current primary.
    fn conn(&self) -> ConnectionManager {
        match self.primary.read() {
            Ok(p) => p.conn.clone(),
            Err(poisoned) => poisoned.into_inner().conn.clone(),
        }
    }

    /// Behind Sentinel, waits (at most [`REPLICA_ACK_TIMEOUT_MS`]) until a replica has
    /// the writes made so far on `conn`; a write no replica acknowledged is logged, not
    /// refused (decision 0020: a lost epoch write cannot reuse a name).
    async fn replica_ack(&self, conn: &mut ConnectionManager, what: &StreamId) {
        if !matches!(self.target, Target::Sentinel(_)) {
            return;
        }
        let acked = bounded("WAIT", async {
            redis::cmd("WAIT")
                .arg(1)
                .arg(REPLICA_ACK_TIMEOUT_MS)
                .query_async::<i64>(conn)
                .await
        })
        .await;
        match acked {
            Ok(n) if n >= 1 => {}
            Ok(_) => {
                tracing::warn!(stream = %what, "no Redis replica acknowledged an epoch write within {REPLICA_ACK_TIMEOUT_MS} ms")
            }
            Err(e) => {
                tracing::warn!(stream = %what, error = %e, "could not wait for a Redis replica")
            }
        }
    }

    /// Checks that the server answers (a readiness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        bounded("PING", async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
    }

    fn record_key(&self, id: &StreamId) -> String {
        format!("{}:stream:{id}", self.prefix)
    }

    fn set_key(&self) -> String {
        format!("{}:streams", self.prefix)
    }

    fn active_key(&self) -> String {
        format!("{}:active", self.prefix)
    }

    async fn members(&self, key: String) -> Result<Vec<StreamId>, StoreError> {
        let mut conn = self.conn();
        let members: Vec<String> = bounded("SMEMBERS", async move {
            conn.smembers::<_, Vec<String>>(key).await
        })
        .await?;
        let mut out: Vec<StreamId> = members.iter().filter_map(|m| parse_member(m)).collect();
        out.sort();
        Ok(out)
    }

    /// The channel change notifications are published on (`PREFIX:changes`).
    pub fn changes_channel(&self) -> String {
        changes_channel(&self.prefix)
    }

    /// SMEMBERS `set`, then one MGET of the records their names key (`key_of`; a name it
    /// refuses is left out), sorted by name: each name with its raw record, `None` where the
    /// record is gone.
    async fn members_with_records(
        &self,
        set: String,
        key_of: impl Fn(&str) -> Result<String, StoreError>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        let mut conn = self.conn();
        let names: Vec<String> = bounded("SMEMBERS", async move {
            conn.smembers::<_, Vec<String>>(set).await
        })
        .await?;
        let mut keyed: Vec<(String, String)> = names
            .into_iter()
            .filter_map(|n| key_of(&n).ok().map(|k| (n, k)))
            .collect();
        keyed.sort();
        if keyed.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keyed.iter().map(|(_, k)| k.clone()).collect();
        let mut conn = self.conn();
        let raw: Vec<Option<Vec<u8>>> = bounded("MGET", async move {
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                .await
        })
        .await?;
        Ok(keyed.into_iter().map(|(n, _)| n).zip(raw).collect())
    }

    fn worker_key(&self, worker_id: &str) -> Result<String, StoreError> {
        if !super::valid_name(worker_id) {
            return Err(StoreError::InvalidPath(worker_id.to_owned()));
        }
        Ok(format!("{}:worker:{worker_id}", self.prefix))
    }

    fn tenant_key(&self, name: &str) -> Result<String, StoreError> {
        if !super::valid_tenant_name(name) {
            return Err(StoreError::InvalidPath(name.to_owned()));
        }
        Ok(format!("{}:tenant:{name}", self.prefix))
    }

    fn tenants_key(&self) -> String {
        format!("{}:tenants", self.prefix)
    }

    fn workers_key(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Subscribes to the change channel of this store's prefix; see [`subscribe_changes`].
    pub fn subscribe_changes(&self) -> mpsc::Receiver<Change> {
        spawn_subscriber(self.target.clone(), self.changes_channel())
    }
}

fn changes_channel(prefix: &str) -> String {
    format!("{prefix}:changes")
}

/// Subscribes to the change notifications of the default [`KEY_PREFIX`] at `url`.
///
/// A background task (on the current tokio runtime) holds the subscription, probes it every
/// [`SUBSCRIPTION_PING_INTERVAL`], and reconnects after [`RESUBSCRIBE_DELAY`] whenever it
/// fails, sending [`Change::Subscribed`] each time it
/// is live again. It stops when the receiver is dropped. Payloads that are not a valid
/// `TENANT/NAME` are ignored.
pub fn subscribe_changes(url: &str) -> Result<mpsc::Receiver<Change>, StoreError> {
    let client = Client::open(url).map_err(unavailable)?;
    Ok(spawn_subscriber(
        Target::Direct(Box::new(client)),
        changes_channel(KEY_PREFIX),
    ))
}

/// [`subscribe_changes`] on the primary the Sentinels of `spec` name: subscribed again on
/// the new primary when they name another one (asked every [`SENTINEL_POLL`], as the store
/// asks them, and whenever the subscription fails).
pub fn subscribe_changes_sentinel(spec: &SentinelUrl) -> mpsc::Receiver<Change> {
    spawn_subscriber(
        Target::Sentinel(Arc::new(spec.clone())),
        changes_channel(KEY_PREFIX),
    )
}

fn spawn_subscriber(target: Target, channel: String) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(CHANGES_BUFFER);
    tokio::spawn(async move {
        // Behind Sentinel: its failover announcements, to move the subscription at once.
        let mut notices = match &target {
            Target::Sentinel(spec) => Some(switch_notices(spec.clone())),
            Target::Direct(_) => None,
        };
        loop {
            let attempt = async {
                let (addr, client) = target.resolve().await?;
                let mut pubsub = bounded("SUBSCRIBE", client.get_async_pubsub()).await?;
                bounded("SUBSCRIBE", pubsub.subscribe(&channel)).await?;
                Ok::<_, StoreError>((addr, pubsub))
            };
            let pubsub = tokio::select! {
                r = attempt => r,
                () = tx.closed() => return,
            };
            match pubsub {
                Ok((addr, pubsub)) => {
                    if tx.send(Change::Subscribed).await.is_err() {
                        return;
                    }
                    let mut subscription = Probed::new(pubsub).await;
                    let mut moved = false;
                    // Behind Sentinel: asked as often as the store asks, so the subscription
                    // moves to a new primary as soon as the store's commands do.
                    let mut follow = tokio::time::interval(SENTINEL_POLL);
                    follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    follow.tick().await;
                    let sentinel = match &target {
                        Target::Sentinel(spec) => Some(spec.clone()),
                        Target::Direct(_) => None,
                    };
                    loop {
                        let msg = tokio::select! {
                            m = subscription.next() => m,
                            // A primary demoted but alive keeps the subscription open;
                            // follow the one the Sentinels name, asked at each poll and
                            // each failover notice.
                            () = async {
                                tokio::select! {
                                    _ = follow.tick() => {}
                                    () = next_notice(&mut notices) => {}
                                }
                            }, if sentinel.is_some() => {
                                if names_another(sentinel.as_deref(), &addr).await {
                                    moved = true;
                                    break;
                                }
                                continue;
                            }
                            () = tx.closed() => return,
                        };
                        // `None`: the connection ended; subscribe again.
                        let Some(msg) = msg else { break };
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        let Some(change) = parse_change(&payload) else {
                            continue;
                        };
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                    tracing::warn!("redis change subscription lost; resubscribing");
                    if tx.send(Change::Lost).await.is_err() {
                        return;
                    }
                    if moved {
                        // The Sentinels name the new primary already: subscribe there now.
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "redis change subscription failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                // The Sentinels announced the new primary: subscribe there now.
                () = next_notice(&mut notices) => {}
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// Whether the Sentinels of `spec` name a primary other than `addr` (`host:port`).
async fn names_another(spec: Option<&SentinelUrl>, addr: &str) -> bool {
    match spec {
        Some(spec) => ask_sentinels(spec)
            .await
            .is_ok_and(|(h, p)| format!("{h}:{p}") != addr),
        None => false,
    }
}

/// A change payload back into a [`Change`]; `None` for anything else.
fn parse_change(payload: &str) -> Option<Change> {
    match payload.strip_prefix(TENANT_PAYLOAD_PREFIX) {
        Some(name) => super::valid_tenant_name(name).then(|| Change::Tenant(name.to_owned())),
        None => parse_member(payload).map(Change::Stream),
    }
}

/// `TENANT/NAME` back into an id; `None` for anything else.
fn parse_member(s: &str) -> Option<StreamId> {
    let (tenant, name) = s.split_once('/')?;
    StreamId::new(tenant, name)
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn load(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError> {
        let mut conn = self.conn();
        let key = self.record_key(id);
        let raw: Option<Vec<u8>> =
            bounded(
                "GET",
                async move { conn.get::<_, Option<Vec<u8>>>(key).await },
            )
            .await?;
        raw.map(|v| {
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: id.to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    async fn compare_and_set(
        &self,
        expected_epoch: Option<u64>,
        record: &StreamRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            what: record.id.to_string(),
            reason: e.to_string(),
        })?;
        let mut conn = self.conn();
        let mut invocation = self.cas.key(self.record_key(&record.id));
        invocation
            .key(self.set_key())
            .key(self.active_key())
            .arg(expected_epoch.map(|e| e.to_string()).unwrap_or_default())
            .arg(json)
            .arg(record.id.to_string())
            .arg(self.changes_channel())
            .arg(if record.playlist.ended { "1" } else { "0" });
        let reply: Value =
            match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<Value>(&mut conn))
                .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) if e.code() == Some(CORRUPT_CODE) => {
                    return Err(StoreError::Corrupt {
                        what: record.id.to_string(),
                        reason: "stored record is not JSON".to_owned(),
                    })
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: compare-and-set took longer than {CALL_TIMEOUT:?}"
                    )))
                }
            };
        let outcome = cas_outcome(reply, expected_epoch);
        if outcome.is_ok() && expected_epoch != Some(record.playlist.epoch) {
            // A new epoch (an admission, an end): acknowledged by a replica behind Sentinel.
            self.replica_ack(&mut conn, &record.id).await;
        }
        outcome
    }

    async fn list(&self) -> Result<Vec<StreamId>, StoreError> {
        self.members(self.set_key()).await
    }

    async fn list_active(&self) -> Result<Vec<StreamId>, StoreError> {
        self.members(self.active_key()).await
    }

    /// One SMEMBERS of the active index and one MGET of the tenant's records: two round
    /// trips whatever the number of its streams.
    async fn active_records_of(&self, tenant: &str) -> Result<Vec<StreamRecord>, StoreError> {
        let prefix = format!("{tenant}/");
        let with_records = self
            .members_with_records(self.active_key(), |member| {
                if member.starts_with(&prefix) {
                    parse_member(member)
                        .map(|id| self.record_key(&id))
                        .ok_or_else(|| StoreError::InvalidPath(member.to_owned()))
                } else {
                    Err(StoreError::InvalidPath(member.to_owned()))
                }
            })
            .await?;
        Ok(with_records
            .into_iter()
            .filter_map(|(_, raw)| serde_json::from_slice(&raw?).ok())
            .collect())
    }

    async fn count_publish_attempt(
        &self,
        tenant: &str,
        second: i64,
    ) -> Result<Option<u64>, StoreError> {
        if !super::valid_tenant_name(tenant) {
            return Err(StoreError::InvalidPath(tenant.to_owned()));
        }
        let key = format!("{}:attempts:{tenant}:{second}", self.prefix);
        let mut conn = self.conn();
        let (count,): (u64,) = bounded("count attempt", async move {
            redis::pipe()
                .atomic()
                .incr(&key, 1u64)
                .expire(&key, ATTEMPT_COUNT_TTL_SECS)
                .ignore()
                .query_async(&mut conn)
                .await
        })
        .await?;
        Ok(Some(count))
    }

    async fn delete(&self, id: &StreamId, epoch: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.delete.key(self.record_key(id));
        invocation
            .key(self.set_key())
            .key(self.active_key())
            .arg(epoch.to_string())
            .arg(id.to_string())
            .arg(self.changes_channel());
        let deleted: i64 = bounded("delete", invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(deleted == 1)
    }

    /// INCR `PREFIX:worker:ID:incarnations`.
    async fn register_worker(&self, worker_id: &str) -> Result<u64, StoreError> {
        let key = format!("{}:incarnations", self.worker_key(worker_id)?);
        let mut conn = self.conn();
        bounded(
            "INCR",
            async move { conn.incr::<_, _, u64>(key, 1u64).await },
        )
        .await
    }

    /// SET `PREFIX:worker:ID` with a PX expiry and SADD the id to `PREFIX:workers`, in one
    /// MULTI.
    async fn put_worker(&self, record: &WorkerRecord, ttl: Duration) -> Result<(), StoreError> {
        let key = self.worker_key(&record.id)?;
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            what: format!("worker {}", record.id),
            reason: e.to_string(),
        })?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd(self.workers_key(), &record.id)
            .ignore();
        let mut conn = self.conn();
        bounded("SET worker", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        let key = self.worker_key(worker_id)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .srem(self.workers_key(), worker_id)
            .ignore();
        let mut conn = self.conn();
        bounded("DEL worker", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// SMEMBERS `PREFIX:workers`, then MGET their records; ids whose record expired are
    /// removed from the set (a worker that is still alive adds itself back at its next
    /// heartbeat).
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let listed = self
            .members_with_records(self.workers_key(), |id| self.worker_key(id))
            .await?;
        let mut out = Vec::with_capacity(listed.len());
        let mut gone = Vec::new();
        for (id, raw) in listed {
            match raw.map(|b| serde_json::from_slice::<WorkerRecord>(&b)) {
                Some(Ok(w)) if w.id == id => out.push(w),
                Some(Ok(_)) => {}
                // A record this version cannot read is skipped, not fatal.
                Some(Err(e)) => {
                    tracing::debug!(worker = %id, error = %e, "unreadable worker record")
                }
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let mut conn = self.conn();
            let set = self.workers_key();
            // Best effort: a failure leaves the ids for the next listing to prune.
            let _ = bounded(
                "SREM",
                async move { conn.srem::<_, _, ()>(set, gone).await },
            )
            .await;
        }
        Ok(out)
    }

    /// SMEMBERS `PREFIX:tenants`, then MGET their records.
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let listed = self
            .members_with_records(self.tenants_key(), |name| self.tenant_key(name))
            .await?;
        let mut out = Vec::with_capacity(listed.len());
        for (name, raw) in listed {
            match raw.map(|b| serde_json::from_slice::<TenantRecord>(&b)) {
                Some(Ok(t)) if t.name == name => out.push(t),
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    tracing::warn!(tenant = %name, error = %e, "unreadable tenant record skipped")
                }
            }
        }
        Ok(out)
    }

    async fn load_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        let key = self.tenant_key(name)?;
        let mut conn = self.conn();
        let raw: Option<Vec<u8>> =
            bounded(
                "GET",
                async move { conn.get::<_, Option<Vec<u8>>>(key).await },
            )
            .await?;
        raw.map(|v| {
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: format!("tenant {name}"),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    async fn put_tenant(
        &self,
        expected_revision: Option<u64>,
        record: &TenantRecord,
    ) -> Result<(), StoreError> {
        let key = self.tenant_key(&record.name)?;
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            what: format!("tenant {}", record.name),
            reason: e.to_string(),
        })?;
        let mut conn = self.conn();
        let mut invocation = self.tenant_cas.key(key);
        invocation
            .key(self.tenants_key())
            .arg(expected_revision.map(|r| r.to_string()).unwrap_or_default())
            .arg(json)
            .arg(&record.name)
            .arg(self.changes_channel())
            .arg(tenant_payload(&record.name));
        let reply =
            match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<Value>(&mut conn))
                .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) if e.code() == Some(CORRUPT_CODE) => {
                    return Err(StoreError::Corrupt {
                        what: format!("tenant {}", record.name),
                        reason: "stored record is not JSON".to_owned(),
                    })
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: tenant compare-and-set took longer than {CALL_TIMEOUT:?}"
                    )))
                }
            };
        cas_outcome(reply, expected_revision)
    }

    async fn delete_tenant(&self, name: &str, revision: u64) -> Result<bool, StoreError> {
        let key = self.tenant_key(name)?;
        let mut conn = self.conn();
        let mut invocation = self.tenant_delete.key(key);
        invocation
            .key(self.tenants_key())
            .arg(revision.to_string())
            .arg(name)
            .arg(self.changes_channel())
            .arg(tenant_payload(name));
        let deleted: i64 =
            bounded("delete tenant", invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(deleted == 1)
    }
}

/// The outcome of a compare-and-set script's reply.
fn cas_outcome(reply: Value, held: Option<u64>) -> Result<(), StoreError> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(1)] => Ok(()),
            [Value::Int(0), Value::Int(stored)] => Err(StoreError::Conflict {
                // -1: no record (reported as 0, as fs.rs does).
                stored: u64::try_from(*stored).unwrap_or(0),
                held: held.unwrap_or(0),
            }),
            _ => Err(unexpected(&items)),
        },
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &impl std::fmt::Debug) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected compare-and-set reply {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_reject_junk() {
        let id = StreamId::new("acme", "cam-1").unwrap();
        assert_eq!(parse_member(&id.to_string()), Some(id.clone()));
        for bad in ["", "acme", "acme/", "/cam", "acme/a/b", "../x/y", "acme/.x"] {
            assert_eq!(parse_member(bad), None, "{bad}");
        }
        assert_eq!(
            parse_change(&tenant_payload("acme")),
            Some(Change::Tenant("acme".into()))
        );
        assert_eq!(parse_change("acme/cam-1"), Some(Change::Stream(id)));
        for bad in ["tenant:", "tenant:Acme", "tenant:../x", "tenant:a/b"] {
            assert_eq!(parse_change(bad), None, "{bad}");
        }
    }
}
