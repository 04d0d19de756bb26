//! The one YAML file: typed with serde (unknown keys are errors), validated as a whole, and
//! reported as `file:line: reason` when it is wrong. Parsing never touches the running system,
//! so a bad file can be rejected without changing anything.

mod addr;
mod admin;
mod defense;
mod l7;
mod telemetry;
mod xdp;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use addr::{Net, parse_net};
pub use admin::{AdminSection, AdminTcp, AdminToken, default_socket};
pub use defense::{AggregateConfig, DefenseSection, FeedConfig, FeedFormat, GeoConfig};
pub(crate) use l7::de_size;
pub use l7::{
    AccessLog, HttpLimits, ListenerConfig, RouteConfig, RouteMatch, SecurityHeaders, parse_size,
};
pub use telemetry::{EventsConfig, Facility, SyslogConfig, SyslogTransport, TelemetrySection};
pub use xdp::{RateCap, XdpMode, XdpSection};

/// A configuration error with its place in the file.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    pub reason: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names the pin directory `/sys/fs/bpf/gateway/<instance>` and the state directory.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Where the audit journal lives: `<state_dir>/<instance>/journal.jsonl`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where bpffs is (mounted there if it is not).
    #[serde(default = "default_bpffs")]
    pub bpffs: PathBuf,
    /// The kernel fast path; absent means no XDP.
    #[serde(default)]
    pub xdp: Option<XdpSection>,
    /// Peers whose `Forwarded`/`X-Forwarded-For` and PROXY protocol headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Net>,
    /// Where the L7 proxy accepts connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Upstream pools by name; routes refer to them.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, crate::proxy::upstream::UpstreamConfig>,
    /// Request limits of every listener.
    #[serde(default)]
    pub http: HttpLimits,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Routes generated from OpenAPI specs at load, tried after `routes`: one per operation
    /// with its parameter and body schemas (see `gateway openapi import`).
    #[serde(default)]
    pub openapi: Vec<crate::validate::openapi::OpenApiSource>,
    /// One JSON line per request.
    #[serde(default)]
    pub access_log: AccessLog,
    /// Worker threads of the proxy; absent means one per CPU this process may run on (like
    /// nginx's `worker_processes auto`, and respecting `taskset`/cgroup CPU sets).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Credential sources routes authenticate with (`routes[].auth`) and the policies they
    /// authorise with (`routes[].require`).
    #[serde(default)]
    pub auth: Option<crate::auth::AuthSection>,
    /// Turning evidence into timed blocks; absent means no automatic blocking.
    #[serde(default)]
    pub defense: Option<DefenseSection>,
    /// Settings every route's `rate_limits` share (IPv6 prefix, memory cap, quota flushing).
    #[serde(default)]
    pub rate_limit: crate::ratelimit::RateLimitSection,
    /// Bot signals toward the defense loop; absent means none are checked.
    #[serde(default)]
    pub bot: Option<crate::bot::BotSection>,
    /// The admin API (unix socket by default; TCP only with a token or mTLS) and `/metrics`.
    #[serde(default)]
    pub admin: AdminSection,
    /// Security events (ECS JSON to a file, stdout or syslog).
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// The web application firewall (OWASP CRS); routes opt in with `waf: on`.
    #[serde(default)]
    pub waf: Option<crate::waf::WafSection>,
    /// How long SIGTERM waits for requests in flight.
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

fn default_instance() -> String {
    "default".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/gateway")
}

