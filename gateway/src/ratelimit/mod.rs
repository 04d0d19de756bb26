//! L7 rate limits (GCRA) and calendar quotas, per route, keyed on the client identity, the
//! principal, claims, headers or the route. Limits keyed only on what is known before
//! authentication run first (cheap rejection of floods); limits that need the principal run after
//! authentication. A request refused by any limit consumes nothing from the others. Quotas are
//! written to `<state_dir>/<instance>/ratelimit-quotas.json` so they survive restarts.
//! See docs/rate-limits.md for the algorithm, its error bound and the header syntax.

mod gcra;
mod key;
mod quota;

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher as _,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
use serde::{Deserialize, Serialize};

pub use gcra::{Check, GcraTable, Rate};
pub use key::{KeyPart, client_network};
pub use quota::{Entry, Period, QuotaCheck, QuotaTable};

use crate::{
    config::de_duration,
    proxy::{
        problem::Problem,
        router::Router,
        stage::{Evidence, RequestContext},
    },
};

/// One limit of a route (`rate_limits:` items).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The policy name in `RateLimit-Policy`/`RateLimit` headers; limits with the same name,
    /// key and rate on several routes share their buckets. Default: `<route>.<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// What is counted together: `client_ip`, `principal`, `route`, `header:NAME`,
    /// `claim:NAME` or `claim:/json/pointer`, or a list of these.
    pub key: KeyConfig,
    /// GCRA rate: `10/s`, `600/m`, `1000/h`, `20000/d`. Set `rate` or `quota`.
    #[serde(default)]
    pub rate: Option<String>,
    /// Requests admitted at once on a full bucket; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Calendar quota, UTC-aligned and kept across restarts: `10000/day`, `1000000/month`.
    #[serde(default)]
    pub quota: Option<String>,
    /// When the key cannot be formed (no principal, missing claim or header): count the
    /// request on the client identity instead (`client_ip`, default) or do not limit it
    /// (`skip`).
    #[serde(default)]
    pub when_missing: WhenMissing,
}

/// One key part or several.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum KeyConfig {
    One(String),
    All(Vec<String>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenMissing {
    #[default]
    ClientIp,
    Skip,
}

/// The top-level `rate_limit:` section: settings every route's limits share.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// IPv6 clients are counted per prefix of this length: addresses rotated inside one
    /// subscriber's /64 share a bucket.
    pub ipv6_prefix: u8,
    /// IPv4 clients are counted per prefix of this length.
    pub ipv4_prefix: u8,
    /// Keys held per limit; beyond, only keys whose bucket is full again are evicted, and new
    /// keys share one overflow bucket per shard until room frees up.
    pub max_keys: usize,
    /// Quotas are written to the state file this often (and at shutdown): a `kill -9` loses at
    /// most the counts of the last interval.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub flush_interval: Duration,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            ipv6_prefix: 64,
            ipv4_prefix: 32,
            max_keys: 1_000_000,
            flush_interval: Duration::from_secs(5),
        }
    }
}

