//! `tidegate tenant ...` (with `tenant token ...`) and `tidegate key ...`: the operator's commands over the admin API
//! (`/api/v1/tenants`, docs/openapi.yaml) of any worker of the cluster. They print the API's
//! JSON answer on standard output; an error answer becomes the command's error (exit 1).

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

/// Where the admin API is and how to authenticate.
#[derive(Args)]
pub struct ApiArgs {
    /// A worker's HTTP address (any worker of a cluster: they share the tenants). Plain
    /// `http://`: reach a remote cluster through a tunnel or from inside it.
    #[arg(
        long,
        global = true,
        env = "TIDEGATE_API",
        default_value = "http://localhost:8080"
    )]
    api: String,
    /// The operator token (the workers' `--admin-token`); `key` and `tenant show|list` also
    /// take a tenant admin token, for that tenant.
    #[arg(
        long,
        global = true,
        env = "TIDEGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// Who may watch a tenant's streams.
#[derive(Clone, Copy, ValueEnum)]
pub enum PlaybackArg {
    /// Anyone with the URL.
    Public,
    /// Only with a signed playback token.
    Signed,
}

impl PlaybackArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Signed => "signed",
        }
    }
}

/// A tenant's settings as flags.
#[derive(Args)]
pub struct SettingsArgs {
    /// Its dedicated worker pool.
    #[arg(long, conflicts_with = "shared_pool")]
    pool: Option<String>,
    /// Back to the shared pool (`tenant update`).
    #[arg(long)]
    shared_pool: bool,
    /// Streams live at once, across the cluster.
    #[arg(long)]
    max_streams: Option<u32>,
    /// Ingest bitrate of one stream, bits per second.
    #[arg(long)]
    max_bitrate_bps: Option<u64>,
    /// Who may watch.
    #[arg(long, value_enum)]
    playback: Option<PlaybackArg>,
    /// Ingest bitrate of all its live streams together, across the cluster, bits per second.
    #[arg(long)]
    max_total_bitrate_bps: Option<u64>,
    /// Publish attempts a second with its keys, across the cluster.
    #[arg(long)]
    max_publish_rate: Option<u32>,
    /// Seconds a stream may stay above --max-bitrate-bps before it is flagged (1-120).
    #[arg(long)]
    over_bitrate_for_s: Option<u32>,
    /// Whether a stream flagged over its bitrate quota is also disconnected.
    #[arg(long)]
    disconnect_over_bitrate: Option<bool>,
    #[command(flatten)]
    stream: StreamSettingsArgs,
}

/// A tenant's stream settings as flags (docs/tenant-settings.md); unset: unchanged on
/// `update`, the server's on `create`.
#[derive(Args)]
pub struct StreamSettingsArgs {
    /// The passphrase its SRT publishers must encrypt with (the process list shows flags:
    /// on a shared machine, prefer the API).
    #[arg(long)]
    srt_passphrase: Option<String>,
    /// AES key length its SRT publishers must use (16, 24, 32; 0: the caller's).
    #[arg(long)]
    srt_pbkeylen: Option<u8>,
    /// SRT latency asked for in its publishers' handshakes (e.g. `400ms`).
    #[arg(long, value_parser = parse_duration_ms)]
    srt_latency: Option<u64>,
    /// A URL that receives its streams' events (repeat for several; replaces its list).
    #[arg(long = "webhook-url")]
    webhooks: Vec<String>,
    /// The secret its webhooks are signed with (the server's when unset).
    #[arg(long)]
    webhook_secret: Option<String>,
    /// How long its streams wait for their publisher before they end (e.g. `10s`).
    #[arg(long, value_parser = parse_duration_ms)]
    reconnect_window: Option<u64>,
    /// Its HLS segment container: `fmp4` or `ts`.
    #[arg(long, value_parser = ["fmp4", "ts"])]
    segment_format: Option<String>,
    /// Its target segment duration (e.g. `4s`).
    #[arg(long, value_parser = parse_duration_ms)]
    segment_duration: Option<u64>,
    /// Its LL-HLS part duration (200ms to 1s, or `off`).
    #[arg(long, value_parser = parse_part_ms)]
    part_duration: Option<u64>,
}

fn parse_part_ms(s: &str) -> Result<u64, String> {
    match s {
        "off" | "0" => Ok(0),
        _ => parse_duration_ms(s),
    }
}

fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    u64::try_from(d.as_millis()).map_err(|e| e.to_string())
}

