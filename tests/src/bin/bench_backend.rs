//! `bench_backend`: the upstream behind `cargo xtask bench l7`. An HTTP/1.1 keep-alive server
//! (hyper, tokio) that answers every request with `200` and the same 100-byte body, so that what
//! the benchmark measures is the proxy in front of it.
//!
//! `bench_backend [--listen 127.0.0.1:0] [--threads 1] [--max-seconds 3600] [--read-body]` prints
//! `listening ADDR` on stdout once it accepts. It exits when its stdin reaches end of file (the
//! benchmark holds the other end, so the backend never outlives it) or after `--max-seconds`.
//! `--read-body` reads each request body whole before answering, as an API backend does
//! (`bench waf` posts bodies up to 20 KB; unread bodies would cost connections).

use std::{convert::Infallible, io::Read as _, io::Write as _, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// Exactly 100 bytes.
const BODY: &[u8; 100] =
    b"{\"service\":\"bench-backend\",\"status\":\"ok\",\"note\":\"fixed body of exactly one hundred bytes.........\"}\n";

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut threads = 1usize;
    let mut max_seconds = 3600u64;
    let mut read_body = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--threads" => threads = value()?.parse()?,
            "--max-seconds" => max_seconds = value()?.parse()?,
            "--read-body" => read_body = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }

    // The benchmark keeps our stdin open; end of file means it is gone.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max_seconds));
        std::process::exit(0);
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(serve(&listen, read_body))
}

async fn serve(listen: &str, read_body: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let body = Bytes::from_static(BODY);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("bench_backend: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    if read_body {
                        // A body that fails to arrive still gets the fixed answer.
                        let _ = req.into_body().collect().await;
                    }
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