impl RateLimitSection {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.ipv6_prefix > 128 || self.ipv4_prefix > 32 {
            return Err((
                "ipv6_prefix",
                "rate_limit.ipv6_prefix must be 0..=128 and ipv4_prefix 0..=32".into(),
            ));
        }
        if self.max_keys == 0 || self.flush_interval.is_zero() {
            return Err((
                "max_keys",
                "rate_limit.max_keys and flush_interval must be above 0".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Rate(Rate),
    Quota { limit: u64, period: Period },
}

/// A limit compiled from the config, bound to its table when a runtime is built.
#[derive(Clone)]
pub struct Limit {
    /// Which table: equal ids share state (across routes and reloads).
    id: String,
    name: String,
    parts: Vec<KeyPart>,
    when_missing: WhenMissing,
    kind: Kind,
    table: OnceLock<Arc<Table>>,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A route's limits, split by the stage they run in.
#[derive(Clone, Debug, Default)]
pub struct RouteLimits {
    /// Keys known before authentication.
    pub client: Vec<Limit>,
    /// Keys that use the principal or its claims.
    pub consumer: Vec<Limit>,
}

impl RouteLimits {
    /// Compiles a route's `rate_limits`; errors say which item and why.
    pub fn compile(route: &str, configs: &[LimitConfig]) -> Result<Self, String> {
        let mut out = Self::default();
        for (i, c) in configs.iter().enumerate() {
            let at = |e: String| format!("rate_limits[{i}]: {e}");
            let raw = match &c.key {
                KeyConfig::One(k) => vec![k.clone()],
                KeyConfig::All(ks) => ks.clone(),
            };
            if raw.is_empty() {
                return Err(at("`key` needs at least one part".into()));
            }
            let parts = raw
                .iter()
                .map(|k| KeyPart::parse(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let kind = match (&c.rate, &c.quota) {
                (Some(r), None) => {
                    let (count, unit) = parse_rate(r).map_err(at)?;
                    let burst = c.burst.unwrap_or(u32::try_from(count).unwrap_or(u32::MAX));
                    if burst == 0 {
                        return Err(at("burst must be at least 1".into()));
                    }
                    Kind::Rate(Rate {
                        interval: unit.as_nanos().div_ceil(u128::from(count)) as u64,
                        burst,
                    })
                }
                (None, Some(q)) => {
                    if c.burst.is_some() {
                        return Err(at("`burst` applies to `rate`, not `quota`".into()));
                    }
                    let (limit, period) = parse_quota(q).map_err(at)?;
                    Kind::Quota { limit, period }
                }
                _ => return Err(at("set exactly one of `rate` and `quota`".into())),
            };
            let name = match &c.name {
                Some(n) => {
                    if n.is_empty()
                        || n.len() > 64
                        || !n
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "._-:/".contains(ch))
                    {
                        return Err(at(format!(
                            "name `{n}`: 1-64 letters, digits or `._-:/` (it goes into headers)"
                        )));
                    }
                    n.clone()
                }
                None => format!("{route}.{i}")
                    .chars()
                    .map(|ch| {
                        if ch.is_ascii_alphanumeric() || "._-:/".contains(ch) {
                            ch
                        } else {
                            '_'
                        }
                    })
                    .collect(),
            };
            let id = format!(
                "{}|{}|{:?}",
                c.name
                    .as_deref()
                    .map_or(format!("route:{route}.{i}"), |n| format!("name:{n}")),
                parts
                    .iter()
                    .map(KeyPart::describe)
                    .collect::<Vec<_>>()
                    .join("+"),
                kind
            );
            let consumer = parts.iter().any(KeyPart::needs_principal);
            let limit = Limit {
                id,
                name,
                parts,
                when_missing: c.when_missing,
                kind,
                table: OnceLock::new(),
            };
            if consumer {
                out.consumer.push(limit);
            } else {
                out.client.push(limit);
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.client.is_empty() && self.consumer.is_empty()
    }
}

/// `10/s` -> (10, 1s).
fn parse_rate(s: &str) -> Result<(u64, Duration), String> {
    let (n, unit) = s
        .split_once('/')
        .ok_or_else(|| format!("rate `{s}` is not like 10/s, 600/m, 1000/h"))?;
    let count: u64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("rate `{s}`: the count must be a whole number above 0"))?;
    let unit = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => return Err(format!("rate `{s}`: unknown unit `{other}` (s, m, h, d)")),
    };
    Ok((count, unit))
}

/// `10000/day` -> (10000, Day).
fn parse_quota(s: &str) -> Result<(u64, Period), String> {
    let (n, unit) = s
        .split_once('/')
        .ok_or_else(|| format!("quota `{s}` is not like 10000/day or 1000000/month"))?;
    let limit: u64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("quota `{s}`: the count must be a whole number above 0"))?;
    let period = match unit.trim() {
        "day" | "d" => Period::Day,
        "month" => Period::Month,
        other => {
            return Err(format!(
                "quota `{s}`: unknown period `{other}` (day, month)"
            ));
        }
    };
    Ok((limit, period))
}

pub enum Table {
    Gcra(GcraTable),
    Quota(QuotaTable),
}

/// What is kept in the state file.
#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Hex salt of the key digests: quota keys (API keys in a header, say) are stored as
    /// salted SHA-256, never as they came.
    #[serde(default)]
    salt: String,
    /// Quota table id -> counters of its current period.
    quotas: BTreeMap<String, Vec<Entry>>,
}

/// The buckets and counters of every limit; lives as long as the proxy (across reloads), so a
/// reload never hands anyone a fresh bucket.
pub struct Limiter {
    hasher: std::hash::RandomState,
    /// Salt of quota key digests, kept in the state file.
    salt: String,
    tables: Mutex<HashMap<String, Weak<Table>>>,
    /// Counters read from the state file whose table is not built yet.
    pending: Mutex<HashMap<String, Vec<Entry>>>,
    state_file: PathBuf,
    max_keys: usize,
    epoch: Instant,
    dirty: AtomicBool,
}

impl Limiter {
    /// Reads the quota state file when there is one; an unreadable file is reported and the
    /// quotas start from zero (failing to start would turn a lost file into an outage).
    pub fn open(state_dir: &Path, instance: &str, section: &RateLimitSection) -> Self {
        let state_file = state_dir.join(instance).join("ratelimit-quotas.json");
        let file = match std::fs::read(&state_file) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(file = %state_file.display(), error = %e, "quota state unreadable: quotas start from zero");
                    StateFile::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => {
                tracing::error!(file = %state_file.display(), error = %e, "quota state unreadable: quotas start from zero");
                StateFile::default()
            }
        };
        // Counters are only meaningful under the salt they were digested with.
        let (salt, pending) = if file.salt.len() == 32 {
            (file.salt, file.quotas.into_iter().collect())
        } else {
            (format!("{:032x}", rand::random::<u128>()), HashMap::new())
        };
        Self {
            salt,
            hasher: std::hash::RandomState::new(),
            tables: Mutex::new(HashMap::new()),
            pending: Mutex::new(pending),
            state_file,
            max_keys: section.max_keys,
            epoch: Instant::now(),
            dirty: AtomicBool::new(false),
        }
    }

    /// Binds every limit of `router` to its table, reusing live tables with the same id.
    fn bind(&self, router: &Router) {
        let mut tables = self
            .tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tables.retain(|_, t| t.strong_count() > 0);
        for route in router.routes() {
            for limit in route
                .rate_limits
                .client
                .iter()
                .chain(&route.rate_limits.consumer)
            {
                let table = match tables.get(&limit.id).and_then(Weak::upgrade) {
                    Some(t) => t,
                    None => {
                        let t = Arc::new(match limit.kind {
                            Kind::Rate(rate) => Table::Gcra(GcraTable::new(rate, self.max_keys)),
                            Kind::Quota { limit: n, period } => {
                                let q = QuotaTable::new(n, period, self.max_keys);
                                let seed = self
                                    .pending
                                    .lock()
                                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                                    .remove(&limit.id);
                                if let Some(entries) = seed {
                                    q.seed(&entries, wall_secs());
                                }
                                Table::Quota(q)
                            }
                        });
                        tables.insert(limit.id.clone(), Arc::downgrade(&t));
                        t
                    }
                };
                let _ = limit.table.set(table);
            }
        }
    }

    /// What a quota counts under: a salted digest (128 bits), so the state file never holds an
    /// API key or other credential used as a key.
    fn quota_key(&self, key: &str) -> String {
        use sha2::{Digest as _, Sha256};
        let digest = Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update(key.as_bytes())
            .finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mono_nanos(&self) -> u64 {
        // +1: a stored `tat` of 0 always means "full bucket".
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Writes the quota counters atomically (temp file, fsync, rename, fsync of the directory)
    /// when they changed since the last write.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.write_state();
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }

    fn write_state(&self) -> std::io::Result<()> {
        let now = wall_secs();
        let mut file = StateFile {
            version: 1,
            salt: self.salt.clone(),
            quotas: self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let live: Vec<(String, Arc<Table>)> = self
            .tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), t.upgrade()?)))
            .collect();
        for (id, table) in live {
            if let Table::Quota(q) = &*table {
                file.quotas.insert(id, q.snapshot(now));
            }
        }
        let dir = self.state_file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.state_file.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&file).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.state_file)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Flushes every `interval` while the limiter lives.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                let res = tokio::task::spawn_blocking(move || limiter.flush()).await;
                if let Ok(Err(e)) = res {
                    tracing::error!(error = %e, "writing quota state failed");
                }
            }
        })
    }
}

fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The rate-limit part of a runtime generation.
pub struct RateLimits {
    limiter: Arc<Limiter>,
    v4: u8,
    v6: u8,
}

/// What the per-client stage consumed, for the per-consumer stage: refunded if that refuses.
#[derive(Default)]
pub struct Admission {
    held: Vec<Held>,
    statuses: Vec<Status>,
}

enum Held {
    Gcra(Arc<Table>, gcra::Slot),
    Quota(Arc<Table>, quota::QuotaSlot),
}

impl Held {
    fn refund(&self) {
        match self {
            Held::Gcra(t, slot) => {
                if let Table::Gcra(g) = &**t {
                    g.refund(*slot);
                }
            }
            Held::Quota(t, slot) => {
                if let Table::Quota(q) = &**t {
                    q.refund(slot);
                }
            }
        }
    }
}

/// One limit's state for the response headers.
#[derive(Clone, Debug)]
struct Status {
    name: String,
    /// Quota units (requests) and window in seconds (`RateLimit-Policy`).
    quota: u64,
    window: u64,
    /// Remaining and seconds to reset (`RateLimit`).
    remaining: u64,
    reset: u64,
}

fn secs_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

impl RateLimits {
    /// Binds `router`'s limits to the limiter's tables (shared with earlier generations).
    pub fn new(limiter: Arc<Limiter>, section: &RateLimitSection, router: &Router) -> Self {
        limiter.bind(router);
        Self {
            limiter,
            v4: section.ipv4_prefix,
            v6: section.ipv6_prefix,
        }
    }

