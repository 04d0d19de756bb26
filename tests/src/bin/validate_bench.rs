//! `validate_bench`: what request validation costs per request for a ~2 KB JSON body against
//! its schema, next to what parsing the same body alone costs (the floor any validator pays).
//! Driven by `cargo xtask bench validate`; in process, no network: the validation stage is
//! called as the proxy calls it.
//!
//! `validate_bench [--iterations 20000] [--runs 5] [--out DIR]` prints a markdown table and
//! writes `validate.json` under `--out`.

use std::{net::IpAddr, time::Instant};

use bytes::Bytes;
use gateway::{
    config::RouteConfig,
    proxy::{router::Router, stage::RequestContext},
};
use hyper::http;

fn main() -> anyhow::Result<()> {
    let mut iterations = 20_000usize;
    let mut runs = 5usize;
    let mut out: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--iterations" => iterations = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "--out" => out = Some(value()?.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }

    let route: RouteConfig = serde_json::from_value(serde_json::json!({
        "name": "orders",
        "match": { "path": "/orders/{id}", "methods": ["PUT"] },
        "upstream": "orders",
        "validate": {
            "content_types": ["application/json"],
            "path": { "type": "object", "properties": { "id": { "type": "integer", "minimum": 1 } } },
            "body": schema(),
        }
    }))?;
    let router = Router::build(&[route]).map_err(|(_, e)| anyhow::anyhow!(e))?;
    let route = &router.routes()[0];
    let body = Bytes::from(body_2k());
    let (parts, ()) = http::Request::builder()
        .method("PUT")
        .uri("/orders/42")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(())?
        .into_parts();
    let params = vec![("id".to_owned(), "42".to_owned())];
    let client_ip: IpAddr = [127, 0, 0, 1].into();

    let validate = || {
        let mut ctx = RequestContext {
            request_id: "bench",
            client_ip,
            behind_proxy: false,
            tls: None,
            route,
            path: "/orders/42",
            params: &params,
            body: Some(&body),
            principal: None,
            findings: Vec::new(),
            response_headers: http::HeaderMap::new(),
        };
        route.checks.check(&mut ctx, &parts).is_ok()
    };
    // The body must pass, or the benchmark measures the refusal path.
    anyhow::ensure!(validate(), "the benchmark body does not match its schema");
    let parse = || serde_json::from_slice::<serde_json::Value>(&body).is_ok();

    let measure = |f: &dyn Fn() -> bool| {
        let mut per_run = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let mut ok = 0usize;
            for _ in 0..iterations {
                ok += usize::from(std::hint::black_box(f()));
            }
            let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
            assert_eq!(ok, iterations);
            per_run.push(ns);
        }
        per_run.sort_by(f64::total_cmp);
        per_run[per_run.len() / 2]
    };
    let parse_ns = measure(&parse);
    let validate_ns = measure(&validate);
    println!(
        "| what ({} byte body, median of {runs} runs x {iterations}) | ns/request |\n| --- | ---: |\n| serde_json parse only | {parse_ns:.0} |\n| validation stage (media type, path param, depth scan, parse, schema) | {validate_ns:.0} |",
        body.len()
    );
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("validate.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "body_bytes": body.len(),
                "iterations": iterations,
                "runs": runs,
                "parse_ns_median": parse_ns,
                "validate_ns_median": validate_ns,
            }))?,
        )?;
    }
    Ok(())
}

fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["customer", "items", "shipping"],
        "additionalProperties": false,
        "properties": {
            "customer": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": { "type": "string", "pattern": "^c-[0-9]+$" },
                    "email": { "type": "string", "format": "email" },
                    "name": { "type": "string", "maxLength": 100 }
                }
            },
            "items": {
                "type": "array",
                "maxItems": 50,
                "items": { "$ref": "#/$defs/item" }
            },
            "shipping": {
                "type": "object",
                "required": ["country"],
                "properties": {
                    "country": { "type": "string", "enum": ["DE", "FR", "NL", "US"] },
                    "street": { "type": "string" },
                    "express": { "type": "boolean" }
                }
            },
            "note": { "type": ["string", "null"], "maxLength": 500 }
        },
        "$defs": {
            "item": {
                "type": "object",
                "required": ["sku", "quantity", "price"],
                "properties": {
                    "sku": { "type": "string", "pattern": "^[A-Z0-9-]{4,32}$" },
                    "quantity": { "type": "integer", "minimum": 1, "maximum": 100 },
                    "price": { "type": "number", "exclusiveMinimum": 0 },
                    "tags": { "type": "array", "items": { "type": "string" } }
                }
            }
        }
    })
}

/// A valid order of about 2 KB.
fn body_2k() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..22)
        .map(|i| {
            serde_json::json!({
                "sku": format!("SKU-{i:04}-XL"),
                "quantity": i % 9 + 1,
                "price": 9.99 + f64::from(i),
                "tags": ["gift", "fragile"],
            })
        })
        .collect();
    let doc = serde_json::json!({
        "customer": { "id": "c-12345", "email": "jane@example.com", "name": "Jane Doe" },
        "items": items,
        "shipping": { "country": "DE", "street": "Hauptstrasse 1", "express": true },
        "note": "leave at the door",
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}
