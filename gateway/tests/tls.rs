//! TLS termination over real loopback sockets: SNI selection, ALPN, protocol versions, client
//! certificates, reload, and the errors a bad configuration produces.

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gateway::tls::{ClientAuth, TlsAcceptor, TlsError, TlsInfo, TlsSettings, TlsVersion};
use rcgen::SanType;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
    SupportedProtocolVersion,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use support::pki::{Issued, Pki};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::timeout,
};
use tokio_rustls::{TlsConnector, client};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

const BOTH: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];
const ONLY_12: &[&SupportedProtocolVersion] = &[&TLS12];
const ONLY_13: &[&SupportedProtocolVersion] = &[&TLS13];
const WAIT: Duration = Duration::from_secs(10);

/// A listener on 127.0.0.1:0 that runs the acceptor, reports each handshake, then echoes bytes.
struct Server {
    addr: SocketAddr,
    acceptor: Arc<TlsAcceptor>,
    results: mpsc::UnboundedReceiver<Result<TlsInfo, String>>,
}

impl Server {
    async fn start(settings: &TlsSettings) -> Self {
        let acceptor = Arc::new(TlsAcceptor::new(settings).expect("valid settings"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, results) = mpsc::unbounded_channel();
        let shared = Arc::clone(&acceptor);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = Arc::clone(&shared);
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok((mut tls, info)) => {
                            let _ = tx.send(Ok(info));
                            let mut buf = [0u8; 1024];
                            while let Ok(n @ 1..) = tls.read(&mut buf).await {
                                if tls.write_all(&buf[..n]).await.is_err()
                                    || tls.flush().await.is_err()
                                {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            }
        });
        Self {
            addr,
            acceptor,
            results,
        }
    }

    /// The outcome of the next server-side handshake.
    async fn handshake(&mut self) -> Result<TlsInfo, String> {
        timeout(WAIT, self.results.recv())
            .await
            .expect("the server reports the handshake in time")
            .expect("the server task is running")
    }

    async fn connect(&self, config: ClientConfig, name: &str) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        timeout(
            WAIT,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("client handshake finishes in time")
    }
}

type Client = client::TlsStream<TcpStream>;

/// Sends `msg` and expects it echoed; an error means the server refused or closed the session.
async fn echo(client: &mut Client, msg: &[u8]) -> std::io::Result<()> {
    client.write_all(msg).await?;
    client.flush().await?;
    let mut back = vec![0u8; msg.len()];
    timeout(WAIT, client.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    assert_eq!(back, msg);
    Ok(())
}

/// The certificate the client was served.
fn leaf(client: &Client) -> CertificateDer<'static> {
    client
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented a certificate")
        .clone()
        .into_owned()
}

/// The SAN DNS names of the certificate the client was served.
fn leaf_names(client: &Client) -> Vec<String> {
    let der = leaf(client);
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(&der).expect("parsable leaf");
    cert.subject_alternative_name()
        .expect("valid SAN")
        .expect("SAN present")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

fn settings(certs: &[&Issued]) -> TlsSettings {
    TlsSettings {
        certificates: certs.iter().map(|c| c.pair()).collect(),
        client_auth: ClientAuth::None,
        client_ca: None,
        min_version: TlsVersion::Tls12,
    }
}

fn mtls_settings(pki: &Pki, server: &Issued, auth: ClientAuth) -> TlsSettings {
    TlsSettings {
        client_auth: auth,
        client_ca: Some(pki.ca_pem.clone()),
        ..settings(&[server])
    }
}

fn client_sans() -> Vec<SanType> {
    vec![
        SanType::DnsName("client.example.com".try_into().expect("ia5")),
        SanType::URI("spiffe://example.com/orders".try_into().expect("ia5")),
        SanType::Rfc822Name("ops@example.com".try_into().expect("ia5")),
        SanType::IpAddress([10, 1, 2, 3].into()),
    ]
}

/// Checks the chain against the CA but not the name, so a test can see which certificate an
/// unmatched SNI gets (the client would rightly refuse it otherwise).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn chain_only_client(pki: &Pki) -> ClientConfig {
    let mut config = pki.client_config(BOTH, &[], None);
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(pki.roots()),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(ChainOnly(verifier)));
    config
}

// ---------------------------------------------------------------------------------------------
// SNI