    pub fn limiter(&self) -> Arc<Limiter> {
        Arc::clone(&self.limiter)
    }

    /// The stage before authentication: limits whose keys need no principal.
    pub fn check_client(
        &self,
        ctx: &mut RequestContext<'_>,
        headers: &HeaderMap,
    ) -> Result<Admission, Problem> {
        let route = ctx.route;
        if route.rate_limits.client.is_empty() {
            return Ok(Admission::default());
        }
        let mut admission = Admission::default();
        self.run(&route.rate_limits.client, ctx, headers, &mut admission)?;
        Ok(admission)
    }

    /// The stage after authentication: limits keyed on the principal or its claims. A refusal
    /// here also gives back what the per-client stage took.
    pub fn check_consumer(
        &self,
        ctx: &mut RequestContext<'_>,
        headers: &HeaderMap,
        mut admission: Admission,
    ) -> Result<(), Problem> {
        let route = ctx.route;
        if route.rate_limits.consumer.is_empty() {
            return Ok(());
        }
        self.run(&route.rate_limits.consumer, ctx, headers, &mut admission)
    }

    fn run(
        &self,
        limits: &[Limit],
        ctx: &mut RequestContext<'_>,
        headers: &HeaderMap,
        admission: &mut Admission,
    ) -> Result<(), Problem> {
        let mono = self.limiter.mono_nanos();
        let wall = wall_secs();
        let mut denied: Option<(u64, &Limit)> = None;
        for limit in limits {
            let Some(table) = limit.table.get() else {
                continue;
            };
            let Some(key) = self.key(limit, ctx, headers) else {
                continue;
            };
            match &**table {
                Table::Gcra(g) => {
                    let rate = g.rate();
                    let hashed = self.limiter.hasher.hash_one(&key);
                    let (check, slot) = g.check(hashed, mono);
                    let window = secs_ceil(rate.interval.saturating_mul(u64::from(rate.burst)));
                    let (remaining, reset) = match check {
                        Check::Allowed { remaining, reset } => {
                            admission.held.push(Held::Gcra(Arc::clone(table), slot));
                            (remaining, reset)
                        }
                        Check::Denied { retry_after, reset } => {
                            if denied.is_none_or(|(w, _)| retry_after > w) {
                                denied = Some((retry_after, limit));
                            }
                            (0, reset)
                        }
                    };
                    admission.statuses.push(Status {
                        name: limit.name.clone(),
                        quota: u64::from(rate.burst),
                        window: window.max(1),
                        remaining,
                        reset: secs_ceil(reset),
                    });
                }
                Table::Quota(q) => {
                    let (check, slot) = q.check(&self.limiter.quota_key(&key), wall);
                    let remaining = match check {
                        QuotaCheck::Allowed { remaining, .. } => {
                            self.limiter.dirty.store(true, Ordering::Release);
                            admission.held.push(Held::Quota(Arc::clone(table), slot));
                            remaining
                        }
                        QuotaCheck::Denied { reset } => {
                            let wait = reset.saturating_mul(1_000_000_000);
                            if denied.is_none_or(|(w, _)| wait > w) {
                                denied = Some((wait, limit));
                            }
                            0
                        }
                    };
                    admission.statuses.push(Status {
                        name: limit.name.clone(),
                        quota: q.limit(),
                        window: q.period().length(wall),
                        remaining,
                        reset: q.period().until_next(wall),
                    });
                }
            }
        }
        let (policy, state) = header_values(&admission.statuses);
        let Some((wait, limit)) = denied else {
            if let (Some(p), Some(s)) = (policy, state) {
                ctx.response_headers.insert(RATELIMIT_POLICY, p);
                ctx.response_headers.insert(RATELIMIT, s);
            }
            return Ok(());
        };
        // Refused: nothing this request took stays taken, in this stage or the one before.
        for held in admission.held.drain(..) {
            held.refund();
            if let Held::Quota(..) = held {
                self.limiter.dirty.store(true, Ordering::Release);
            }
        }
        let retry = secs_ceil(wait).max(1);
        let quota = matches!(limit.kind, Kind::Quota { .. });
        let mut problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            .detail(if quota {
                format!("quota `{}` is used up; retry in {retry}s", limit.name)
            } else {
                format!("rate limit `{}` exceeded; retry in {retry}s", limit.name)
            })
            .evidence(Evidence {
                stage: "ratelimit",
                rule_ids: vec![limit.name.clone()],
                message: if quota {
                    "quota exhausted".into()
                } else {
                    "rate limit exceeded".into()
                },
                location: Some(
                    limit
                        .parts
                        .iter()
                        .map(KeyPart::describe)
                        .collect::<Vec<_>>()
                        .join("+"),
                ),
                ..Evidence::default()
            })
            .header(RETRY_AFTER, HeaderValue::from(retry));
        if let (Some(p), Some(s)) = header_values(&admission.statuses) {
            problem = problem.header(RATELIMIT_POLICY, p).header(RATELIMIT, s);
        }
        Err(problem)
    }

