//! Security events to a SIEM over syslog: RFC 5424 messages over UDP (one per datagram), TCP
//! or TLS (RFC 6587 / RFC 5425 octet counting: `LEN SP MESSAGE`). A dead collector costs one
//! connect attempt per second, never a stalled request: the caller counts what could not be sent.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::config::{SyslogConfig, SyslogTransport};

/// Why the syslog output could not be built.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.events.syslog: {0}")]
pub struct SyslogError(String);

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One collector.
pub struct Syslog {
    config: SyslogConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    hostname: String,
    procid: String,
    conn: Option<Conn>,
    /// No new connection attempt before this instant after a failure.
    retry_at: Option<Instant>,
}

impl Syslog {
    /// Builds the output (TLS roots loaded here, so a bad CA file is a start-up error); the
    /// connection is made on the first message.
    pub fn new(config: SyslogConfig) -> Result<Self, SyslogError> {
        let tls = match config.transport {
            SyslogTransport::Tls => Some(tls_connector(&config)?),
            _ => None,
        };
        Ok(Self {
            hostname: hostname(),
            procid: std::process::id().to_string(),
            config,
            tls,
            conn: None,
            retry_at: None,
        })
    }

    /// Sends one event; `false` when it could not be delivered (the caller counts it).
    pub async fn send(&mut self, msgid: &str, severity: u8, json: &str) -> bool {
        let frame = format_5424(
            self.config.facility.code() * 8 + severity.min(7),
            &humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            &self.hostname,
            &self.config.app_name,
            &self.procid,
            msgid,
            json,
        );
        // One reconnect per message: a collector that restarted gets the event.
        for _ in 0..2 {
            if self.conn.is_none() && !self.connect().await {
                return false;
            }
            if self.write(&frame).await {
                return true;
            }
            self.conn = None;
        }
        false
    }

    async fn connect(&mut self) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let addr = self.config.address.as_str();
        let attempt = async {
            Ok::<_, std::io::Error>(match self.config.transport {
                SyslogTransport::Udp => {
                    let target = tokio::net::lookup_host(addr)
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::other("no address"))?;
                    let local = if target.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let s = UdpSocket::bind(local).await?;
                    s.connect(target).await?;
                    Conn::Udp(s)
                }
                SyslogTransport::Tcp => Conn::Tcp(TcpStream::connect(addr).await?),
                SyslogTransport::Tls => {
                    let tcp = TcpStream::connect(addr).await?;
                    let Some((connector, name)) = &self.tls else {
                        return Err(std::io::Error::other("no TLS configuration"));
                    };
                    Conn::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
                }
            })
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                self.retry_at = None;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(collector = addr, error = %e, "syslog collector unreachable; events are counted as suppressed");
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                false
            }
            Err(_) => {
                tracing::warn!(
                    collector = addr,
                    "syslog collector: connect timed out; events are counted as suppressed"
                );
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                false
            }
        }
    }

    async fn write(&mut self, frame: &str) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let counted = || format!("{} {frame}", frame.len());
        let io = async {
            match conn {
                Conn::Udp(s) => s.send(frame.as_bytes()).await.map(|_| ()),
                Conn::Tcp(s) => s.write_all(counted().as_bytes()).await,
                Conn::Tls(s) => {
                    s.write_all(counted().as_bytes()).await?;
                    s.flush().await
                }
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(3), io).await,
            Ok(Ok(()))
        )
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (no structured data: the JSON
/// message carries everything).
pub fn format_5424(
    pri: u8,
    timestamp: &str,
    hostname: &str,
    app: &str,
    procid: &str,
    msgid: &str,
    msg: &str,
) -> String {
    format!(
        "<{pri}>1 {timestamp} {} {} {} {} - {msg}",
        header_field(hostname, 255),
        header_field(app, 48),
        header_field(procid, 128),
        header_field(msgid, 32),
    )
}

/// RFC 5424 header fields are printable ASCII without spaces, bounded, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() { "-".into() } else { clean }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn tls_connector(
    config: &SyslogConfig,
) -> Result<(TlsConnector, ServerName<'static>), SyslogError> {
    let mut roots = RootCertStore::empty();
    match &config.ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| SyslogError(format!("ca {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| SyslogError(format!("ca {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| SyslogError(format!("ca {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyslogError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = config.server_name.clone().unwrap_or_else(|| {
        config
            .address
            .rsplit_once(':')
            .map_or(config.address.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_owned()
    });
    let name = ServerName::try_from(host.clone())
        .map_err(|e| SyslogError(format!("server name `{host}`: {e}")))?;
    Ok((TlsConnector::from(Arc::new(tls)), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_rfc_5424() {
        let f = format_5424(
            132,
            "2026-01-01T00:00:00.000Z",
            "edge 1",
            "gateway",
            "42",
            "source_blocked",
            "{}",
        );
        assert_eq!(
            f,
            "<132>1 2026-01-01T00:00:00.000Z edge1 gateway 42 source_blocked - {}"
        );
        assert!(format_5424(1, "t", "", "a", "1", "m", "x").contains(" - a 1 m - x"));
    }
}