#[tokio::test]
async fn sni_selects_exact_and_wildcard_certificates() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let wild = pki.server("wild", &["*.example.net"]);
    let mut server = Server::start(&settings(&[&api, &wild])).await;
    // Debug output names what is served (and stays short: no certificate bytes).
    let debug = format!("{:?}", server.acceptor);
    assert!(
        debug.contains("\"api.example.com\"") && debug.contains("\"*.example.net\""),
        "{debug}"
    );
    assert!(debug.len() < 200, "{debug}");

    let c = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("exact name");
    assert_eq!(leaf_names(&c), ["api.example.com"]);
    assert_eq!(leaf(&c), api.der);
    let info = server.handshake().await.expect("accepted");
    assert_eq!(info.sni.as_deref(), Some("api.example.com"));

    // Case does not matter for DNS names.
    let c = server
        .connect(pki.client_config(BOTH, &[], None), "API.Example.COM")
        .await
        .expect("exact name, other case");
    assert_eq!(leaf(&c), api.der);
    server.handshake().await.expect("accepted");

    let c = server
        .connect(pki.client_config(BOTH, &[], None), "shop.example.net")
        .await
        .expect("wildcard");
    assert_eq!(leaf_names(&c), ["*.example.net"]);
    assert_eq!(leaf(&c), wild.der);
    let info = server.handshake().await.expect("accepted");
    assert_eq!(info.sni.as_deref(), Some("shop.example.net"));
}

#[tokio::test]
async fn wildcard_covers_exactly_one_label() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let wild = pki.server("wild", &["*.example.net"]);
    let mut server = Server::start(&settings(&[&api, &wild])).await;

    // Neither the parent nor a deeper name matches `*.example.net`: both get the default.
    for name in ["example.net", "a.b.example.net"] {
        let c = server
            .connect(chain_only_client(&pki), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(leaf(&c), api.der, "{name} must get the default certificate");
        server.handshake().await.expect("accepted");
    }
}

#[tokio::test]
async fn unknown_or_missing_sni_gets_the_first_certificate() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let wild = pki.server("wild", &["*.example.net"]);
    let mut server = Server::start(&settings(&[&api, &wild])).await;

    let c = server
        .connect(chain_only_client(&pki), "unknown.example.org")
        .await
        .expect("unknown name");
    assert_eq!(leaf_names(&c), ["api.example.com"]);
    let info = server.handshake().await.expect("accepted");
    assert_eq!(info.sni.as_deref(), Some("unknown.example.org"));

    // No SNI at all: the name is still used to verify the certificate, just not sent.
    let mut config = pki.client_config(BOTH, &[], None);
    config.enable_sni = false;
    let c = server
        .connect(config, "api.example.com")
        .await
        .expect("no SNI");
    assert_eq!(leaf(&c), api.der);
    let info = server.handshake().await.expect("accepted");
    assert_eq!(info.sni, None);
}

// ---------------------------------------------------------------------------------------------
// ALPN

#[tokio::test]
async fn alpn_prefers_h2_and_falls_back_to_http1() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let mut server = Server::start(&settings(&[&api])).await;

    for (offered, want_alpn, want_h2) in [
        (&["h2", "http/1.1"][..], Some(&b"h2"[..]), true),
        (&["http/1.1", "h2"][..], Some(&b"h2"[..]), true),
        (&["http/1.1"][..], Some(&b"http/1.1"[..]), false),
        (&[][..], None, false),
    ] {
        let c = server
            .connect(pki.client_config(BOTH, offered, None), "api.example.com")
            .await
            .unwrap_or_else(|e| panic!("offering {offered:?}: {e}"));
        assert_eq!(
            c.get_ref().1.alpn_protocol(),
            want_alpn,
            "offering {offered:?}"
        );
        let info = server.handshake().await.expect("accepted");
        assert_eq!(info.alpn_h2, want_h2, "offering {offered:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol versions

#[tokio::test]
async fn tls12_client_works_with_min_12_and_fails_with_min_13() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);

    let mut server = Server::start(&settings(&[&api])).await;
    let mut c = server
        .connect(pki.client_config(ONLY_12, &["h2"], None), "api.example.com")
        .await
        .expect("TLS 1.2 accepted by default");
    echo(&mut c, b"over 1.2").await.expect("echo");
    let info = server.handshake().await.expect("accepted");
    assert_eq!(info.version, "TLSv1.2");
    assert!(info.alpn_h2, "ALPN works over TLS 1.2 too");

    server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("TLS 1.3");
    assert_eq!(
        server.handshake().await.expect("accepted").version,
        "TLSv1.3"
    );

    let mut server = Server::start(&TlsSettings {
        min_version: TlsVersion::Tls13,
        ..settings(&[&api])
    })
    .await;
    let err = server
        .connect(pki.client_config(ONLY_12, &[], None), "api.example.com")
        .await
        .expect_err("TLS 1.2 refused with min_version 1.3");
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    server.handshake().await.expect_err("server refused too");

    server
        .connect(pki.client_config(ONLY_13, &[], None), "api.example.com")
        .await
        .expect("TLS 1.3 still accepted");
    assert_eq!(
        server.handshake().await.expect("accepted").version,
        "TLSv1.3"
    );
}

