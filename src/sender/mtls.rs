//! Certificate-bound access tokens (RFC 8705 §3): `cnf["x5t#S256"]` must be the
//! SHA-256 thumbprint of the TLS client certificate of the connection.
//!
//! bearer-guard does not terminate TLS. The server's TLS stack puts the
//! connection's client certificate into each request's extensions as a
//! [`ClientCertificate`]; the layer reads it from there. A request without one
//! is treated as a connection without a client certificate.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::claims::{Binding, VerifiedToken};
use crate::error::{AuthError, BindingProblem, TokenProblem};

/// The TLS client certificate of the connection a request came on, as a request
/// extension. Insert it where you accept TLS connections (tokio-rustls,
/// axum-server, hyper), for every request of the connection:
///
/// ```
/// use bearer_guard::sender::ClientCertificate;
///
/// // `der` is the end-entity certificate, e.g. from
/// // `tls_stream.get_ref().1.peer_certificates()` with tokio-rustls.
/// # let der: &[u8] = b"not really a certificate";
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientCertificate::from_der(der));
/// ```
///
/// The full server (a rustls acceptor that asks for client certificates, and
/// a hyper service that inserts the extension) is `tests/mtls.rs`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    thumbprint: [u8; 32],
}

impl ClientCertificate {
    /// The certificate as DER (what rustls' `peer_certificates()` hands out).
    /// Only its SHA-256 is kept.
    pub fn from_der(der: &[u8]) -> Self {
        let mut thumbprint = [0; 32];
        thumbprint.copy_from_slice(digest(&SHA256, der).as_ref());
        ClientCertificate { thumbprint }
    }

    /// A certificate known only by its SHA-256 thumbprint (e.g. from a TLS
    /// terminator that forwards the hash).
    pub fn from_sha256_thumbprint(thumbprint: [u8; 32]) -> Self {
        ClientCertificate { thumbprint }
    }

    /// The thumbprint as `x5t#S256` writes it: base64url without padding.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.thumbprint)
    }
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientCertificate")
            .field(&self.x5t_s256())
            .finish()
    }
}

/// Checks a verified token's certificate binding against the connection's
/// certificate: `Ok` for a token that is not certificate-bound, or whose
/// `cnf["x5t#S256"]` is `certificate`'s thumbprint; otherwise `invalid_token`.
///
/// The layer calls this on every request; a service that validates tokens by
/// other means (an ext-authz check with the certificate from the proxy, a
/// gateway that terminates TLS) calls it with its own certificate.
pub fn confirm_certificate(
    token: &VerifiedToken,
    certificate: Option<&ClientCertificate>,
) -> Result<(), AuthError> {
    let expected = match token.binding() {
        Binding::Certificate { x5t_s256 } | Binding::DpopAndCertificate { x5t_s256, .. } => {
            x5t_s256
        }
        _ => return Ok(()),
    };
    let refuse = |p| Err(AuthError::InvalidToken(TokenProblem::Binding(p)));
    let Some(certificate) = certificate else {
        return refuse(BindingProblem::CertificateMissing);
    };
    let actual = certificate.x5t_s256();
    // Both are public values; a plain comparison leaks nothing.
    if actual != expected {
        return refuse(BindingProblem::CertificateMismatch {
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_is_base64url_sha256_of_the_der() {
        // SHA-256 of the empty string.
        assert_eq!(
            ClientCertificate::from_der(b"").x5t_s256(),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        let c = ClientCertificate::from_der(b"x");
        let same = ClientCertificate::from_sha256_thumbprint(c.thumbprint);
        assert_eq!(c, same);
    }
}