impl StreamSettingsArgs {
    /// The settings given, by their JSON names.
    fn json(&self, out: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Value| {
            out.insert(k.into(), v);
        };
        if let Some(v) = &self.srt_passphrase {
            put("srt_passphrase", json!(v));
        }
        if let Some(v) = self.srt_pbkeylen {
            put("srt_pbkeylen", json!(v));
        }
        if let Some(v) = self.srt_latency {
            put("srt_latency_ms", json!(v));
        }
        if !self.webhooks.is_empty() {
            put("webhooks", json!(self.webhooks));
        }
        if let Some(v) = &self.webhook_secret {
            put("webhook_secret", json!(v));
        }
        if let Some(v) = self.reconnect_window {
            put("reconnect_window_ms", json!(v));
        }
        if let Some(v) = &self.segment_format {
            put("segment_format", json!(v));
        }
        if let Some(v) = self.segment_duration {
            put("segment_duration_ms", json!(v));
        }
        if let Some(v) = self.part_duration {
            put("part_duration_ms", json!(v));
        }
    }
}

/// `tidegate tenant ...`.
#[derive(Args)]
pub struct TenantArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (the first one ends open mode: publishing then needs a key).
    Create {
        /// Its name: 1 to 63 of a-z 0-9 _ -, starting with a letter or a digit.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Every tenant with its settings and key ids.
    List,
    /// One tenant.
    Show {
        /// The tenant.
        name: String,
    },
    /// Change a tenant's settings (only those given).
    Update {
        /// The tenant.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Delete a tenant and its keys; its publishers are disconnected.
    Delete {
        /// The tenant.
        name: String,
    },
    // --- signed playback (issue #12) ---
    /// A signed playback token and URL for a stream of a `--playback signed` tenant
    /// (docs/signed-playback.md).
    PlaybackToken {
        /// The tenant.
        name: String,
        /// The stream, or a prefix followed by `*` (`event-*`; `*`: every stream).
        #[arg(long)]
        stream: String,
        /// How long the token plays (`90s`, `1h`, `7d`; at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// A new playback signing key: tokens are signed with it from now on, and its secret is
    /// shown once (for a backend that mints its own tokens). The previous key keeps
    /// verifying unless `--drop-previous`.
    PlaybackKeyRotate {
        /// The tenant.
        name: String,
        /// Tokens signed with the previous key stop working at once (a leaked secret).
        #[arg(long)]
        drop_previous: bool,
    },
    /// A tenant's admin tokens (create, list, revoke): each acts on that tenant only.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// `tidegate tenant token ...` (issue #12 item 5).
#[derive(Subcommand)]
enum TokenCommand {
    /// A new tenant admin token (shown once: hand it over now).
    Create {
        /// The tenant.
        tenant: String,
    },
    /// The tenant's tokens (ids and creation times; never a secret).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Revoke a token: every worker refuses it within a second.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The token's id (from `tenant token list`).
        id: String,
    },
}

/// `tidegate key ...`.
#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// A new stream key for a tenant's stream (shown once: store it now).
    Create {
        /// The tenant.
        tenant: String,
        /// The public stream name it publishes (`/hls/TENANT/STREAM/`).
        stream: String,
    },
    /// The tenant's keys (ids and streams; never a secret).
    List {
        /// The tenant.
        tenant: String,
    },
    /// A new secret for a key; a publisher live with the old one keeps streaming.
    Rotate {
        /// The tenant.
        tenant: String,
        /// The key's id (from `key list`).
        id: String,
    },
    /// Revoke a key; a publisher live with it is disconnected.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The key's id (from `key list`).
        id: String,
    },
}

impl ApiArgs {
    /// `method /api/v1{path}` with the token and an optional JSON body; the answer's JSON,
    /// or an error naming the status and the API's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.api.trim_end_matches('/'));
        let mut req = ureq::request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let (status, text) = match resp {
            Ok(r) => (r.status(), r.into_string()?),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => return Err(e).with_context(|| format!("{method} {url}")),
        };
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: {status}, not JSON: {text}"))?;
        if !(200..300).contains(&status) {
            let message = json["error"].as_str().unwrap_or(&text);
            match status {
                401 => {
                    bail!("{method} {url}: 401 {message} (give --token or TIDEGATE_ADMIN_TOKEN)")
                }
                _ => bail!("{method} {url}: {status} {message}"),
            }
        }
        Ok(json)
    }
}

