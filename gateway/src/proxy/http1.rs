//! HTTP/1.1 client connections served by the gateway's own loop; what the loop does not handle
//! itself goes to hyper together with every byte read so far.
//!
//! Why not hyper for everything: with the upstream side already ours (`upstream/h1.rs`), hyper's
//! server machinery (dispatcher, body channel, boxed header timer, response encoder) was the
//! largest user-space cost left per proxied request (callgrind: ~9k of ~33k instructions). This
//! loop covers the shape of nearly all API traffic: HTTP/1.1, a complete head of at most 100
//! headers, no body or a body of known length up to 64 KiB read whole with the head. Everything
//! else (HTTP/1.0, chunked or larger bodies, `Expect`, `Upgrade`, heads over 64 KiB, anything
//! malformed, the HTTP/2 preface) is a [`Served::Handover`]: hyper gets the connection with the
//! unserved bytes in front and serves the rest of it, so its limits, error answers and h2
//! detection stay the behaviour at the edges. Nothing is written before the hand-over, so hyper
//! sees the connection exactly as the client sent it.

use std::{
    cell::{Cell, RefCell},
    io::{self, Write as _},
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    sync::watch,
};

use super::{
    Body,
    deadline::Deadline,
    headers::Added,
    service::{self, ClientBody, Connection, Shared},
};
use crate::config::HttpLimits;

/// Most request headers parsed here (hyper's default ceiling); more go to hyper.
const MAX_HEADERS: usize = 100;
/// Largest request head parsed here; larger ones go to hyper (which answers 431 past its own).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body read whole with the head; larger ones stream through hyper.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Read-buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Response body bytes copied behind the head into one write (one syscall for a small answer).
const COALESCE_BYTES: usize = 16 * 1024;

/// How a connection left the loop.
pub(super) enum Served<I> {
    /// Closed: by the client, after `Connection: close`, a header timeout, or shutdown.
    Done,
    /// For hyper: the connection with the bytes read and not served in front.
    Handover(Rewind<I>),
}

/// Serves HTTP/1.1 requests on `io` until the connection ends or needs hyper.
pub(super) async fn serve<I>(
    mut io: I,
    shared: &Arc<Shared>,
    conn: &Arc<Connection>,
    limits: &HttpLimits,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<Served<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(1024);
    // Per connection, not per request: a timer and a shutdown watch registered once (each
    // registration per request cost more than parsing the head).
    let mut timer = Deadline::new(tokio::time::Instant::now() + limits.header_timeout);
    let mut watcher = stop.clone();
    let stopped = watcher.changed();
    tokio::pin!(stopped);
    let mut stopping = *stop.borrow();
    loop {
        // Shutdown: the request in flight was answered; no new one starts.
        stopping |= stop.has_changed().unwrap_or(true);
        if stopping {
            let _ = io.shutdown().await;
            return Ok(Served::Done);
        }
        timer.set(tokio::time::Instant::now() + limits.header_timeout);
        let next = read_request(&mut io, &mut buf, limits, &mut timer, stopped.as_mut()).await?;
        let (req, keep_alive) = match next {
            Next::Request(req, keep_alive) => (req, keep_alive),
            Next::Closed => return Ok(Served::Done),
            Next::Handover => return Ok(Served::Handover(Rewind::new(io, buf.freeze()))),
        };
        let head_request = req.method() == Method::HEAD;
        let (resp, added) = service::respond(Arc::clone(shared), Arc::clone(conn), req).await;
        // Asked to stop meanwhile: this answer says the connection closes.
        let keep_alive = keep_alive && !stop.has_changed().unwrap_or(true);
        write_response(&mut io, &mut out, resp, &added, head_request, keep_alive).await?;
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ok(Served::Done);
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved once: a box would cost an allocation"
)]
enum Next {
    Request(Request<ClientBody>, bool),
    Closed,
    Handover,
}

