//! Request handling of the admin API: authentication first, then one small function per
//! endpoint. Map writes and journal fsyncs run on the blocking pool.

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use gateway_common::{origin, reason};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ACTOR_HEADER, AdminState, Caller, Tokens};
use crate::{
    defense::{Action, Block, Defense, Record},
    xdp::BootClock,
};

type Resp = Response<Full<Bytes>>;

/// Request bodies are a few fields; anything larger is not ours.
const MAX_BODY: usize = 64 * 1024;

/// A permanent block in the proxy's own set (it has no "forever").
pub(super) const L7_PERMANENT: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The journal's origin for blocks enforced in the proxy.
pub(super) const L7_ORIGIN: &str = "l7-proxy";

pub(super) async fn handle(
    state: Arc<AdminState>,
    tokens: Arc<Tokens>,
    caller: Caller,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let actor = match authenticate(&tokens, &caller, &req) {
        Ok(a) => a,
        Err(resp) => {
            state.metrics.admin_refused();
            return Ok(*resp);
        }
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match (method.clone(), path.as_str()) {
        (Method::GET, "/live") => json_resp(StatusCode::OK, &json!({"status": "live"})),
        (Method::GET, "/ready") => {
            if state.ready.load(Ordering::Relaxed) {
                json_resp(StatusCode::OK, &json!({"status": "ready"}))
            } else {
                json_resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "starting"}),
                )
            }
        }
        (Method::GET, "/metrics") => metrics(&state),
        (Method::GET, "/v1/blocks") => blocking(state, list_blocks).await,
        (Method::POST, "/v1/blocks") => match body::<BlockBody>(req).await {
            Ok(b) => blocking(state, move |s| add_block(s, b, &actor)).await,
            Err(r) => r,
        },
        (Method::DELETE, "/v1/blocks") => match body::<TargetBody>(req).await {
            Ok(b) => blocking(state, move |s| remove_block(s, b, &actor)).await,
            Err(r) => r,
        },
        (Method::GET, "/v1/allowlist") => blocking(state, list_allow).await,
        (Method::POST, "/v1/allowlist") => match body::<TargetBody>(req).await {
            Ok(b) => blocking(state, move |s| add_allow(s, b, &actor)).await,
            Err(r) => r,
        },
        (Method::DELETE, "/v1/allowlist") => match body::<TargetBody>(req).await {
            Ok(b) => blocking(state, move |s| remove_allow(s, b, &actor)).await,
            Err(r) => r,
        },
        (Method::GET, "/v1/stats") => blocking(state, stats).await,
        (Method::POST, "/v1/reload") => reload(&state, &actor).await,
        (Method::GET, "/v1/log-level") => json_resp(
            StatusCode::OK,
            &json!({"filter": crate::telemetry::log_filter()}),
        ),
        (Method::PUT, "/v1/log-level") => match body::<LogLevelBody>(req).await {
            Ok(b) => match crate::telemetry::set_log_filter(&b.filter) {
                Ok(now) => {
                    tracing::info!(filter = %now, actor, "log filter changed");
                    json_resp(StatusCode::OK, &json!({"filter": now}))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            Err(r) => r,
        },
        (
            _,
            "/live" | "/ready" | "/metrics" | "/v1/blocks" | "/v1/allowlist" | "/v1/stats"
            | "/v1/reload" | "/v1/log-level",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} {path}")),
        _ => error(StatusCode::NOT_FOUND, format!("no endpoint {path}")),
    };
    Ok(resp)
}

/// The actor for the audit journal, or the refusal.
fn authenticate(
    tokens: &Tokens,
    caller: &Caller,
    req: &Request<Incoming>,
) -> Result<String, Box<Resp>> {
    match caller {
        Caller::Unix { uid } => {
            let named = req
                .headers()
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|a| {
                    a.len() <= 128
                        && a.starts_with("cli:")
                        && a.chars().all(|c| c.is_ascii_graphic())
                });
            Ok(match (named, uid) {
                (Some(a), _) => a.to_owned(),
                (None, Some(uid)) => format!("admin:uid:{uid}"),
                (None, None) => "admin:unix".into(),
            })
        }
        Caller::Tcp {
            cert_subject: Some(subject),
        } => Ok(format!("admin:cert:{subject}")),
        Caller::Tcp { cert_subject: None } => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                });
            match presented.and_then(|t| tokens.verify(t.trim())) {
                Some(id) => Ok(format!("admin:{id}")),
                None => {
                    tracing::warn!(
                        target: "security",
                        token_sent = presented.is_some(),
                        path = req.uri().path(),
                        "admin API call refused: no valid bearer token"
                    );
                    let mut resp = error(
                        StatusCode::UNAUTHORIZED,
                        "a valid bearer token is required".into(),
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"gateway-admin\""),
                    );
                    Err(Box::new(resp))
                }
            }
        }
    }
}