#[tokio::test]
async fn tls11_client_hello_is_refused() {
    // rustls clients cannot speak TLS 1.1, so send a TLS 1.1 ClientHello by hand.
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let mut server = Server::start(&settings(&[&api])).await;

    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two CBC suites of the era
    hello.extend_from_slice(&[0x01, 0x00]); // null compression only
    // signature_algorithms (ecdsa_secp256r1_sha256): without it rustls stops earlier, with a
    // handshake_failure that would not show the version check at work.
    hello.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let len = u32::try_from(hello.len()).expect("small").to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]]; // ClientHello
    handshake.extend_from_slice(&hello);
    let len = u16::try_from(handshake.len()).expect("small").to_be_bytes();
    let mut record = vec![0x16, 0x03, 0x02, len[0], len[1]]; // handshake record, TLS 1.1
    record.extend_from_slice(&handshake);

    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(&record).await.expect("send hello");
    let mut reply = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut reply))
        .await
        .expect("server answers in time")
        .expect("read reply");
    // An alert record (21) saying protocol_version (70), then the server closes.
    assert_eq!(
        reply.first(),
        Some(&21),
        "expected an alert, got {reply:02x?}"
    );
    assert_eq!(
        reply.get(6),
        Some(&70),
        "expected protocol_version, got {reply:02x?}"
    );
    let err = server.handshake().await.expect_err("server refused");
    assert!(err.contains("handshake"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Client certificates

#[tokio::test]
async fn required_client_auth_rejects_missing_and_untrusted_certificates() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let rogue = pki.self_signed_client("rogue", "rogue");
    let mut server = Server::start(&mtls_settings(&pki, &api, ClientAuth::Required)).await;

    // In TLS 1.3 the client finishes before the server judges its certificate, so the refusal
    // may only show on first use; in TLS 1.2 it shows in the handshake.
    for versions in [ONLY_13, ONLY_12] {
        for identity in [None, Some(&rogue)] {
            let what = format!("{versions:?} with {:?}", identity.map(|i| &i.cert));
            let client = server
                .connect(
                    pki.client_config(versions, &[], identity),
                    "api.example.com",
                )
                .await;
            if let Ok(mut c) = client {
                echo(&mut c, b"let me in")
                    .await
                    .expect_err(&format!("{what}: refused on first use"));
            }
            let err = server
                .handshake()
                .await
                .expect_err(&format!("{what}: server refused"));
            let reason = match identity {
                None => "peer sent no certificates",
                Some(_) => "UnknownIssuer",
            };
            assert!(err.contains(reason), "{what}: {err}");
        }
    }
}

#[tokio::test]
async fn required_client_auth_accepts_a_ca_signed_certificate() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let client_cert = pki.client("client", "orders-client", client_sans());
    let mut server = Server::start(&mtls_settings(&pki, &api, ClientAuth::Required)).await;

    for versions in [ONLY_13, ONLY_12] {
        let mut c = server
            .connect(
                pki.client_config(versions, &[], Some(&client_cert)),
                "api.example.com",
            )
            .await
            .expect("CA-signed client certificate accepted");
        echo(&mut c, b"hello").await.expect("echo");
        let info = server.handshake().await.expect("accepted");
        let id = info.client.expect("client identity");
        assert_eq!(id.subject, "CN=orders-client, O=Gateway Tests");
        assert_eq!(
            id.sans,
            [
                "client.example.com",
                "spiffe://example.com/orders",
                "ops@example.com",
                "10.1.2.3"
            ]
        );
        let want: String = Sha256::digest(&client_cert.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(id.fingerprint_sha256.len(), 64);
        assert!(
            id.fingerprint_sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{}",
            id.fingerprint_sha256
        );
        assert_eq!(id.fingerprint_sha256, want);
    }
}

#[tokio::test]
async fn optional_client_auth_accepts_with_and_without_certificate() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let client_cert = pki.client("client", "orders-client", client_sans());
    let rogue = pki.self_signed_client("rogue", "rogue");
    let mut server = Server::start(&mtls_settings(&pki, &api, ClientAuth::Optional)).await;

    let mut c = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("anonymous client accepted");
    echo(&mut c, b"anon").await.expect("echo");
    assert_eq!(server.handshake().await.expect("accepted").client, None);

    let mut c = server
        .connect(
            pki.client_config(BOTH, &[], Some(&client_cert)),
            "api.example.com",
        )
        .await
        .expect("client with certificate accepted");
    echo(&mut c, b"known").await.expect("echo");
    let id = server
        .handshake()
        .await
        .expect("accepted")
        .client
        .expect("identity");
    assert_eq!(id.subject, "CN=orders-client, O=Gateway Tests");

    // Optional means "verified when presented": an untrusted certificate is still refused.
    if let Ok(mut c) = server
        .connect(
            pki.client_config(BOTH, &[], Some(&rogue)),
            "api.example.com",
        )
        .await
    {
        echo(&mut c, b"rogue")
            .await
            .expect_err("refused on first use");
    }
    server
        .handshake()
        .await
        .expect_err("untrusted certificate refused");
}

