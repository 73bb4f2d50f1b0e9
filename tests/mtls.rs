//! Certificate-bound tokens (RFC 8705 §3) over a real TLS connection: a rustls
//! server that asks for client certificates puts the connection's certificate
//! into each request as `ClientCertificate`, in front of the guarded API; a
//! reqwest client with or without a certificate calls it on 127.0.0.1.

mod common;

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bearer_guard::sender::ClientCertificate;
use common::*;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use tower::ServiceExt as _;

/// A CA, and end-entity certificates it signs, with their keys.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        Leaf {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serves `app` over TLS on 127.0.0.1: client certificates are asked for and
/// verified against the CA, but optional, and the one presented goes into every
/// request of its connection as a `ClientCertificate`.
async fn serve_tls(pki: &Pki, app: axum::Router) -> String {
    let server_cert = pki.leaf(&["localhost"]);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der], server_cert.key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| ClientCertificate::from_der(der));
                let service = hyper::service::service_fn(move |mut request| {
                    if let Some(c) = &certificate {
                        request.extensions_mut().insert(c.clone());
                    }
                    app.clone().oneshot(request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://localhost:{port}")
}

/// A client trusting the CA, presenting `certificate` if given.
fn client(pki: &Pki, certificate: Option<Leaf>) -> reqwest::Client {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    let config = match certificate {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der], leaf.key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

fn x5t_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, der))
}

#[tokio::test]
async fn a_certificate_bound_token_needs_the_connections_certificate() {
    let pki = Pki::new();
    let (clock, server, guard) = fixture().await;
    let url = serve_tls(&pki, orders_api(&guard)).await;
    let mine = pki.leaf(&["client-a"]);
    let bound = token_with(
        &server,
        &clock,
        json!({}),
        json!({"cnf": {"x5t#S256": x5t_s256(&mine.der)}}),
    );
    let unbound = svc_token(&server).await;
    let other = pki.leaf(&["client-b"]);

    let with_mine = client(&pki, Some(mine));
    let r = with_mine
        .get(format!("{url}/me"))
        .bearer_auth(&bound)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A plain token is fine over a connection with a certificate too.
    let r = with_mine
        .get(format!("{url}/me"))
        .bearer_auth(&unbound)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for (who, http, description) in [
        (
            "no certificate",
            client(&pki, None),
            "client certificate required",
        ),
        (
            "another certificate of the same CA",
            client(&pki, Some(other)),
            "client certificate binding mismatch",
        ),
    ] {
        let r = http
            .get(format!("{url}/me"))
            .bearer_auth(&bound)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{who}");
        assert_eq!(
            r.headers()["www-authenticate"],
            format!(
                r#"Bearer realm="orders", error="invalid_token", error_description="{description}""#
            )
            .as_str(),
            "{who}"
        );
    }
}

#[tokio::test]
async fn the_check_is_a_function_other_front_ends_can_call() {
    let (clock, server, guard) = fixture().await;
    let der = b"a DER certificate as an ext-authz peer reports it";
    let cnf = json!({"cnf": {"x5t#S256": x5t_s256(der)}});
    // `validate` refuses a bound token (no proof can reach it), so check it as
    // a request with the certificate in its extensions...
    let token = token_with(&server, &clock, json!({}), cnf);
    let mut request = http::Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientCertificate::from_der(der));
    let verified = guard
        .validate_request(
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
        )
        .await
        .unwrap();
    assert!(matches!(
        verified.binding(),
        bearer_guard::Binding::Certificate { .. }
    ));
    // ...and confirm it against any certificate with the standalone check.
    let other = ClientCertificate::from_der(b"another");
    assert!(bearer_guard::sender::confirm_certificate(&verified, Some(&other)).is_err());
    assert!(bearer_guard::sender::confirm_certificate(&verified, None).is_err());
    assert!(
        bearer_guard::sender::confirm_certificate(
            &verified,
            Some(&ClientCertificate::from_der(der))
        )
        .is_ok()
    );
    assert!(guard.validate(&token).await.is_err());
}