fn metrics(state: &AdminState) -> Resp {
    match state.metrics.encode() {
        Ok(text) => {
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics".into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    target: String,
    /// `10m`, `24h`; absent = permanent.
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    target: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelBody {
    filter: String,
}

fn parse_target(s: &str) -> Result<IpNet, Box<Resp>> {
    crate::config::parse_net(s).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))
}

fn add_block(state: &AdminState, b: BlockBody, actor: &str) -> Resp {
    let net = match parse_target(&b.target) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let ttl = match b.ttl.as_deref().map(crate::config::parse_duration) {
        None => None,
        Some(Ok(t)) if !t.is_zero() => Some(t),
        Some(Ok(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ttl must be longer than zero".into(),
            );
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let enforcement = match &state.defense {
        Some(defense) => {
            let block = Block {
                net,
                ttl,
                reason: reason::OPERATOR,
                origin: origin::MANUAL,
                note: b.reason,
                actor: actor.to_owned(),
            };
            if let Err(e) = defense.block(&block) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
            "xdp"
        }
        None => {
            // Journaled first, like a kernel block; replayed into the proxy at start.
            let now = crate::xdp::unix_now();
            let record = Record {
                ts: now,
                action: Action::Block,
                target: net.trunc().to_string(),
                origin: L7_ORIGIN.into(),
                reason: reason::name(reason::OPERATOR).into(),
                note: b.reason,
                expires: ttl.map(|t| now + t.as_secs()),
                actor: actor.to_owned(),
            };
            if let Err(e) = journal(state, &record) {
                return *e;
            }
            state
                .l7
                .insert(net, Instant::now() + ttl.unwrap_or(L7_PERMANENT));
            "l7"
        }
    };
    tracing::warn!(target: "security", source = %net, actor, ttl = ?ttl, enforcement, "blocked by an operator");
    json_resp(
        StatusCode::CREATED,
        &json!({"blocked": net.to_string(), "ttl_seconds": ttl.map(|t| t.as_secs()), "enforcement": enforcement, "actor": actor}),
    )
}

fn remove_block(state: &AdminState, b: TargetBody, actor: &str) -> Resp {
    let net = match parse_target(&b.target) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let in_l7 = state.l7.list().iter().any(|(n, _)| *n == net);
    if in_l7 {
        let record = Record {
            ts: crate::xdp::unix_now(),
            action: Action::Unblock,
            target: net.trunc().to_string(),
            origin: L7_ORIGIN.into(),
            reason: reason::name(reason::OPERATOR).into(),
            note: b.reason.clone(),
            expires: None,
            actor: actor.to_owned(),
        };
        if let Err(e) = journal(state, &record) {
            return *e;
        }
        state.l7.remove(net);
    }
    let in_kernel = match &state.defense {
        Some(defense) => match defense.unblock(net, actor, b.reason) {
            Ok(found) => found,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => false,
    };
    if !in_kernel && !in_l7 {
        return error(
            StatusCode::NOT_FOUND,
            format!("{net} is not blocked (see `gateway block list`)"),
        );
    }
    tracing::warn!(target: "security", source = %net, actor, "unblocked by an operator");
    json_resp(StatusCode::OK, &json!({"unblocked": net.to_string()}))
}

/// Kernel entries (with the journal's note and actor) and the proxy's own blocks, in the row
/// format of `gateway block list --json`.
fn list_blocks(state: &AdminState) -> Resp {
    match block_rows(state.defense.as_deref(), &state.l7) {
        Ok(rows) => json_resp(StatusCode::OK, &Value::Array(rows)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The rows of `gateway block list --json`, shared by the API and the CLI's direct mode.
pub fn block_rows(
    defense: Option<&Defense>,
    l7: &crate::defense::L7Blocks,
) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    if let Some(defense) = defense {
        let clock = BootClock::now();
        for b in defense.blocks().map_err(|e| e.to_string())? {
            let mut row = crate::xdp::deny_row(&clock, b.net, &b.value);
            row["note"] = json!(b.note);
            row["actor"] = json!(b.actor);
            rows.push(row);
        }
    }
    let now = crate::xdp::unix_now();
    for (net, left) in l7.list() {
        let permanent = left > L7_PERMANENT / 2;
        rows.push(json!({
            "address": net.to_string(),
            "origin": L7_ORIGIN,
            "reason": "l7",
            "created": null,
            "expires": (!permanent).then(|| now + left.as_secs()),
            "ttl_seconds": (!permanent).then_some(left.as_secs()),
            "active": true,
            "note": "enforced in the proxy",
            "actor": null,
        }));
    }
    Ok(rows)
}

fn add_allow(state: &AdminState, b: TargetBody, actor: &str) -> Resp {
    let net = match parse_target(&b.target) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Some(defense) = &state.defense else {
        return no_kernel();
    };
    match defense.allow(net, actor, b.reason) {
        Ok(()) => {
            tracing::warn!(target: "security", source = %net, actor, "allowlisted by an operator");
            json_resp(
                StatusCode::CREATED,
                &json!({"allowlisted": net.to_string()}),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn remove_allow(state: &AdminState, b: TargetBody, actor: &str) -> Resp {
    let net = match parse_target(&b.target) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let Some(defense) = &state.defense else {
        return no_kernel();
    };
    match defense.disallow(net, actor, b.reason) {
        Ok(true) => json_resp(StatusCode::OK, &json!({"removed": net.to_string()})),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("{net} is not allowlisted")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn list_allow(state: &AdminState) -> Resp {
    let Some(defense) = &state.defense else {
        return json_resp(StatusCode::OK, &json!([]));
    };
    match defense.maps() {
        Ok(maps) => {
            let mut entries = maps.allowed();
            entries.sort_by_key(|(n, _)| (n.addr().is_ipv6(), *n));
            let rows: Vec<Value> = entries
                .iter()
                .map(|(n, o)| json!({"address": n.to_string(), "origin": origin::name(*o)}))
                .collect();
            json_resp(StatusCode::OK, &Value::Array(rows))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The XDP counters in the row format of `gateway stats --json` (absent without XDP).
fn stats(state: &AdminState) -> Resp {
    let xdp = match &state.defense {
        Some(defense) => match defense.maps().and_then(|m| Ok(m.stats()?)) {
            Ok(counters) => Some(stat_rows(&counters)),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => None,
    };
    json_resp(
        StatusCode::OK,
        &json!({"xdp": xdp, "l7_blocks": state.l7.list().len()}),
    )
}

/// `[{verdict, reason, packets, bytes}]` in slot order.
pub fn stat_rows(counters: &[gateway_common::Counter]) -> Vec<Value> {
    counters
        .iter()
        .zip(gateway_common::stat::NAMES)
        .map(|(c, (verdict, reason))| {
            json!({"verdict": verdict, "reason": reason, "packets": c.packets, "bytes": c.bytes})
        })
        .collect()
}

async fn reload(state: &AdminState, actor: &str) -> Resp {
    let Some(tx) = &state.reload else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping".into(),
        );
    }
    tracing::info!(actor, "reload asked over the admin API");
    match answer.await {
        Ok(Ok(())) => json_resp(StatusCode::OK, &json!({"reloaded": true})),
        // The running configuration stays; the answer says where the file is wrong.
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping".into(),
        ),
    }
}

/// Appends to the journal of proxy-enforced blocks, when there is one.
fn journal(state: &AdminState, record: &Record) -> Result<(), Box<Resp>> {
    match &state.journal {
        Some(j) => j
            .append(record)
            .map_err(|e| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))),
        None => Ok(()),
    }
}

fn no_kernel() -> Resp {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the allowlist lives in the kernel maps and XDP is not running".into(),
    )
}

/// Runs `f` on the blocking pool (map syscalls, journal fsync).
async fn blocking(
    state: Arc<AdminState>,
    f: impl FnOnce(&AdminState) -> Resp + Send + 'static,
) -> Resp {
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "handler failed".into()))
}

async fn body<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Resp> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "unreadable or oversized body".into(),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: String) -> Resp {
    json_resp(status, &json!({"error": message}))
}