    /// The request's key for `limit`; `None` means the limit does not apply to it.
    fn key(&self, limit: &Limit, ctx: &RequestContext<'_>, headers: &HeaderMap) -> Option<String> {
        let mut out = String::new();
        for part in &limit.parts {
            match key::value(part, ctx, headers, self.v4, self.v6) {
                Some(v) => {
                    out.push_str(&v);
                    out.push('\u{1f}');
                }
                None => {
                    return match limit.when_missing {
                        WhenMissing::Skip => None,
                        // Marked so it never collides with a real value of the missing part.
                        WhenMissing::ClientIp => Some(format!(
                            "\u{1e}{}",
                            client_network(ctx.client_ip, self.v4, self.v6)
                        )),
                    };
                }
            }
        }
        Some(out)
    }
}

pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` and `RateLimit` as structured-field lists
/// (draft-ietf-httpapi-ratelimit-headers-10): `"name";q=20;w=2` and `"name";r=19;t=1`.
fn header_values(statuses: &[Status]) -> (Option<HeaderValue>, Option<HeaderValue>) {
    if statuses.is_empty() {
        return (None, None);
    }
    let policy = statuses
        .iter()
        .map(|s| format!("\"{}\";q={};w={}", s.name, s.quota, s.window))
        .collect::<Vec<_>>()
        .join(", ");
    let state = statuses
        .iter()
        .map(|s| format!("\"{}\";r={};t={}", s.name, s.remaining, s.reset))
        .collect::<Vec<_>>()
        .join(", ");
    (
        HeaderValue::from_str(&policy).ok(),
        HeaderValue::from_str(&state).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(yaml: &str) -> Result<RouteLimits, String> {
        let configs: Vec<LimitConfig> = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        RouteLimits::compile("orders", &configs)
    }

    #[test]
    fn limits_split_by_stage_and_parse() {
        let l = limits(
            "[{ key: client_ip, rate: 10/s, burst: 20 }, { key: [principal, route], rate: 1000/h }, { key: 'claim:tenant', quota: 5/day }]",
        )
        .expect("valid");
        assert_eq!(l.client.len(), 1);
        assert_eq!(l.consumer.len(), 2);
        assert_eq!(
            l.client[0].kind,
            Kind::Rate(Rate {
                interval: 100_000_000,
                burst: 20
            })
        );
        assert_eq!(
            l.consumer[0].kind,
            Kind::Rate(Rate {
                interval: 3_600_000_000,
                burst: 1000
            })
        );
        assert_eq!(l.client[0].name, "orders.0");
    }

    #[test]
    fn bad_limits_are_refused() {
        for bad in [
            "[{ key: client_ip }]",
            "[{ key: client_ip, rate: 10/s, quota: 5/day }]",
            "[{ key: client_ip, rate: 0/s }]",
            "[{ key: client_ip, rate: 10/fortnight }]",
            "[{ key: client_ip, quota: 10/week }]",
            "[{ key: client_ip, rate: 10/s, burst: 0 }]",
            "[{ key: client_ip, quota: 10/day, burst: 3 }]",
            "[{ key: [], rate: 1/s }]",
            "[{ key: client_ip, rate: 1/s, name: 'has space' }]",
        ] {
            assert!(limits(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn headers_follow_the_structured_field_syntax() {
        let (p, s) = header_values(&[
            Status {
                name: "a".into(),
                quota: 20,
                window: 2,
                remaining: 19,
                reset: 1,
            },
            Status {
                name: "b".into(),
                quota: 1000,
                window: 86_400,
                remaining: 0,
                reset: 300,
            },
        ]);
        assert_eq!(
            p.expect("policy").to_str().ok(),
            Some("\"a\";q=20;w=2, \"b\";q=1000;w=86400")
        );
        assert_eq!(
            s.expect("state").to_str().ok(),
            Some("\"a\";r=19;t=1, \"b\";r=0;t=300")
        );
    }

    fn router(limits: &str) -> Router {
        let c: crate::config::RouteConfig = serde_yaml::from_str(&format!(
            "{{ name: api, match: {{ prefix: / }}, upstream: a, rate_limits: {limits} }}"
        ))
        .expect("route");
        Router::build(&[c]).expect("router")
    }

    fn principal(id: &str, tenant: &str) -> Option<crate::proxy::stage::Principal> {
        Some(crate::proxy::stage::Principal {
            id: id.into(),
            scheme: "jwt",
            claims: serde_json::json!({ "tenant": tenant, "org": { "id": 7 } }),
            ..Default::default()
        })
    }

    /// One request through both stages, as the pipeline runs them.
    fn request(
        rl: &RateLimits,
        router: &Router,
        ip: &str,
        who: Option<crate::proxy::stage::Principal>,
    ) -> Result<HeaderMap, Problem> {
        let mut ctx = RequestContext {
            request_id: "t",
            client_ip: ip.parse().expect("ip"),
            behind_proxy: false,
            tls: None,
            route: &router.routes()[0],
            path: "/",
            params: &[],
            body: None,
            principal: None,
            findings: Vec::new(),
            response_headers: HeaderMap::new(),
        };
        let headers = HeaderMap::new();
        let admission = rl.check_client(&mut ctx, &headers)?;
        ctx.principal = who;
        rl.check_consumer(&mut ctx, &headers, admission)?;
        Ok(ctx.response_headers)
    }

    fn runtime(router: &Router) -> RateLimits {
        let section = RateLimitSection::default();
        let dir = std::env::temp_dir().join("gw-rl-never-written");
        RateLimits::new(
            Arc::new(Limiter::open(&dir, "t", &section)),
            &section,
            router,
        )
    }

    #[test]
    fn principal_and_claim_keys_with_their_fallbacks() {
        let router = router(
            "[{ name: user, key: principal, rate: 1/h, burst: 1 }, \
              { name: org, key: 'claim:/org/id', rate: 1/h, burst: 3, when_missing: skip }]",
        );
        let rl = runtime(&router);
        let ok = request(&rl, &router, "192.0.2.1", principal("alice", "t1")).expect("first");
        assert_eq!(
            ok.get(RATELIMIT).and_then(|v| v.to_str().ok()),
            Some("\"user\";r=0;t=3600, \"org\";r=2;t=3600")
        );
        let refused = request(&rl, &router, "192.0.2.2", principal("alice", "t1"))
            .expect_err("alice's bucket is per principal, not per address");
        assert_eq!(refused.code, "rate_limited");
        // Bob is someone else but shares alice's org (3 at once): alice's first request and
        // bob's leave one; alice's refused request took nothing from it.
        let ok = request(&rl, &router, "192.0.2.1", principal("bob", "t1")).expect("bob");
        assert!(
            ok.get(RATELIMIT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.ends_with("\"org\";r=1;t=7200")),
            "{ok:?}"
        );
        // No principal: the principal limit falls back to the client address, the claim
        // limit (when_missing: skip) does not apply.
        let anon = request(&rl, &router, "198.51.100.9", None).expect("anonymous");
        assert_eq!(
            anon.get(RATELIMIT).and_then(|v| v.to_str().ok()),
            Some("\"user\";r=0;t=3600")
        );
        assert!(request(&rl, &router, "198.51.100.9", None).is_err());
    }

    #[test]
    fn a_consumer_refusal_gives_back_the_client_tokens() {
        let router = router(
            "[{ name: ip, key: client_ip, rate: 1/h, burst: 2 }, \
              { name: user, key: principal, rate: 1/h, burst: 1 }]",
        );
        let rl = runtime(&router);
        assert!(request(&rl, &router, "192.0.2.1", principal("alice", "t")).is_ok());
        for _ in 0..5 {
            let p = request(&rl, &router, "192.0.2.1", principal("alice", "t"))
                .expect_err("alice is over her limit");
            assert!(p.detail.as_deref().is_some_and(|d| d.contains("`user`")));
        }
        // The address still has its second token: alice's refusals did not spend it.
        assert!(request(&rl, &router, "192.0.2.1", principal("bob", "t")).is_ok());
        let p = request(&rl, &router, "192.0.2.1", principal("carol", "t")).expect_err("empty");
        assert!(p.detail.as_deref().is_some_and(|d| d.contains("`ip`")));
    }

    #[test]
    fn quotas_survive_a_new_limiter_on_the_same_state_dir() {
        let dir = std::env::temp_dir().join(format!("gw-rl-{}", rand::random::<u64>()));
        let section = RateLimitSection::default();
        let l = limits("[{ key: 'header:x-tenant', quota: 3/day }]").expect("valid");
        let id = l.client[0].id.clone();
        {
            let limiter = Limiter::open(&dir, "t", &section);
            let table = Arc::new(Table::Quota(QuotaTable::new(3, Period::Day, 100)));
            limiter
                .tables
                .lock()
                .expect("lock")
                .insert(id.clone(), Arc::downgrade(&table));
            if let Table::Quota(q) = &*table {
                let _ = q.check("acme", wall_secs());
                let _ = q.check("acme", wall_secs());
            }
            limiter.dirty.store(true, Ordering::Release);
            limiter.flush().expect("flush");
        }
        let limiter = Limiter::open(&dir, "t", &section);
        let pending = limiter.pending.lock().expect("lock");
        let entries = pending.get(&id).expect("counters kept");
        assert_eq!(entries[0].key, "acme");
        assert_eq!(entries[0].used, 2);
        drop(pending);
        // Keys reach the table as salted digests, stable across restarts (the salt is kept).
        let first = Limiter::open(&dir, "t", &section).quota_key("secret-api-key");
        assert_eq!(limiter.quota_key("secret-api-key"), first);
        assert_eq!(first.len(), 32);
        assert!(!first.contains("secret"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
