//! One key ready to verify signatures: parsed once, when its key set is loaded.

use aws_lc_rs::hmac;
use aws_lc_rs::signature::ParsedPublicKey;

use crate::error::TokenProblem;
use crate::jws::Algorithm;

/// A key ready to verify signatures.
pub(crate) struct VerifyingKey {
    pub(super) kid: Option<Box<str>>,
    /// The JWK's `issuer` member (Entra ID publishes one): binds the key to tokens
    /// of that issuer only.
    pub(super) issuer: Option<Box<str>>,
    /// The JWK as it was published (re-serialized, so white space does not
    /// matter): two fetches that publish the same JWK keep the same
    /// `Arc<VerifyingKey>`, so tokens it verified stay cached across refreshes.
    /// Empty for keys that did not come from a JWKS.
    pub(super) jwk: Box<[u8]>,
    pub(super) material: Material,
}

pub(super) enum Material {
    /// One parsed key per RSA algorithm the key may be used with.
    Rsa(Vec<(Algorithm, ParsedPublicKey)>),
    /// ES256 on P-256, ES384 on P-384, ES512 on P-521: the curve fixes the algorithm.
    Ec(Algorithm, ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    Hmac(Vec<(Algorithm, hmac::Key)>),
}

impl VerifyingKey {
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        match &self.material {
            Material::Rsa(keys) => keys.iter().any(|(a, _)| *a == alg),
            Material::Ec(a, _) => *a == alg,
            Material::Ed25519(_) => alg == Algorithm::EdDSA,
            Material::Hmac(keys) => keys.iter().any(|(a, _)| *a == alg),
        }
    }

    pub(super) fn describe(&self) -> String {
        match &self.material {
            Material::Rsa(keys) => {
                let algs: Vec<_> = keys.iter().map(|(a, _)| a.as_str()).collect();
                format!("RSA ({})", algs.join(", "))
            }
            Material::Ec(a, _) => format!("EC ({a})"),
            Material::Ed25519(_) => "OKP Ed25519 (EdDSA)".to_owned(),
            Material::Hmac(_) => "a shared secret".to_owned(),
        }
    }

    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), TokenProblem> {
        let ok = match &self.material {
            Material::Rsa(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| k.verify_sig(message, sig).is_ok()),
            Material::Ec(a, k) => (*a == alg).then(|| k.verify_sig(message, sig).is_ok()),
            Material::Ed25519(k) => {
                (alg == Algorithm::EdDSA).then(|| k.verify_sig(message, sig).is_ok())
            }
            Material::Hmac(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| hmac::verify(k, message, sig).is_ok()),
        };
        match ok {
            Some(true) => Ok(()),
            Some(false) => Err(TokenProblem::BadSignature),
            None => Err(TokenProblem::KeyAlgorithmMismatch {
                kid: self.kid.as_deref().map(str::to_owned),
                key: self.describe(),
                alg,
            }),
        }
    }
}
