//! In-process cost of the WAF engine with OWASP CRS v4 at paranoia 1 on benign JSON API requests
//! of 100 B, 2 KB and 20 KB: microseconds per `Engine::inspect`, median of several runs.
//!
//! `cargo run --release -p gateway --example waf_engine_bench [iterations]`
//! (CRS from `GATEWAY_CRS_DIR` or `../shared/crs`; a benchmark, not a test: run it on a quiet box).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use gateway::waf::{Engine, HttpInput, Mode, Tuning, WafSection, load_rules};

/// The gateway's allocator (see `main.rs`), so that the engine is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A realistic API document: nested objects, arrays, strings, numbers, booleans.
fn order(i: usize) -> String {
    format!(
        r#"{{"id":{i},"sku":"SKU-{i:05}","name":"Widget number {i} with a longer product name","qty":{q},"price":{p}.99,"tags":["blue","large","sale"],"shipping":{{"method":"express","address":{{"street":"{i} Main Street","city":"Springfield","zip":"0{i:04}","country":"US"}}}},"gift":false,"note":"Please leave the parcel at the back door, thanks!"}}"#,
        q = i % 7 + 1,
        p = i * 3 % 100,
    )
}

/// A JSON body of about `size` bytes.
fn body(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 100;
    let mut i = 0;
    while len < size || items.is_empty() {
        let o = order(i);
        len += o.len() + 1;
        items.push(o);
        i += 1;
    }
    if size <= 150 {
        return br#"{"customer":{"id":1234,"email":"jane.doe@example.com"},"items":[{"sku":"A-1","qty":2}],"total":19.5}"#.to_vec();
    }
    format!(
        r#"{{"customer":{{"id":1234,"email":"jane.doe@example.com","vip":true}},"currency":"EUR","items":[{}],"total":1234.5}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iters: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let crs = std::env::var_os("GATEWAY_CRS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs"));
    let yaml = format!(
        "rules: [\"{}/rules/*.conf\"]\nparanoia: 1\nmode: block\n",
        crs.display()
    );
    let section: WafSection = serde_yaml::from_str(&yaml)?;
    let t = Instant::now();
    let rules = load_rules(&section.rules)?;
    let engine = Engine::new(rules, section.setup_vars(), Mode::Block);
    println!(
        "CRS PL1 loaded: {} rules in {:?}",
        engine.rule_count(),
        t.elapsed()
    );
    let excl = Tuning::default();
    let only: Option<usize> = std::env::var("BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok());
    for size in [100usize, 2_000, 20_000] {
        if only.is_some_and(|o| o != size) {
            continue;
        }
        let b = body(size);
        let cl = b.len().to_string();
        let input = HttpInput {
            method: "POST",
            target: "/api/v1/orders?expand=items&page=2",
            version: "HTTP/1.1",
            headers: vec![
                (b"host", b"api.example.com"),
                (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
                (b"accept", b"application/json"),
                (b"content-type", b"application/json"),
                (b"content-length", cl.as_bytes()),
            ],
            body: Some(&b),
            remote_addr: "192.0.2.10".parse()?,
            request_id: "bench",
        };
        let out = engine.inspect(&input, &excl);
        if !out.matches.is_empty() || out.blocked_by.is_some() {
            let ids: Vec<u32> = out.matches.iter().map(|m| m.id).collect();
            println!("warning: benign body of {} B matched {ids:?}", b.len());
        }
        let n = (iters * 100 / size.max(100)).clamp(5, iters.max(5));
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(engine.inspect(&input, &excl));
            }
            runs.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "body {:>6} B: {:>10.1} us/request (median of 5 runs x {n}; min {:.1}, max {:.1})",
            b.len(),
            runs[2],
            runs[0],
            runs[4]
        );
    }
    Ok(())
}
