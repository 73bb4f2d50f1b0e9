//! JWS signature algorithms (RFC 7518 §3, RFC 8037): the crate's one table of
//! their names, and the bit set the validator checks membership in.

use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm (RFC 7518 §3, RFC 8037).
///
/// `none` is not representable: a token that names it is always rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512 (RFC 7518 §3.4).
    ES512,
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// HMAC with SHA-256: only with an explicitly configured shared secret.
    HS256,
    /// HMAC with SHA-384: only with an explicitly configured shared secret.
    HS384,
    /// HMAC with SHA-512: only with an explicitly configured shared secret.
    HS512,
}

impl Algorithm {
    /// The asymmetric algorithms accepted by default: the first ten of [`ALL`](Self::ALL).
    pub const DEFAULT: [Algorithm; 10] = {
        let mut default = [Algorithm::RS256; 10];
        let mut i = 0;
        while i < default.len() {
            default[i] = Algorithm::ALL[i];
            i += 1;
        }
        default
    };

    /// Every algorithm this crate knows, asymmetric ones first.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// The name used in the JOSE `alg` header: the crate's one table of names.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    /// Whether this is an HMAC (shared-secret) algorithm.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// Whether this is an RSA algorithm (PKCS#1 v1.5 or PSS).
    pub(crate) fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    }

    /// A small bit for bit-set membership.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Algorithm::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown or unsupported JWS algorithm {0:?}")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Exact, case-sensitive names as in RFC 7518 (`"RS256"`, `"EdDSA"`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The names live in one table, `as_str`; parsing is its inverse.
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// A set of algorithms, as a bit set: membership is one AND on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgorithmSet(u16);

impl AlgorithmSet {
    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        AlgorithmSet(iter.into_iter().fold(0, |acc, a| acc | a.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
        }
        // Exact names only: no case folding, no `none`, no padding.
        for bad in ["rs256", "none", "None", " RS256", "RS256 ", "", "ES256K"] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad:?}");
        }
        let set: AlgorithmSet = Algorithm::DEFAULT.into_iter().collect();
        assert!(set.contains(Algorithm::ES256));
        assert!(!set.contains(Algorithm::HS256));
        assert!(set.contains(Algorithm::ES512));
        assert_eq!(set.iter().count(), 10);
    }
}
