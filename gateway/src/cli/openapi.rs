//! `gateway openapi import|diff`: routes from an OpenAPI spec, and what logged traffic that
//! spec would reject before it is turned on.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::PathBuf,
};

use clap::{Args, Subcommand};
use http::Method;

use super::{UsageError, table};
use crate::{
    config::RouteConfig,
    proxy::{
        normalize,
        router::{Found, Router},
    },
    validate::openapi,
};

#[derive(Debug, Subcommand)]
pub enum OpenapiCommand {
    /// Print the routes (YAML) a spec generates: one per operation, with parameter and body
    /// schemas and security requirements; paste under `routes:` or name the spec in `openapi:`.
    Import(ImportArgs),
    /// Replay a JSON access log against a spec (strict) and show what it would reject.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OpenAPI 3.0 or 3.1 document (YAML or JSON).
    spec: PathBuf,
    /// Upstream pool the routes send to.
    #[arg(long, default_value = "api")]
    upstream: String,
    /// Also generate routes that reject undeclared paths and methods (404/405).
    #[arg(long)]
    strict: bool,
    /// API path prefix; default: the path of the spec's first server URL.
    #[arg(long)]
    base_path: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// OpenAPI 3.0 or 3.1 document (YAML or JSON).
    spec: PathBuf,
    /// The gateway's JSON access log (one object per line).
    log: PathBuf,
    /// API path prefix; default: the path of the spec's first server URL.
    #[arg(long)]
    base_path: Option<String>,
    /// One JSON object for scripts.
    #[arg(long)]
    json: bool,
}

pub(super) fn execute(cmd: OpenapiCommand) -> anyhow::Result<()> {
    match cmd {
        OpenapiCommand::Import(a) => {
            let spec = openapi::load(&a.spec).map_err(UsageError)?;
            let imported = openapi::import(&spec, &a.upstream, a.strict, a.base_path.as_deref())
                .map_err(UsageError)?;
            print!(
                "{}",
                openapi::to_yaml(&imported, &a.spec.display().to_string())
                    .map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        OpenapiCommand::Diff(a) => diff(&a),
    }
}

/// One kind of rejection, counted.
#[derive(Debug, serde::Serialize)]
struct Finding {
    status: u16,
    code: &'static str,
    method: String,
    /// The operation for requests that matched one, else the path.
    target: String,
    detail: String,
    count: u64,
}

fn diff(a: &DiffArgs) -> anyhow::Result<()> {
    let spec = openapi::load(&a.spec).map_err(UsageError)?;
    let imported =
        openapi::import(&spec, "spec", true, a.base_path.as_deref()).map_err(UsageError)?;
    let configs = imported
        .routes
        .into_iter()
        .map(serde_json::from_value::<RouteConfig>)
        .collect::<Result<Vec<_>, _>>()?;
    let router =
        Router::build(&configs).map_err(|(i, e)| anyhow::anyhow!("generated route {i}: {e}"))?;
    let file = std::fs::File::open(&a.log)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", a.log.display())))?;

    let (mut read, mut skipped, mut outside) = (0u64, 0u64, 0u64);
    let mut found: BTreeMap<(u16, &'static str, String, String, String), u64> = BTreeMap::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            skipped += 1;
            continue;
        };
        let (Some(method), Some(path)) = (
            record
                .pointer("/http/request/method")
                .and_then(|v| v.as_str()),
            record.pointer("/url/path").and_then(|v| v.as_str()),
        ) else {
            skipped += 1;
            continue;
        };
        read += 1;
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            skipped += 1;
            continue;
        };
        let query = record.pointer("/url/query").and_then(|v| v.as_str());
        let path = match normalize::normalize(path) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                let key = (
                    400,
                    e.reason(),
                    method.to_string(),
                    path.to_owned(),
                    e.detail().to_string(),
                );
                *found.entry(key).or_default() += 1;
                continue;
            }
        };
        let problem = match router.find("", &path, &method) {
            Found::NotFound => {
                outside += 1;
                continue;
            }
            Found::MethodNotAllowed(_) => {
                let key = (
                    405,
                    "openapi_undeclared",
                    method.to_string(),
                    path.clone(),
                    String::new(),
                );
                *found.entry(key).or_default() += 1;
                continue;
            }
            Found::Route { route, params } => route
                .checks
                .validate
                .as_ref()
                .and_then(|v| v.judge_logged(&params, query))
                .map(|p| (p, route.name.clone())),
        };
        if let Some((p, operation)) = problem {
            let target = if p.code == "openapi_undeclared" {
                path
            } else {
                operation
            };
            let key = (
                p.status.as_u16(),
                p.code,
                method.to_string(),
                target,
                p.detail.unwrap_or_default(),
            );
            *found.entry(key).or_default() += 1;
        }
    }
    let mut findings: Vec<Finding> = found
        .into_iter()
        .map(|((status, code, method, target, detail), count)| Finding {
            status,
            code,
            method,
            target,
            detail,
            count,
        })
        .collect();
    findings.sort_by(|x, y| y.count.cmp(&x.count).then(x.target.cmp(&y.target)));
    let rejected: u64 = findings.iter().map(|f| f.count).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "requests": read,
                "rejected": rejected,
                "outside_base_path": outside,
                "unreadable_lines": skipped,
                "findings": findings,
            })
        );
        return Ok(());
    }
    println!(
        "{read} requests read: {rejected} would be rejected by {}, {outside} outside its base path `{}`{}",
        a.spec.display(),
        if imported.base_path.is_empty() {
            "/"
        } else {
            &imported.base_path
        },
        if skipped > 0 {
            format!(", {skipped} lines unreadable")
        } else {
            String::new()
        },
    );
    if !findings.is_empty() {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                vec![
                    f.count.to_string(),
                    f.status.to_string(),
                    f.code.to_owned(),
                    f.method.clone(),
                    f.target.clone(),
                    f.detail.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "COUNT",
                    "STATUS",
                    "REASON",
                    "METHOD",
                    "PATH/OPERATION",
                    "DETAIL"
                ],
                &rows
            )
        );
    }
    Ok(())
}
