//! The TCP socket under a server TLS session.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A TCP stream that sends a single buffer with `send()` even when asked for a vectored write.
///
/// rustls hands its pending TLS records to the socket as a vectored write, so every record
/// went out through `writev()`, which costs ~450 ns more per call than `send()` on this
/// kernel (a loopback microbenchmark, 238-byte writes: 2.27 µs against 2.73 µs): the VFS write
/// path and the iovec import. A response is usually one record; several still go out in one
/// `writev()`.
#[derive(Debug)]
pub struct TlsSocket(TcpStream);

impl TlsSocket {
    pub fn new(tcp: TcpStream) -> Self {
        Self(tcp)
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (Some(one), None) => Pin::new(&mut self.0).poll_write(cx, one),
            (None, _) => Poll::Ready(Ok(0)),
            _ => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn vectored_writes_arrive_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut socket = TlsSocket::new(client);
        // One slice among empty ones (the send path), then several (the writev path).
        let one = [
            IoSlice::new(b""),
            IoSlice::new(b"record-1;"),
            IoSlice::new(b""),
        ];
        let n = socket.write_vectored(&one).await.expect("write");
        assert_eq!(n, 9);
        let mut several = [IoSlice::new(b"record-2;"), IoSlice::new(b"record-3")];
        let mut bufs = &mut several[..];
        while !bufs.is_empty() {
            let n = socket.write_vectored(bufs).await.expect("write");
            IoSlice::advance_slices(&mut bufs, n);
        }
        assert_eq!(
            socket
                .write_vectored(&[IoSlice::new(b"")])
                .await
                .expect("empty"),
            0
        );
        socket.shutdown().await.expect("shutdown");
        let mut got = String::new();
        server.read_to_string(&mut got).await.expect("read");
        assert_eq!(got, "record-1;record-2;record-3");
    }
}
