//! PROXY protocol v1 and v2 (HAProxy): the load balancer's header in front of the connection,
//! read byte-exact so the TLS or HTTP bytes after it stay in the socket.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Reads the header; returns the original source address, or `None` for `LOCAL`/`UNKNOWN`
/// (health checks from the balancer itself).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyProtocolError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    if head[..12] == V2_SIGNATURE {
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut buf = Vec::with_capacity(16 + len);
        buf.extend_from_slice(&head);
        buf.resize(16 + len, 0);
        stream.read_exact(&mut buf[16..]).await?;
        let header = ppp::v2::Header::try_from(buf.as_slice())
            .map_err(|e| ProxyProtocolError::Malformed(e.to_string()))?;
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            ppp::v2::Addresses::IPv6(a) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            _ => None,
        });
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyProtocolError::Missing);
    }
    let mut line = head.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyProtocolError::Malformed("v1 line too long".into()));
        }
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await?;
        line.push(b[0]);
    }
    let text =
        std::str::from_utf8(&line).map_err(|e| ProxyProtocolError::Malformed(e.to_string()))?;
    let header = ppp::v1::Header::try_from(text)
        .map_err(|e| ProxyProtocolError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn v1_and_v2_leave_the_payload_in_the_stream() {
        let mut v1: &[u8] = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n";
        let src = read_header(&mut v1).await.expect("v1");
        assert_eq!(src, Some("198.51.100.7:5555".parse().expect("addr")));
        assert_eq!(v1, b"GET / HTTP/1.1\r\n");

        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::7]:4444".parse::<SocketAddr>().expect("addr"),
                "[2001:db8::1]:443".parse::<SocketAddr>().expect("addr"),
            ),
        )
        .build()
        .expect("build");
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x16\x03\x01");
        let mut s: &[u8] = &bytes;
        let src = read_header(&mut s).await.expect("v2");
        assert_eq!(src, Some("[2001:db8::7]:4444".parse().expect("addr")));
        assert_eq!(s, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        let mut s: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            read_header(&mut s).await,
            Err(ProxyProtocolError::Missing)
        ));
        let mut s: &[u8] = b"PROXY TCP4 not an address at all \r\n";
        assert!(matches!(
            read_header(&mut s).await,
            Err(ProxyProtocolError::Malformed(_))
        ));
    }
}
