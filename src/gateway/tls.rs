//! TLS termination on `listen` (`[tls]`): rustls with aws-lc-rs, TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1`, optional client certificates, and a certificate
//! that is replaced without a restart.
//!
//! The certificate sits behind an [`ArcSwap`] in the server's certificate
//! resolver: every handshake reads the current one, and a reload swaps it in one
//! store. A reload reads both files, and only a chain and key that parse and
//! belong together replace the old pair; anything else is logged and the old pair
//! kept, so a half-written file never takes the listener down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::config::{ClientAuth, ConfigError, TlsConfig};
use super::reload::{FileStamp, file_stamp};

/// The crate's one TLS provider: aws-lc-rs.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS listener's configuration: the acceptor and the certificate it serves.
#[derive(Clone)]
pub(crate) struct TlsListener {
    pub acceptor: TlsAcceptor,
    pub certificate: Arc<ReloadingCertificate>,
    /// How often the certificate files are checked.
    pub reload_interval: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("certificate", &self.certificate)
            .field("reload_interval", &self.reload_interval)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Checks `[tls]` and reads its files (errors name the key).
    pub(super) fn from_config(c: &TlsConfig) -> Result<TlsListener, ConfigError> {
        let provider = provider();
        let certificate = Arc::new(ReloadingCertificate::load(
            c.cert_file.clone(),
            c.key_file.clone(),
            provider.clone(),
        )?);
        let reload_interval = super::seconds_or(
            "tls.reload_interval_secs",
            c.reload_interval_secs,
            Duration::from_secs(5),
        )?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::at("tls", e.to_string()))?;
        let builder = match &c.client_ca_file {
            None => {
                if c.client_auth.is_some() {
                    return Err(ConfigError::at(
                        "tls.client_auth",
                        "needs tls.client_ca_file: the CAs client certificates are checked against",
                    ));
                }
                builder.with_no_client_auth()
            }
            Some(file) => {
                let roots = read_roots("tls.client_ca_file", file)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match c.client_auth.unwrap_or_default() {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| ConfigError::at("tls.client_ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            reload_interval,
        })
    }

    /// Reloads the certificate whenever its files change, until dropped.
    pub(super) async fn watch(certificate: Arc<ReloadingCertificate>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let files = certificate.clone();
            // File reads off the runtime's threads.
            let result = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
            match result {
                Ok(Ok(true)) => tracing::info!(
                    cert_file = %certificate.cert_file.display(),
                    "TLS certificate reloaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the old one is kept");
                }
                Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

/// The served certificate and key, replaced by [`reload`](Self::reload).
pub(crate) struct ReloadingCertificate {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The files' modification times and sizes at the last read (good or bad).
    seen: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

type Stamp = [FileStamp; 2];

fn stamp(cert_file: &Path, key_file: &Path) -> Stamp {
    [file_stamp(cert_file), file_stamp(key_file)]
}

impl ReloadingCertificate {
    fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        let seen = stamp(&cert_file, &key_file);
        let key = read_pair(&cert_file, &key_file, &provider)?;
        Ok(ReloadingCertificate {
            current: ArcSwap::from_pointee(key),
            cert_file,
            key_file,
            provider,
            seen: Mutex::new(Some(seen)),
        })
    }

    /// Reads both files now; a valid pair replaces the served one, an invalid
    /// one is refused (the old pair stays).
    pub(super) fn reload(&self) -> Result<(), ConfigError> {
        let seen = stamp(&self.cert_file, &self.key_file);
        let result = read_pair(&self.cert_file, &self.key_file, &self.provider);
        if let Ok(mut last) = self.seen.lock() {
            *last = Some(seen);
        }
        self.current.store(Arc::new(result?));
        Ok(())
    }

    /// [`reload`](Self::reload) when a file's modification time or size changed
    /// since the last read: `Ok(true)` when a new pair is served.
    fn reload_if_changed(&self) -> Result<bool, ConfigError> {
        let now = stamp(&self.cert_file, &self.key_file);
        let changed = self
            .seen
            .lock()
            .map(|last| *last != Some(now))
            .unwrap_or(true);
        if !changed {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The leaf certificate served now (DER).
    #[cfg(test)]
    fn leaf(&self) -> Vec<u8> {
        self.current.load().cert[0].to_vec()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A certificate chain and its key, checked to belong together.
fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ConfigError> {
    let chain = read_certificates("tls.cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        ConfigError::at(
            "tls.key_file",
            format!("{}: no usable private key: {e}", key_file.display()),
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        ConfigError::at(
            "tls.key_file",
            format!("{} with {}: {e}", key_file.display(), cert_file.display()),
        )
    })?;
    Ok(key)
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn read_certificates(
    key: &str,
    file: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |problem: String| ConfigError::at(key, format!("{}: {problem}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file, as trust anchors.
pub(crate) fn read_roots(key: &str, file: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certificates(key, file)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            ConfigError::at(
                key,
                format!(
                    "{}: certificate {i} is not a usable CA: {e}",
                    file.display()
                ),
            )
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir = std::env::temp_dir()
                .join(format!("bearer-guard-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Files { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// PEM armour for `der` (rcgen is built without its `pem` feature).
    pub(crate) fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (
            pem("CERTIFICATE", cert.der()),
            pem("PRIVATE KEY", &key.serialize_der()),
        )
    }

    fn config(cert_file: PathBuf, key_file: PathBuf) -> TlsConfig {
        TlsConfig {
            cert_file,
            key_file,
            reload_interval_secs: None,
            client_ca_file: None,
            client_auth: None,
        }
    }

    #[test]
    fn a_bad_reload_keeps_the_served_pair() {
        let files = Files::new("bad-reload");
        let (cert, key) = self_signed("a.test");
        let c = config(files.write("c.pem", &cert), files.write("k.pem", &key));
        let tls = TlsListener::from_config(&c).expect("valid pair");
        let served = tls.certificate.leaf();

        // A key that does not belong to the chain: refused, old pair kept.
        let (_, other_key) = self_signed("b.test");
        files.write("k.pem", &other_key);
        let e = tls.certificate.reload().expect_err("mismatched pair");
        assert_eq!(e.key(), Some("tls.key_file"), "{e}");
        assert_eq!(tls.certificate.leaf(), served);

        // A truncated chain: refused too.
        files.write("c.pem", &cert[..cert.len() / 2]);
        files.write("k.pem", &key);
        assert!(tls.certificate.reload().is_err());
        assert_eq!(tls.certificate.leaf(), served);

        // A new valid pair is served.
        let (cert, key) = self_signed("c.test");
        files.write("c.pem", &cert);
        files.write("k.pem", &key);
        tls.certificate.reload().expect("valid pair");
        assert_ne!(tls.certificate.leaf(), served);
    }

    #[test]
    fn reload_if_changed_reads_only_changed_files() {
        let files = Files::new("changed");
        let (cert, key) = self_signed("a.test");
        let c = config(files.write("c.pem", &cert), files.write("k.pem", &key));
        let tls = TlsListener::from_config(&c).expect("valid pair");
        assert!(!tls.certificate.reload_if_changed().expect("unchanged"));
        // A different size is a change even within the file system's mtime grain.
        let (cert, key) = self_signed("a-much-longer-name.test");
        files.write("c.pem", &cert);
        files.write("k.pem", &key);
        assert!(tls.certificate.reload_if_changed().expect("changed"));
        assert!(!tls.certificate.reload_if_changed().expect("seen"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let files = Files::new("errors");
        let (cert, key) = self_signed("a.test");
        let cert_file = files.write("c.pem", &cert);
        let key_file = files.write("k.pem", &key);
        let missing = files.dir.join("missing.pem");

        let e = TlsListener::from_config(&config(missing.clone(), key_file.clone()))
            .expect_err("no chain");
        assert_eq!(e.key(), Some("tls.cert_file"));
        let e = TlsListener::from_config(&config(cert_file.clone(), cert_file.clone()))
            .expect_err("a certificate is no key");
        assert_eq!(e.key(), Some("tls.key_file"));

        let mut c = config(cert_file.clone(), key_file.clone());
        c.client_auth = Some(ClientAuth::Optional);
        let e = TlsListener::from_config(&c).expect_err("client_auth without CAs");
        assert_eq!(e.key(), Some("tls.client_auth"));

        let mut c = config(cert_file.clone(), key_file.clone());
        c.client_ca_file = Some(key_file.clone());
        let e = TlsListener::from_config(&c).expect_err("a key is no CA");
        assert_eq!(e.key(), Some("tls.client_ca_file"));

        let mut c = config(cert_file.clone(), key_file);
        c.reload_interval_secs = Some(0.0);
        let e = TlsListener::from_config(&c).expect_err("zero interval");
        assert_eq!(e.key(), Some("tls.reload_interval_secs"));
    }

    /// The listener's part of certificate-bound tokens: the verified leaf is in
    /// the extensions of every request of its connection, and absent without one.
    #[tokio::test]
    async fn the_client_certificate_reaches_every_request() {
        use bytes::Bytes;
        use http_body_util::{BodyExt as _, Full};
        use hyper_util::rt::TokioIo;
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

        use crate::gateway::listener::{ConnLimits, serve_connections_with};
        use crate::sender::ClientCertificate;

        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_owned()])
                .expect("params")
                .signed_by(&key, &ca)
                .expect("signed");
            (cert, key)
        };
        let (server, server_key) = leaf("localhost");
        let (client, client_key) = leaf("client-a");
        let files = Files::new("client-cert");
        let mut c = config(
            files.write("c.pem", &pem("CERTIFICATE", server.der())),
            files.write("k.pem", &pem("PRIVATE KEY", &server_key.serialize_der())),
        );
        c.client_ca_file = Some(files.write("ca.pem", &pem("CERTIFICATE", ca.der())));
        c.client_auth = Some(ClientAuth::Optional);
        let tls = TlsListener::from_config(&c).expect("tls");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler = |req: http::Request<hyper::body::Incoming>, _peer| async move {
            let seen = req
                .extensions()
                .get::<ClientCertificate>()
                .map_or_else(|| "none".to_owned(), ClientCertificate::x5t_s256);
            http::Response::new(Full::new(Bytes::from(seen)))
        };
        tokio::spawn(async move {
            serve_connections_with(
                listener,
                std::future::pending(),
                Duration::from_secs(1),
                &ConnLimits::default(),
                Some(tls.acceptor),
                handler,
            )
            .await
        });

        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let key = PrivateKeyDer::try_from(client_key.serialize_der()).expect("key");
        let with = builder
            .clone()
            .with_client_auth_cert(vec![client.der().clone()], key)
            .expect("client auth");
        let without = builder.with_no_client_auth();
        let expected = ClientCertificate::from_der(client.der()).x5t_s256();
        for (config, want) in [(with, expected.as_str()), (without, "none")] {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let stream = connector.connect(name, tcp).await.expect("handshake");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("http1");
            tokio::spawn(conn);
            for _ in 0..2 {
                let req = http::Request::get("/")
                    .header("host", "localhost")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let response = sender.send_request(req).await.expect("response");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(body, want.as_bytes());
            }
        }
    }
}