// ---------------------------------------------------------------------------------------------
// Reload

#[tokio::test]
async fn reload_serves_new_certificate_and_keeps_open_connections() {
    let pki = Pki::new();
    let v1 = pki.server("api-v1", &["api.example.com"]);
    let v2 = pki.server("api-v2", &["api.example.com"]);
    let mut server = Server::start(&settings(&[&v1])).await;

    let mut before = server
        .connect(pki.client_config(BOTH, &["h2"], None), "api.example.com")
        .await
        .expect("connect before reload");
    assert_eq!(leaf(&before), v1.der);
    echo(&mut before, b"before").await.expect("echo");
    server.handshake().await.expect("accepted");

    server.acceptor.reload(&settings(&[&v2])).expect("reload");

    echo(&mut before, b"after reload, same connection")
        .await
        .expect("the open connection survives the reload");
    let mut after = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("connect after reload");
    assert_eq!(
        leaf(&after),
        v2.der,
        "new handshakes use the new certificate"
    );
    echo(&mut after, b"new").await.expect("echo");
    server.handshake().await.expect("accepted");
}

#[tokio::test]
async fn failed_reload_keeps_the_old_certificate() {
    let pki = Pki::new();
    let v1 = pki.server("api-v1", &["api.example.com"]);
    let v2 = pki.server("api-v2", &["api.example.com"]);
    let mut server = Server::start(&settings(&[&v1])).await;

    let mut open = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("connect");
    server.handshake().await.expect("accepted");

    // A missing key file.
    let missing = pki.dir().join("gone.key");
    let mut bad = settings(&[&v2]);
    bad.certificates[0].key = missing.clone();
    let err = server.acceptor.reload(&bad).expect_err("missing key");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // A key that exists but belongs to another certificate: caught when loading, not when a
    // client connects.
    let mut bad = settings(&[&v2]);
    bad.certificates[0].key = v1.key.clone();
    let err = server.acceptor.reload(&bad).expect_err("mismatched key");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let c = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("connect after failed reloads");
    assert_eq!(leaf(&c), v1.der, "the old certificate is still served");
    server.handshake().await.expect("accepted");
    echo(&mut open, b"still here").await.expect("echo");
}

