//! `auth_bench`: the helper of `cargo xtask bench auth` (which see), three subcommands:
//!
//! - `auth_bench prepare --dir DIR --gateway-port P --backend-port P --jwks-port P
//!   [--nonce-cache N]` writes the gateway configuration, keys, tokens and secrets into DIR
//!   ([`tests::authbench::prepare`]) and prints one `scheme NAME PATH` line per route.
//! - `auth_bench serve-jwks --file DIR/jwks.json --listen 127.0.0.1:P [--max-seconds 3600]`
//!   serves the JWKS document to the gateway (1 thread); prints `listening ADDR`.
//! - `auth_bench verify-cost [--iterations 5000] [--runs 5]` calls the gateway's authentication
//!   stage directly, in process, once per request of every scheme (fresh keys and its own JWKS
//!   server, warm after the first request: for the `jwt-*-cached` rows that first request also
//!   fills the verified-token cache, so they measure hits), and prints `verify_ns SCHEME NS` lines (median of
//!   the runs of the mean per request) and `client_hmac_sign_ns NS` (what `bench_load` spends
//!   signing one request). Then, as a reference, `ring_verify_ns SCHEME NS`: the same JWT
//!   signatures checked by ring directly, signature only: the floor under the stage's cost (the
//!   stage verifies with ring too, `gateway::auth::jwt_crypto`, plus parsing and claim checks).

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tests::authbench::{Client, Ports, Stage, prepare, serve_jwks};

fn main() -> anyhow::Result<()> {
    // What the daemon verifies with: installed before any token is made here.
    gateway::auth::jwt_crypto::install();
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let mut opts = std::collections::HashMap::new();
    while let Some(k) = argv.next() {
        let v = argv.next().with_context(|| format!("{k} needs a value"))?;
        let k = k
            .strip_prefix("--")
            .with_context(|| format!("unexpected argument {k}"))?;
        opts.insert(k.to_owned(), v);
    }
    let get = |k: &str| opts.get(k).with_context(|| format!("--{k} is required"));
    let num = |k: &str, default: u64| -> anyhow::Result<u64> {
        opts.get(k).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("--{k} {v}"))
        })
    };
    let known = |allowed: &[&str]| -> anyhow::Result<()> {
        match opts.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => anyhow::bail!("{command}: unknown option --{k}"),
            None => Ok(()),
        }
    };
    match command.as_str() {
        "prepare" => {
            known(&[
                "dir",
                "gateway-port",
                "backend-port",
                "jwks-port",
                "nonce-cache",
            ])?;
            let port = |k: &str| -> anyhow::Result<u16> { Ok(get(k)?.parse()?) };
            let clients = prepare(
                &PathBuf::from(get("dir")?),
                Ports {
                    gateway: port("gateway-port")?,
                    backend: port("backend-port")?,
                    jwks: port("jwks-port")?,
                },
                usize::try_from(num("nonce-cache", 1_000_000)?)?,
            )?;
            for c in clients {
                println!("scheme {} {}", c.scheme, c.path);
            }
            Ok(())
        }
        "serve-jwks" => {
            known(&["file", "listen", "max-seconds"])?;
            let doc = Bytes::from(std::fs::read(get("file")?)?);
            let listen = get("listen")?.clone();
            let max = std::time::Duration::from_secs(num("max-seconds", 3600)?);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                // The log line the benchmark waits for.
                eprintln!("listening {}", listener.local_addr()?);
                let _ = tokio::time::timeout(max, serve_jwks(listener, doc)).await;
                anyhow::Ok(())
            })
        }
        "verify-cost" => {
            known(&["iterations", "runs"])?;
            let iterations = usize::try_from(num("iterations", 5000)?)?.max(1);
            let runs = usize::try_from(num("runs", 5)?)?.max(1);
            verify_cost(iterations, runs)
        }
        other => anyhow::bail!(
            "usage: auth_bench prepare|serve-jwks|verify-cost [--options] (got `{other}`)"
        ),
    }
}