/// Reads until `buf` starts with a whole request (head and body). The head gets the header
/// timeout, counted from the end of the previous response as hyper counts it (an idle
/// keep-alive connection closes after it too); from the end of the head on, the body gets the
/// body timeout as the longest pause between two pieces. `stopped`: shutdown, which closes an
/// idle connection.
async fn read_request<I: AsyncRead + Unpin, S: Future>(
    io: &mut I,
    buf: &mut BytesMut,
    limits: &HttpLimits,
    timer: &mut Deadline,
    mut stopped: Pin<&mut S>,
) -> io::Result<Next> {
    let mut body_pending = false;
    loop {
        if !buf.is_empty() {
            match parse(buf, false, limits.max_body_bytes) {
                Parsed::Request(req, keep_alive) => return Ok(Next::Request(req, keep_alive)),
                Parsed::Handover => return Ok(Next::Handover),
                Parsed::Partial {
                    body_pending: false,
                } => {}
                Parsed::Partial { body_pending: true } => {
                    body_pending = true;
                    timer.set(tokio::time::Instant::now() + limits.body_timeout);
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let idle = buf.is_empty();
        tokio::select! {
            biased;
            read = io.read_buf(buf) => {
                if read? == 0 {
                    // Closed (or half-closed) by the client: with nothing pending, the end; a
                    // request cut off is hyper's to judge, as before this path existed (a body
                    // shorter than its length gets 400 on a half-closed connection).
                    return Ok(if buf.is_empty() { Next::Closed } else { Next::Handover });
                }
            }
            () = timer.expired() => {
                // A head that took too long closes the connection (slowloris); a stalled body
                // is the pipeline's to answer (408), and the connection closes after it.
                return Ok(match body_pending.then(|| parse(buf, true, limits.max_body_bytes)) {
                    Some(Parsed::Request(req, _)) => Next::Request(req, false),
                    _ => Next::Closed,
                });
            }
            _ = stopped.as_mut(), if idle => return Ok(Next::Closed),
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved once: a box would cost an allocation"
)]
enum Parsed {
    Request(Request<ClientBody>, bool),
    /// More bytes needed; `body_pending`: the head is complete, the body is not.
    Partial {
        body_pending: bool,
    },
    Handover,
}

thread_local! {
    /// Header offsets of the head being parsed, kept between requests (an allocation fewer
    /// each).
    static SPANS: Cell<Vec<(HeaderName, usize, usize)>> = const { Cell::new(Vec::new()) };
}

/// One request from the front of `buf` (consumed only when it is returned). `stalled`: the
/// body stopped coming; a complete head is returned with a [`ClientBody::Stalled`] body.
/// `max_body`: a declared body over the configured limit is not waited for (hyper takes the
/// request, and the pipeline refuses it from its Content-Length with 413 at once).
fn parse(buf: &mut BytesMut, stalled: bool, max_body: u64) -> Parsed {
    // Uninitialised slots: zeroing 100 of them per request costs more than parsing.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {
            return Parsed::Partial {
                body_pending: false,
            };
        }
        // Too large, too many headers, malformed, or the HTTP/2 preface: hyper's to answer.
        _ => return Parsed::Handover,
    };
    if parsed.version != Some(1) {
        return Parsed::Handover;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::Handover;
    };
    // Offsets first: the parsed slices borrow `buf`, which is split below.
    let base = buf.as_ptr() as usize;
    let target = parsed.path.map_or((0, 0), |p| {
        let start = p.as_ptr() as usize - base;
        (start, start + p.len())
    });
    let mut spans = SPANS.take();
    spans.clear();
    let mut content_length: Option<usize> = None;
    let mut keep_alive = true;
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Handover;
        };
        match name {
            header::CONTENT_LENGTH => match (content_length, decimal(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                // Repeated or not a number: hyper decides (400, or a request smuggling attempt).
                _ => return Parsed::Handover,
            },
            // Framing and protocol changes stay with hyper.
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => {
                return Parsed::Handover;
            }
            header::CONNECTION
                if h.value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")) =>
            {
                keep_alive = false;
            }
            _ => {}
        }
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY_BYTES || body_len as u64 > max_body {
        return Parsed::Handover;
    }
    let complete = buf.len() >= len + body_len;
    if !complete && !stalled {
        buf.reserve(len + body_len - buf.len());
        return Parsed::Partial { body_pending: true };
    }
    let head = buf.split_to(len).freeze();
    let body = (complete && body_len > 0).then(|| buf.split_to(body_len).freeze());
    let built = build(&head, target, &mut spans);
    SPANS.set(spans);
    match built {
        Some((uri, headers)) => {
            let body = if complete {
                ClientBody::Whole(body)
            } else {
                ClientBody::Stalled
            };
            let mut req = Request::new(body);
            *req.method_mut() = method;
            *req.uri_mut() = uri;
            *req.headers_mut() = headers;
            Parsed::Request(req, keep_alive)
        }
        None => {
            // Put the request back in front of what follows it, for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + body_len + buf.len());
            whole.extend_from_slice(&head);
            if let Some(body) = &body {
                whole.extend_from_slice(body);
            }
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Handover
        }
    }
}

/// The target and headers of a parsed head, sharing its bytes; `None` when either is invalid.
fn build(
    head: &Bytes,
    (start, end): (usize, usize),
    spans: &mut Vec<(HeaderName, usize, usize)>,
) -> Option<(Uri, HeaderMap)> {
    let uri = Uri::from_maybe_shared(head.slice(start..end)).ok()?;
    // Room for a header a stage adds (the gateway's own forwarding headers are not inserted:
    // `headers::Added`).
    let mut headers = HeaderMap::with_capacity(spans.len() + 2);
    for (name, start, end) in spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).ok()?;
        headers.append(name, value);
    }
    Some((uri, headers))
}