#[tokio::test]
async fn reload_applies_client_auth_changes() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let client_cert = pki.client("client", "orders-client", client_sans());
    let mut server = Server::start(&settings(&[&api])).await;

    let mut anon = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
        .expect("anonymous before");
    server.handshake().await.expect("accepted");

    server
        .acceptor
        .reload(&mtls_settings(&pki, &api, ClientAuth::Required))
        .expect("reload to mTLS");

    if let Ok(mut c) = server
        .connect(pki.client_config(BOTH, &[], None), "api.example.com")
        .await
    {
        echo(&mut c, b"anon")
            .await
            .expect_err("refused on first use");
    }
    server.handshake().await.expect_err("now refused");
    server
        .connect(
            pki.client_config(BOTH, &[], Some(&client_cert)),
            "api.example.com",
        )
        .await
        .expect("with certificate");
    assert!(server.handshake().await.expect("accepted").client.is_some());
    // The connection made under the old policy is not cut off.
    echo(&mut anon, b"grandfathered").await.expect("echo");
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

#[test]
fn missing_file_is_named() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let mut s = settings(&[&api]);
    s.certificates[0].cert = pki.dir().join("nope.pem");
    let err = TlsAcceptor::new(&s).expect_err("missing cert");
    let msg = err.to_string();
    assert!(msg.contains("tls.certificates[0].cert"), "{msg}");
    assert!(msg.contains("nope.pem"), "{msg}");
}

#[test]
fn pem_without_certificate_is_named() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);

    // A key where the certificate should be.
    let mut s = settings(&[&api]);
    s.certificates[0].cert = api.key.clone();
    let err = TlsAcceptor::new(&s).expect_err("no certificate");
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == api.key),
        "{err}"
    );
    assert!(err.to_string().contains("no certificate"), "{err}");

    // Not PEM at all.
    let junk = pki.write("junk.pem", "hello, I am not a certificate\n");
    s.certificates[0].cert = junk.clone();
    let err = TlsAcceptor::new(&s).expect_err("no certificate");
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == junk),
        "{err}"
    );

    // A truncated block.
    let cut = pki.write("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    s.certificates[0].cert = cut.clone();
    let err = TlsAcceptor::new(&s).expect_err("truncated");
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == cut),
        "{err}"
    );

    // A certificate where the key should be.
    let mut s = settings(&[&api]);
    s.certificates[0].key = api.cert.clone();
    let err = TlsAcceptor::new(&s).expect_err("no key");
    assert!(
        matches!(&err, TlsError::NoKey { path } if *path == api.cert),
        "{err}"
    );
}

#[test]
fn key_not_matching_certificate_names_both_files() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    let other = pki.server("other", &["other.example.com"]);
    let mut s = settings(&[&api]);
    s.certificates[0].key = other.key.clone();
    let msg = TlsAcceptor::new(&s).expect_err("mismatch").to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert!(msg.contains(&api.cert.display().to_string()), "{msg}");
    assert!(msg.contains(&other.key.display().to_string()), "{msg}");
}

#[test]
fn client_auth_without_ca_is_refused() {
    let pki = Pki::new();
    let api = pki.server("api", &["api.example.com"]);
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let s = TlsSettings {
            client_auth: auth,
            ..settings(&[&api])
        };
        let msg = TlsAcceptor::new(&s).expect_err("no CA").to_string();
        assert!(msg.contains("tls.client_ca"), "{msg}");
        assert!(msg.contains("required when client_auth"), "{msg}");
    }

    // A CA bundle with nothing in it.
    let empty = pki.write("empty-ca.pem", "");
    let s = TlsSettings {
        client_ca: Some(empty.clone()),
        ..mtls_settings(&pki, &api, ClientAuth::Required)
    };
    let err = TlsAcceptor::new(&s).expect_err("empty CA");
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == empty),
        "{err}"
    );
}

#[test]
fn yaml_section_deserializes() {
    let s: TlsSettings = serde_yaml::from_str(
        "certificates:\n  - { cert: certs/api.pem, key: certs/api.key }\n\
         client_auth: optional\nclient_ca: certs/ca.pem\nmin_version: \"1.3\"\n",
    )
    .expect("valid section");
    assert_eq!(s.client_auth, ClientAuth::Optional);
    assert_eq!(s.min_version, TlsVersion::Tls13);
    assert_eq!(s.certificates[0].key, std::path::Path::new("certs/api.key"));

    let err = serde_yaml::from_str::<TlsSettings>("certificates: []\nclient_auth: mandatory\n")
        .expect_err("bad enum");
    assert!(err.to_string().contains("mandatory"), "{err}");
}
