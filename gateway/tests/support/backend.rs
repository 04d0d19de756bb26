//! A real upstream for tests: a hyper HTTP/1.1 + HTTP/2 server on 127.0.0.1:0 that answers with
//! what it received, so tests can assert what crossed the proxy.
//!
//! Paths: `/slow/<ms>` sleeps, `/status/<code>` answers that status, anything else echoes.
//! Every answer is JSON: `{"backend", "method", "path", "headers": {name: value}, "repeated":
//! [names received more than once]}` and carries `Server` and `X-Powered-By` headers the proxy
//! is expected to remove. A request with `X-Test-Answer-Ids: 1` is answered with an
//! `X-Request-Id` and security headers of the backend's own as well.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        answer(name, req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut status = StatusCode::OK;
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    }
    let mut repeated: Vec<String> = req
        .headers()
        .keys()
        .filter(|k| req.headers().get_all(*k).iter().count() > 1)
        .map(|k| k.to_string())
        .collect();
    repeated.dedup();
    let answer_ids = req.headers().contains_key("x-test-answer-ids");
    let method = req.method().to_string();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let body = serde_json::json!({
        "backend": name, "method": method, "path": target, "headers": headers, "body_len": body_len,
        "repeated": repeated,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("server", "Apache/2.4.1 (Unix)".parse().expect("v"));
    resp.headers_mut()
        .insert("x-powered-by", "PHP/5.6".parse().expect("v"));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("v"));
    if answer_ids {
        for (k, v) in [
            ("x-request-id", "upstream-id"),
            ("x-frame-options", "SAMEORIGIN"),
            ("x-content-type-options", "sniff-away"),
        ] {
            resp.headers_mut().insert(k, v.parse().expect("v"));
        }
    }
    Ok(resp)
}