/// A `Content-Length` value: digits only (no sign, no spaces inside), no overflow.
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')),
    )
}

/// How a response body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes (HEAD, 1xx, 204, 304).
    None,
    /// No body bytes, but a HEAD answer of this many (one that names no length of its own).
    HeadOf(u64),
    Length(u64),
    Chunked,
}

/// Writes `resp`: the head with our framing and a `Date`, then the body (the head and whatever
/// of the body is already there in one write).
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    resp: Response<Body>,
    added: &Added,
    head_request: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let framing = framing(&parts.headers, added, &body, status, head_request);
    encode_head(out, status, &parts.headers, added, framing, keep_alive);
    if matches!(framing, Framing::None | Framing::HeadOf(_)) {
        drop(body);
        io.write_all(out).await?;
        return io.flush().await;
    }

    // What of the body is here already goes behind the head.
    let mut sent = 0u64;
    let mut ended = false;
    let mut pending = None;
    loop {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        match polled {
            Poll::Pending => break,
            Poll::Ready(None) => {
                ended = true;
                break;
            }
            Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not forwarded over HTTP/1.1
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                check_length(framing, sent)?;
                if out.len() + data.len() > COALESCE_BYTES {
                    pending = Some(data);
                    break;
                }
                encode_chunk(out, &data, framing);
            }
        }
    }
    if ended {
        finish(out, framing, sent)?;
        io.write_all(out).await?;
        return io.flush().await;
    }
    io.write_all(out).await?;
    if let Some(data) = pending {
        write_data(io, data, framing).await?;
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        check_length(framing, sent)?;
        write_data(io, data, framing).await?;
        // A streamed answer (server-sent events, say) goes out piece by piece, also over TLS.
        io.flush().await?;
    }
    out.clear();
    finish(out, framing, sent)?;
    io.write_all(out).await?;
    io.flush().await
}

/// The framing hyper would pick: the body's exact size, else a `Content-Length` the response
/// carries (in its map or among the upstream's fields beside it), else chunked; nothing for
/// answers without a body.
fn framing(
    headers: &HeaderMap,
    added: &Added,
    body: &Body,
    status: StatusCode,
    head_request: bool,
) -> Framing {
    let length = || {
        headers
            .get(header::CONTENT_LENGTH)
            .map(HeaderValue::as_bytes)
            .or_else(|| added.upstream()?.content_length())
    };
    let no_length = status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    if no_length {
        return Framing::None;
    }
    if head_request {
        return match body.size_hint().exact() {
            Some(n) if n > 0 && length().is_none() => Framing::HeadOf(n),
            _ => Framing::None,
        };
    }
    match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => length()
            .and_then(decimal)
            .map_or(Framing::Chunked, |n| Framing::Length(n as u64)),
    }
}