/// `name` as one path segment: the API refuses anything that is not a plain name, so
/// anything else is refused here before it can change the path.
fn segment(name: &str) -> anyhow::Result<&str> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        bail!("`{name}` is not a valid name");
    }
    Ok(name)
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The settings given as flags, laid over `base` (a tenant's current settings, or `{}`).
fn settings_json(s: &SettingsArgs, base: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(pool) = &s.pool {
        out.insert("pool".into(), json!(pool));
    }
    if s.shared_pool {
        out.insert("pool".into(), Value::Null);
    }
    let given = [
        ("max_streams", s.max_streams.map(|v| json!(v))),
        ("max_bitrate_bps", s.max_bitrate_bps.map(|v| json!(v))),
        (
            "max_total_bitrate_bps",
            s.max_total_bitrate_bps.map(|v| json!(v)),
        ),
        ("max_publish_rate", s.max_publish_rate.map(|v| json!(v))),
        ("over_bitrate_for_s", s.over_bitrate_for_s.map(|v| json!(v))),
        (
            "disconnect_over_bitrate",
            s.disconnect_over_bitrate.map(|v| json!(v)),
        ),
    ];
    if given.iter().any(|(_, v)| v.is_some()) {
        let mut quotas = base["quotas"].as_object().cloned().unwrap_or_default();
        for (name, value) in given {
            if let Some(v) = value {
                quotas.insert(name.into(), v);
            }
        }
        out.insert("quotas".into(), Value::Object(quotas));
    }
    if let Some(p) = s.playback {
        out.insert("playback".into(), json!(p.as_str()));
    }
    s.stream.json(&mut out);
    out
}

/// Runs `tidegate tenant ...`.
pub fn tenant(args: TenantArgs) -> anyhow::Result<()> {
    let api = &args.api;
    match args.command {
        TenantCommand::Create { name, settings } => {
            let mut body = settings_json(&settings, &Value::Null);
            body.insert("name".into(), json!(name));
            print(&api.call("POST", "/tenants", Some(&Value::Object(body)))?)
        }
        TenantCommand::List => print(&api.call("GET", "/tenants", None)?),
        TenantCommand::Show { name } => {
            print(&api.call("GET", &format!("/tenants/{}", segment(&name)?), None)?)
        }
        TenantCommand::Update { name, settings } => {
            let path = format!("/tenants/{}", segment(&name)?);
            let current = api.call("GET", &path, None)?;
            let body = Value::Object(settings_json(&settings, &current));
            print(&api.call("PATCH", &path, Some(&body))?)
        }
        TenantCommand::Delete { name } => {
            print(&api.call("DELETE", &format!("/tenants/{}", segment(&name)?), None)?)
        }
        TenantCommand::PlaybackToken { name, stream, ttl } => {
            let path = format!("/tenants/{}/playback-tokens", segment(&name)?);
            let body = json!({ "stream": stream, "ttl_s": ttl.as_secs().max(1) });
            print(&api.call("POST", &path, Some(&body))?)
        }
        TenantCommand::PlaybackKeyRotate {
            name,
            drop_previous,
        } => {
            let path = format!("/tenants/{}/playback-keys", segment(&name)?);
            let body = json!({ "keep_previous": !drop_previous });
            print(&api.call("POST", &path, Some(&body))?)?;
            eprintln!(
                "the secret is shown this once: keep it now if a backend of yours mints tokens"
            );
            Ok(())
        }
        TenantCommand::Token { command } => token(api, command),
    }
}

/// Runs `tidegate tenant token ...`.
fn token(api: &ApiArgs, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { tenant } => {
            let path = format!("/tenants/{}/tokens", segment(&tenant)?);
            print(&api.call("POST", &path, Some(&json!({ "scope": "tenant" })))?)?;
            eprintln!("the token is shown this once (stored hashed): keep it now");
            Ok(())
        }
        TokenCommand::List { tenant } => print(&api.call(
            "GET",
            &format!("/tenants/{}/tokens", segment(&tenant)?),
            None,
        )?),
        TokenCommand::Revoke { tenant, id } => {
            let path = format!("/tenants/{}/tokens/{}", segment(&tenant)?, segment(&id)?);
            print(&api.call("DELETE", &path, None)?)
        }
    }
}

/// Runs `tidegate key ...`.
pub fn key(args: KeyArgs) -> anyhow::Result<()> {
    let api = &args.api;
    let shown_once = || eprintln!("the key is shown this once (stored hashed): keep it now");
    match args.command {
        KeyCommand::Create { tenant, stream } => {
            let path = format!("/tenants/{}/keys", segment(&tenant)?);
            let issued = api.call("POST", &path, Some(&json!({ "stream": stream })))?;
            print(&issued)?;
            shown_once();
            Ok(())
        }
        KeyCommand::List { tenant } => {
            let t = api.call("GET", &format!("/tenants/{}", segment(&tenant)?), None)?;
            print(&t["keys"])
        }
        KeyCommand::Rotate { tenant, id } => {
            let path = format!(
                "/tenants/{}/keys/{}/rotate",
                segment(&tenant)?,
                segment(&id)?
            );
            print(&api.call("POST", &path, None)?)?;
            shown_once();
            Ok(())
        }
        KeyCommand::Revoke { tenant, id } => {
            let path = format!("/tenants/{}/keys/{}", segment(&tenant)?, segment(&id)?);
            print(&api.call("DELETE", &path, None)?)
        }
    }
}