fn default_bpffs() -> PathBuf {
    PathBuf::from("/sys/fs/bpf")
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| {
            let reason = strip_location(&e.to_string());
            ConfigError {
                file: path.to_owned(),
                line: refine_line(text, e.location().map_or(0, |l| l.line()), &reason),
                reason,
            }
        })?;
        let mut config = config;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config.expand_openapi().map_err(|reason| ConfigError {
            file: path.to_owned(),
            line: line_of(text, "openapi"),
            reason,
        })?;
        config.validate().map_err(|(key, reason)| ConfigError {
            file: path.to_owned(),
            line: line_of(text, key),
            reason,
        })?;
        Ok(config)
    }

    /// Relative file names in the file are relative to the file, not to the working directory
    /// the daemon happened to start in.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        for o in &mut self.openapi {
            fix(&mut o.spec);
        }
        if let Some(sock) = &mut self.admin.socket {
            fix(sock);
        }
        if let Some(tcp) = &mut self.admin.tcp {
            for t in &mut tcp.tokens {
                if let Some(f) = &mut t.file {
                    fix(f);
                }
            }
            if let Some(tls) = &mut tcp.tls {
                for pair in &mut tls.certificates {
                    fix(&mut pair.cert);
                    fix(&mut pair.key);
                }
                if let Some(ca) = &mut tls.client_ca {
                    fix(ca);
                }
            }
        }
        if let Some(d) = &mut self.defense {
            for f in &mut d.feeds {
                if let Some(file) = &mut f.file {
                    fix(file);
                }
            }
            if let Some(g) = &mut d.geo {
                fix(&mut g.file);
            }
        }
        if let Some(events) = &mut self.telemetry.events {
            if let Some(f) = &mut events.file {
                fix(f);
            }
            if let Some(ca) = events.syslog.as_mut().and_then(|s| s.ca.as_mut()) {
                fix(ca);
            }
        }
        if let Some(auth) = &mut self.auth {
            for issuer in auth.jwt.values_mut() {
                issuer.ca.as_mut().map(fix);
                for k in &mut issuer.keys {
                    for p in [&mut k.pem_file, &mut k.jwks_file, &mut k.secret_file]
                        .into_iter()
                        .flatten()
                    {
                        fix(p);
                    }
                }
            }
            for set in auth.api_keys.values_mut() {
                set.file.as_mut().map(fix);
            }
            for set in auth.hmac.values_mut() {
                for c in &mut set.clients {
                    c.secret_file.as_mut().map(fix);
                }
            }
            for i in auth.introspection.values_mut() {
                i.client_secret_file.as_mut().map(fix);
                i.ca.as_mut().map(fix);
            }
            for p in auth.policies.values_mut() {
                p.file.as_mut().map(fix);
                if let Some(opa) = &mut p.opa {
                    opa.ca.as_mut().map(fix);
                }
            }
        }
        if let Some(w) = &mut self.waf {
            for r in &mut w.rules {
                fix(r);
            }
            if let Some(a) = &mut w.audit_log {
                fix(a);
            }
        }
        for l in &mut self.listeners {
            if let Some(tls) = &mut l.tls {
                for pair in &mut tls.certificates {
                    fix(&mut pair.cert);
                    fix(&mut pair.key);
                }
                if let Some(ca) = &mut tls.client_ca {
                    fix(ca);
                }
            }
        }
    }

    /// Appends the routes of every `openapi` spec (read now, so a reload re-reads them).
    fn expand_openapi(&mut self) -> Result<(), String> {
        use crate::validate::openapi;
        for source in &self.openapi {
            let spec = openapi::load(&source.spec)?;
            let imported = openapi::import(
                &spec,
                &source.upstream,
                source.strict,
                source.base_path.as_deref(),
            )
            .map_err(|e| format!("{}: {e}", source.spec.display()))?;
            for note in &imported.notes {
                tracing::warn!(spec = %source.spec.display(), "{note}");
            }
            let mut unenforced = 0usize;
            for route in imported.routes {
                let mut route: RouteConfig = serde_json::from_value(route)
                    .map_err(|e| format!("{}: {e}", source.spec.display()))?;
                route.cors = source.cors.clone();
                route.csrf = source.csrf.clone();
                if source.security.is_empty() {
                    unenforced += usize::from(!route.security.is_empty());
                } else if let Some((auth, require)) =
                    openapi::enforce_security(&route.security, &source.security).map_err(|e| {
                        format!(
                            "{}: operation `{}`: {e}",
                            source.spec.display(),
                            route.name.as_deref().unwrap_or("?")
                        )
                    })?
                {
                    route.auth = Some(auth);
                    route.require = require;
                }
                self.routes.push(route);
            }
            if unenforced > 0 {
                tracing::warn!(
                    spec = %source.spec.display(),
                    operations = unenforced,
                    "OpenAPI security requirements are recorded but NOT enforced: map the spec's security schemes to auth sources with `openapi[].security`"
                );
            }
        }
        Ok(())
    }

    /// Checks what types alone cannot; the error names the offending key.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let valid_name = !self.instance.is_empty()
            && self.instance.len() <= 64
            && self
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err((
                "instance",
                format!(
                    "instance `{}` must be 1-64 letters, digits, `-` or `_` (it names a directory)",
                    self.instance
                ),
            ));
        }
        if let Some(xdp) = &self.xdp {
            xdp.validate()?;
        }
        if let Some(d) = &self.defense {
            d.validate()?;
        }
        self.rate_limit.validate()?;
        if let Some(bot) = &self.bot {
            bot.validate()?;
        }
        self.admin.validate()?;
        if let Some(e) = &self.telemetry.events {
            e.validate()?;
        }
        if let Some(w) = &self.waf {
            w.validate()?;
        }
        if self.waf.is_none()
            && let Some(r) = self
                .routes
                .iter()
                .find(|r| r.waf.as_ref().is_some_and(|w| w.enabled()))
        {
            return Err((
                "waf",
                format!(
                    "route `{}` turns the WAF on but there is no top-level `waf` section",
                    r.name.as_deref().unwrap_or("?")
                ),
            ));
        }
        if self.workers.is_some_and(|w| w == 0 || w > 1024) {
            return Err(("workers", "workers must be 1..=1024".into()));
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(l.name.as_str()) {
                return Err(("name", format!("listener name `{}` is used twice", l.name)));
            }
            if let Some(tls) = &l.tls {
                tls.validate()
                    .map_err(|e| ("tls", format!("listener `{}`: {e}", l.name)))?;
                if l.redirect_https_port.is_some() {
                    return Err((
                        "redirect_https_port",
                        format!(
                            "listener `{}` terminates TLS: it cannot redirect to HTTPS",
                            l.name
                        ),
                    ));
                }
            }
        }
        for (name, upstream) in &self.upstreams {
            upstream
                .validate()
                .map_err(|e| ("upstreams", format!("upstream `{name}`: {e}")))?;
        }
        // Builds every credential source and policy (reading key files, compiling Rego, fetching
        // nothing), so `gateway check` catches what a reload would.
        crate::auth::build(self.auth.as_ref(), &self.routes).map_err(|e| ("auth", e))?;
        match crate::proxy::router::Router::build(&self.routes) {
            Err((i, reason)) => return Err(("routes", format!("route {i}: {reason}"))),
            Ok(router) => {
                for (i, r) in router.routes().iter().enumerate() {
                    if !self.upstreams.contains_key(&r.upstream) {
                        return Err((
                            "upstream",
                            format!(
                                "route {i} (`{}`): upstream `{}` is not defined",
                                r.name, r.upstream
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// serde_yaml appends "at line N column M"; the `file:line:` prefix already says it.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// serde_yaml places errors inside a sequence at the sequence's first item; when the message
/// quotes the offending value (`like this`), the line that holds it is the better answer.
fn refine_line(text: &str, line: usize, reason: &str) -> usize {
    let quoted = reason.split('`').nth(1).filter(|q| !q.is_empty());
    quoted
        .and_then(|q| {
            text.lines()
                .enumerate()
                .skip(line.saturating_sub(1))
                .find(|(_, l)| l.contains(q))
                .map(|(i, _)| i + 1)
        })
        .unwrap_or(line)
}

/// The 1-based line where `key:` first appears, for errors found after parsing.
fn line_of(text: &str, key: &str) -> usize {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&needle)
                || t.starts_with(&format!("{{ {needle}"))
                || l.contains(&format!(" {needle}"))
        })
        .map_or(0, |i| i + 1)
}

/// `30s`, `10m`, `1h30m`, `24h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 30s, 10m or 24h: {e}"))
}

pub(crate) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// JSON Schema for a value written as a string in the file (addresses, ports, versions).
macro_rules! string_schema {
    ($ty:ty, $name:literal, $description:literal) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}
pub(crate) use string_schema;

/// The JSON Schema of the configuration file, for editors (`gateway schema`). Durations show
/// their defaults as `30s`, not as the struct they are in memory.
pub fn json_schema() -> serde_json::Value {
    fn humanize(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(d) = map.get_mut("default")
                    && let (Some(secs), Some(nanos)) = (
                        d.get("secs").and_then(|s| s.as_u64()),
                        d.get("nanos").and_then(|n| n.as_u64()),
                    )
                {
                    *d = serde_json::Value::String(
                        humantime::format_duration(Duration::new(secs, nanos as u32)).to_string(),
                    );
                }
                map.values_mut().for_each(humanize);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(humanize),
            _ => {}
        }
    }
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    humanize(&mut schema);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("gw.yaml"), text)
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let c = parse("instance: edge-1\n").expect("valid");
        assert_eq!(c.instance, "edge-1");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/gateway"));
        assert!(c.xdp.is_none());
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let e =
            parse("instance: a\nxdp:\n  interfaces: [eth0]\n  rate_capp: {}\n").expect_err("typo");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().starts_with("gw.yaml:4: "), "{e}");
        assert!(e.reason.contains("rate_capp"), "{e}");
    }

    #[test]
    fn invalid_cidr_is_reported_with_its_line() {
        let e =
            parse("xdp:\n  interfaces: [eth0]\n  deny:\n    - 10.0.0.0/8\n    - 10.0.0.300/8\n")
                .expect_err("bad cidr");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("10.0.0.300/8"), "{e}");
    }

    #[test]
    fn semantic_error_names_the_key_line() {
        let e = parse("instance: a\nxdp:\n  interfaces: [eth0]\n  rate_cap: { pps: 0 }\n")
            .expect_err("zero pps");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("pps"), "{e}");
    }

    #[test]
    fn bad_instance_name_is_rejected() {
        let e = parse("instance: ../etc\n").expect_err("path in name");
        assert_eq!(e.line, 1);
    }

    /// The schema in docs/ is what editors load; it must match the code.
    #[test]
    fn published_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gateway.schema.json");
        let generated = serde_json::to_string_pretty(&json_schema()).expect("schema") + "\n";
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            published == generated,
            "{} is stale: run `gateway schema > docs/gateway.schema.json`",
            path.display()
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway.yaml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.routes.len(), 3);
        assert!(c.defense.is_some() && c.xdp.is_some());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("ten minutes").is_err());
    }
}