/// Status line and headers. Framing headers are ours; a bodiless answer keeps the
/// `Content-Length` it was given (a HEAD answer describes the GET body), or gets the size of
/// the body it carries when it names none, as hyper does.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    added: &Added,
    framing: Framing,
    keep_alive: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let keep_length = !matches!(framing, Framing::Length(_) | Framing::Chunked);
    let mut has_date = added
        .upstream()
        .is_some_and(|fields| fields.write_to(out, keep_length));
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    added.write_to(out);
    match framing {
        Framing::Length(n) | Framing::HeadOf(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A body longer than its declared length is cut off (the connection closes).
fn check_length(framing: Framing, sent: u64) -> io::Result<()> {
    match framing {
        Framing::Length(n) if sent > n => {
            Err(io::Error::other("response body longer than its length"))
        }
        _ => Ok(()),
    }
}

/// The end of the body: the last chunk, or a check that the length was met.
fn finish(out: &mut Vec<u8>, framing: Framing, sent: u64) -> io::Result<()> {
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => {
            return Err(io::Error::other("response body shorter than its length"));
        }
        _ => {}
    }
    Ok(())
}

fn encode_chunk(out: &mut Vec<u8>, data: &[u8], framing: Framing) {
    if framing == Framing::Chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

async fn write_data<I: AsyncWrite + Unpin>(
    io: &mut I,
    data: Bytes,
    framing: Framing,
) -> io::Result<()> {
    if framing == Framing::Chunked {
        let size = format!("{:x}\r\n", data.len());
        let mut chain = bytes::Buf::chain(bytes::Buf::chain(size.as_bytes(), data), &b"\r\n"[..]);
        io.write_all_buf(&mut chain).await
    } else {
        io.write_all(&data).await
    }
}

/// `Date` in IMF-fixdate, formatted once a second per thread (as hyper caches it).
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A connection with bytes already read from it in front: what hyper reads first after a
/// hand-over.
pub(super) struct Rewind<I> {
    pre: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    fn new(inner: I, pre: Bytes) -> Self {
        Self { pre, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// This path's parser against hyper's on the same bytes (for the tests and the `http1` fuzz
/// target). The gateway serves a request here only where hyper would have read the same request
/// from the same bytes: the same method, target, headers (in order) and body, and the same
/// boundary to the next pipelined request. A request read differently by two HTTP/1 parsers on
/// one connection is how request smuggling starts, so every disagreement is a bug here, never a
/// matter of taste.
#[cfg(any(test, feature = "fuzzing"))]
pub mod differential {
    use std::sync::{Arc, Mutex};

    use bytes::{Bytes, BytesMut};
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::{ClientBody, Parsed, parse};

    /// One request as a parser read it.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Read {
        pub method: String,
        pub target: String,
        pub headers: Vec<(String, Vec<u8>)>,
        pub body: Vec<u8>,
    }

    /// The requests this path serves from `bytes` (a whole connection's input, then its end),
    /// in order, before it stops or hands the connection over.
    pub fn ours(bytes: &[u8]) -> Vec<Read> {
        let mut buf = BytesMut::from(bytes);
        let mut reads = Vec::new();
        while let Parsed::Request(req, keep_alive) = parse(&mut buf, false, u64::MAX) {
            let (parts, body) = req.into_parts();
            let body = match body {
                ClientBody::Whole(b) => b.unwrap_or_default(),
                // `parse` is never told the body stalled here.
                _ => Bytes::new(),
            };
            reads.push(read(&parts.method, &parts.uri, &parts.headers, &body));
            if !keep_alive {
                break;
            }
        }
        reads
    }

    /// The requests hyper's HTTP/1 server (configured as the gateway configures it) reads from
    /// `bytes`, complete with their bodies, before the connection ends or fails.
    pub fn hyper(bytes: &[u8]) -> Vec<Read> {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        let seen = Arc::clone(&reads);
        let input = bytes.to_vec();
        rt.block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut rx, mut tx) = tokio::io::split(client);
            let feed = tokio::spawn(async move {
                let _ = tx.write_all(&input).await;
                let _ = tx.shutdown().await;
            });
            let drain = tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = rx.read_to_end(&mut sink).await;
            });
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        if let Ok(mut s) = seen.lock() {
                            s.push(read(&parts.method, &parts.uri, &parts.headers, &body));
                        }
                        Ok::<_, hyper::Error>(http::Response::new(
                            http_body_util::Empty::<Bytes>::new(),
                        ))
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
            let _ = feed.await;
            drain.abort();
        });
        let out = reads.lock().map(|mut r| std::mem::take(&mut *r));
        out.unwrap_or_default()
    }

    /// `Err` names the first request this path read differently from hyper (or that hyper did
    /// not read at all).
    pub fn check(bytes: &[u8]) -> Result<(), String> {
        let ours = ours(bytes);
        if ours.is_empty() {
            return Ok(());
        }
        let theirs = hyper(bytes);
        for (i, r) in ours.iter().enumerate() {
            match theirs.get(i) {
                Some(t) if t == r => {}
                other => {
                    return Err(format!(
                        "request {i} of {:?}: ours {r:?}, hyper's {other:?}",
                        String::from_utf8_lossy(bytes)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Edits of HTTP/1 input with the bytes that matter to its framing (separators, whitespace,
    /// line ends, digits, signs, controls, obs-text) and repeated lines; deterministic
    /// (xorshift), so a test sees the same inputs in every run without a dependency.
    pub struct Mutator(u64);

    impl Mutator {
        pub fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }

        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 as usize % n.max(1)
        }

        /// `raw` with one to three edits.
        pub fn mutate(&mut self, raw: &[u8]) -> Vec<u8> {
            const BYTES: &[u8] = b" \t\r\n:,;0139aAfF+-/%\"H\x00\x7f\x80\xff\x0b\x0c";
            let mut out = raw.to_vec();
            for _ in 0..1 + self.below(3) {
                let at = self.below(out.len() + 1);
                let b = BYTES[self.below(BYTES.len())];
                match self.below(5) {
                    0 if at < out.len() => out[at] = b,
                    1 => out.insert(at, b),
                    2 if at < out.len() => {
                        out.remove(at);
                    }
                    3 if at < out.len() => out[at] = out[at].to_ascii_uppercase(),
                    _ => {
                        // A line repeated: duplicate headers, requests, chunks.
                        let start = out[..at]
                            .iter()
                            .rposition(|&c| c == b'\n')
                            .map_or(0, |i| i + 1);
                        let end = out[at..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .map_or(out.len(), |i| at + i + 1);
                        let line = out[start..end].to_vec();
                        out.splice(start..start, line);
                    }
                }
            }
            out
        }
    }

    fn read(
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Read {
        Read {
            method: method.to_string(),
            target: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw.as_bytes());
        (parse(&mut buf, false, u64::MAX), buf)
    }

    #[test]
    fn a_whole_request_is_parsed_and_consumed_with_its_body() {
        let (parsed, rest) = request(
            "POST /orders?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\n",
        );
        let Parsed::Request(req, keep_alive) = parsed else {
            panic!("not parsed");
        };
        assert!(keep_alive);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/orders?x=1");
        assert_eq!(req.headers()["host"], "a");
        assert_eq!(req.body().size_hint().exact(), Some(4));
        // The next (pipelined) request stays in the buffer.
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let (parsed, _) = request("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, false)));
    }

    #[test]
    fn a_body_not_yet_here_waits_and_keeps_the_bytes() {
        let raw = "PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        let (parsed, rest) = request(raw);
        assert!(matches!(parsed, Parsed::Partial { body_pending: true }));
        assert_eq!(&rest[..], raw.as_bytes());
        let (parsed, _) = request("GET / HTTP/1.1\r\nHost: a");
        assert!(matches!(
            parsed,
            Parsed::Partial {
                body_pending: false
            }
        ));
        // Given up on: the head goes on with a body that answers 408.
        let mut buf = BytesMut::from(raw.as_bytes());
        let Parsed::Request(req, _) = parse(&mut buf, true, u64::MAX) else {
            panic!("not parsed");
        };
        assert!(matches!(req.body(), ClientBody::Stalled));
        assert_eq!(req.uri(), "/");
    }

    #[test]
    fn a_declared_body_over_the_limit_is_not_waited_for() {
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        let mut buf = BytesMut::from(raw.as_bytes());
        assert!(matches!(parse(&mut buf, false, 1024), Parsed::Handover));
        assert_eq!(&buf[..], raw.as_bytes());
    }

    #[test]
    fn what_hyper_must_judge_is_handed_over_untouched() {
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, rest) = request(raw);
            assert!(matches!(parsed, Parsed::Handover), "{raw:?}");
            assert_eq!(&rest[..], raw.as_bytes(), "{raw:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(request(&many).0, Parsed::Handover));
    }

    /// Requests at the edges where HTTP/1 parsers have disagreed (request smuggling reports
    /// against proxies and servers): framing, separators, whitespace, line endings, targets.
    const EDGES: &[&str] = &[
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a?b=c&d HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\n\r\n",
        "POST /o HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        "POST / HTTP/1.1\r\nContent-Length: 003\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length:  3 \r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef",
        "POST / HTTP/1.1\r\nContent-Length: 3,3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\n Content-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nX: y\r\n Content-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\nabc",
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n",
        "GET http://a.example/x?y HTTP/1.1\r\nHost: b\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        "GET /%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\\b HTTP/1.1\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n",
        "GET / HTTP/1.1\r\nX:\tb\t\r\n\r\n",
        "GET / HTTP/1.1\r\nX:\r\n\r\n",
        "GET / HTTP/1.1\r\n:x\r\n\r\n",
        "GET / HTTP/1.1\r\nX\r\n\r\n",
        "GET / HTTP/1.1\r\nX y: z\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",
        "CUSTOM-M / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];

    #[test]
    fn every_request_served_here_is_the_request_hyper_reads() {
        let mut served = 0;
        for raw in EDGES {
            differential::check(raw.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            served += differential::ours(raw.as_bytes()).len();
        }
        // The table is not all hand-overs: most of it is served here and compared.
        assert!(served >= 25, "{served} requests served from the table");
        let mut m = differential::Mutator::new(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for _ in 0..100_000 {
            let raw = EDGES[m.below(EDGES.len())].as_bytes();
            let input = m.mutate(raw);
            differential::check(&input).unwrap_or_else(|e| panic!("{e}"));
            compared += usize::from(!differential::ours(&input).is_empty());
        }
        assert!(
            compared >= 1000,
            "only {compared} mutated inputs were served here"
        );
    }

    #[test]
    fn the_differential_sees_a_disagreement() {
        // What a lenient parser would read as two requests, hyper reads as one with a body: the
        // comparison itself must notice when the reads differ.
        let ours = differential::ours(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        let mut theirs = differential::hyper(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(ours, theirs);
        theirs[0].body.clear();
        assert_ne!(ours, theirs);
    }

    fn encoded(status: StatusCode, headers: &[(&str, &str)], framing: Framing) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut out = Vec::new();
        encode_head(&mut out, status, &map, &Added::default(), framing, true);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn framing_headers_are_ours_and_a_date_is_added() {
        let head = encoded(
            StatusCode::OK,
            &[
                ("content-length", "99"),
                ("transfer-encoding", "chunked"),
                ("x", "1"),
            ],
            Framing::Length(5),
        );
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 5\r\ndate: "));
        assert!(!head.contains("99") && !head.contains("chunked"));
        let head = encoded(StatusCode::OK, &[("content-length", "7")], Framing::None);
        assert!(
            head.contains("content-length: 7\r\n"),
            "HEAD keeps the GET length"
        );
        let head = encoded(StatusCode::OK, &[("date", "then")], Framing::Chunked);
        assert!(head.contains("date: then\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert_eq!(head.matches("date").count(), 1);
    }

    #[tokio::test]
    async fn rewind_replays_the_bytes_read_before_the_connection() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(server, Bytes::from_static(b"GET / "));
        client.write_all(b"HTTP/1.1\r\n").await.expect("write");
        drop(client);
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