fn verify_cost(iterations: usize, runs: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("auth-bench-verify-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let jwks = listener.local_addr()?.port();
        // Every HMAC request of every run stays in the replay cache.
        prepare(
            &dir,
            Ports {
                gateway: 9,
                backend: 9,
                jwks,
            },
            iterations * runs * 2 + 1000,
        )?;
        let doc = Bytes::from(std::fs::read(dir.join("jwks.json"))?);
        let server = tokio::spawn(serve_jwks(listener, doc));
        let stage = Stage::build(&dir)?;
        let host = "127.0.0.1:8080";
        for client in Client::load_all(&dir)? {
            let route = stage.route(&client.scheme)?;
            // Warm: the JWKS fetch happens here, not in the measurement.
            let mut parts = Stage::request(&client, host)?;
            stage
                .authenticate(route, &mut parts)
                .await
                .map_err(|p| anyhow::anyhow!("{}: refused: {p:?}", client.scheme))?;
            let mut per_run = Vec::with_capacity(runs);
            for _ in 0..runs {
                // Requests are built (and HMAC ones signed) before the clock starts.
                let mut requests = (0..iterations)
                    .map(|_| Stage::request(&client, host))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let start = Instant::now();
                for parts in &mut requests {
                    if stage.authenticate(route, parts).await.is_err() {
                        anyhow::bail!("{}: a request was refused", client.scheme);
                    }
                }
                per_run.push(start.elapsed().as_nanos() as f64 / iterations as f64);
            }
            println!("verify_ns {} {:.0}", client.scheme, median(per_run));
        }
        server.abort();
        // What the load generator adds to each HMAC request before sending it.
        let hmac = Client::load(&dir, "hmac-sha256")?;
        let mut per_run = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut headers = hyper::HeaderMap::new();
            let start = Instant::now();
            for _ in 0..iterations {
                hmac.apply("GET", &hmac.path, host, &mut headers);
                std::hint::black_box(&headers);
            }
            per_run.push(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
        println!("client_hmac_sign_ns {:.0}", median(per_run));
        ring_reference(&dir, iterations, runs)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The JWT signatures of `dir` verified by ring, signature only (ns per verification).
fn ring_reference(dir: &std::path::Path, iterations: usize, runs: usize) -> anyhow::Result<()> {
    use base64::Engine as _;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        VerificationAlgorithm,
    };
    let der = |file: &str| -> anyhow::Result<Vec<u8>> {
        let pem = std::fs::read_to_string(dir.join(file))?;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    };
    // ring takes the key inside the SubjectPublicKeyInfo: for RSA 2048 the PKCS#1 structure
    // after a 24-byte prefix, for P-256 the 65-byte point and for Ed25519 the 32 bytes at the end.
    let rsa = der("rs256.pub.pem")?;
    anyhow::ensure!(rsa.len() == 294 && rsa[24] == 0x30, "not an RSA-2048 SPKI");
    let es = der("es256.pub.pem")?;
    let ed = der("eddsa.pub.pem")?;
    let keys: [(&str, &'static dyn VerificationAlgorithm, &[u8]); 3] = [
        ("jwt-rs256", &RSA_PKCS1_2048_8192_SHA256, &rsa[24..]),
        ("jwt-es256", &ECDSA_P256_SHA256_FIXED, &es[es.len() - 65..]),
        ("jwt-eddsa", &ED25519, &ed[ed.len() - 32..]),
    ];
    for (scheme, alg, key) in keys {
        let client = Client::load(dir, scheme)?;
        let mut parts = Stage::request(&client, "127.0.0.1:8080")?;
        let token = parts
            .headers
            .remove(hyper::header::AUTHORIZATION)
            .context("no token")?
            .to_str()?
            .trim_start_matches("Bearer ")
            .to_owned();
        let (message, sig) = token.rsplit_once('.').context("not a JWT")?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig)?;
        let key = UnparsedPublicKey::new(alg, key);
        key.verify(message.as_bytes(), &sig)
            .map_err(|_| anyhow::anyhow!("{scheme}: ring refuses the signature"))?;
        let mut per_run = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            for _ in 0..iterations {
                std::hint::black_box(key.verify(message.as_bytes(), &sig).is_ok());
            }
            per_run.push(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
        println!("ring_verify_ns {scheme} {:.0}", median(per_run));
    }
    Ok(())
}
