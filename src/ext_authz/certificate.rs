//! The client certificate a proxy forwards with a check: Envoy's
//! `attributes.source.certificate` and nginx's `$ssl_client_escaped_cert` (URL-encoded
//! PEM), Caddy's `{http.request.tls.client.certificate_der_base64}` and Traefik's
//! `X-Forwarded-Tls-Client-Cert` (base64 DER, URL-encoded by Traefik, the leaf
//! first when a chain is sent). Only the leaf's SHA-256 is kept
//! ([`ClientCertificate`]); the proxy verified the chain.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::sender::ClientCertificate;

/// The certificate of a forwarded value: `Ok(None)` for an empty value (the
/// client sent none), an error for anything that is not one of the encodings.
pub(crate) fn parse(value: &[u8]) -> Result<Option<ClientCertificate>, &'static str> {
    let decoded: Vec<u8> = percent_decode(value).collect();
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| "the client certificate is not URL-encoded PEM or base64 DER")?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    let der = if text.contains("-----BEGIN") {
        CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|_| "the client certificate's PEM holds no valid CERTIFICATE")?
            .to_vec()
    } else {
        // Traefik separates a chain's certificates with commas, the leaf first.
        let leaf = text.split(',').next().unwrap_or_default();
        let compact: String = leaf.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        STANDARD
            .decode(compact)
            .map_err(|_| "the client certificate is not URL-encoded PEM or base64 DER")?
    };
    // An X.509 certificate is a DER SEQUENCE: a cheap check that this is one.
    if der.len() < 16 || der[0] != 0x30 {
        return Err("the client certificate is not a DER certificate");
    }
    Ok(Some(ClientCertificate::from_der(&der)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    /// A certificate-shaped DER value: only its SHA-256 matters here.
    fn der() -> Vec<u8> {
        let mut der = vec![0x30, 0x82, 0x01, 0x00];
        der.extend((0..=255u8).cycle().take(256));
        der
    }

    fn pem(der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn every_proxy_encoding_gives_the_same_thumbprint() {
        let der = der();
        let expected = ClientCertificate::from_der(&der);
        let url_pem = utf8_percent_encode(&pem(&der), NON_ALPHANUMERIC).to_string();
        let b64 = STANDARD.encode(&der);
        let traefik = utf8_percent_encode(&format!("{b64},{b64}"), NON_ALPHANUMERIC).to_string();
        for value in [url_pem.as_str(), pem(&der).as_str(), &b64, &traefik] {
            assert_eq!(
                parse(value.as_bytes()),
                Ok(Some(expected.clone())),
                "{value}"
            );
        }
    }

    #[test]
    fn an_empty_value_is_no_certificate() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"  "), Ok(None));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bad in [
            &b"%ff%fe"[..],
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            b"not*base64",
            b"AAAA",
            b"%",
            b"-----BEGIN",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
