//! The proxies whose "original request" headers the HTTP check believes: IP
//! addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`), loopback by default.
//!
//! Parsed with std's `IpAddr` and a prefix length: a CIDR is two numbers, which
//! does not earn a crate.

use std::net::IpAddr;

use crate::decision::ConfigError;

/// A set of trusted proxy networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// `127.0.0.0/8` and `::1/128`: the proxy runs on the same machine.
    pub fn loopback() -> Self {
        TrustedProxies {
            nets: vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
            ],
        }
    }

    /// No peer is trusted: the HTTP check refuses every original-request header
    /// (Envoy's HTTP mode, which sends the request itself, still works).
    pub fn none() -> Self {
        TrustedProxies { nets: Vec::new() }
    }

    /// Parses `trusted_proxies`: each entry an address or `address/prefix`, the
    /// address being the network's first (`10.1.0.0/16`, not `10.1.2.3/16`).
    /// Errors name the entry (`trusted_proxies[1]`).
    ///
    /// ```
    /// use bearer_guard::ext_authz::TrustedProxies;
    ///
    /// let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "2001:db8::7".into()]).unwrap();
    /// assert!(t.contains("10.20.30.40".parse().unwrap()));
    /// assert!(t.contains("::ffff:10.0.0.1".parse().unwrap()));
    /// assert!(!t.contains("127.0.0.1".parse().unwrap()));
    /// assert!(TrustedProxies::parse(&["10.0.0.1/8".into()]).is_err());
    /// ```
    pub fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        let mut nets = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let bad = |problem: String| ConfigError::at(format!("trusted_proxies[{i}]"), problem);
            let (addr, prefix) = match entry.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (entry.as_str(), None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| bad(format!("{entry:?} is not an IP address or CIDR block")))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    // Canonical digits only: no `+8`, no `08`.
                    Ok(n) if n <= max && n.to_string() == p => n,
                    _ => return Err(bad(format!("{entry:?}: the prefix length must be 0-{max}"))),
                },
            };
            if masked(addr, prefix) != addr {
                return Err(bad(format!(
                    "{entry:?} has host bits set: write {}/{prefix}",
                    masked(addr, prefix)
                )));
            }
            nets.push((addr, prefix));
        }
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|&(net, prefix)| net.is_ipv4() == ip.is_ipv4() && masked(ip, prefix) == net)
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn loopback_is_the_default_trust() {
        let t = TrustedProxies::loopback();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("127.255.0.9")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(!t.contains(ip("10.0.0.1")));
        assert!(!t.contains(ip("::2")));
        assert!(!TrustedProxies::none().contains(ip("127.0.0.1")));
    }

    #[test]
    fn cidr_blocks_match_their_prefix_only() {
        let t = TrustedProxies::parse(&[
            "192.168.4.0/22".into(),
            "fd00::/8".into(),
            "0.0.0.0/0".into(),
        ])
        .expect("parse");
        assert!(t.contains(ip("192.168.7.255")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(t.contains(ip("8.8.8.8")), "0.0.0.0/0 is every IPv4 address");
        let exact = TrustedProxies::parse(&["10.0.0.7".into()]).expect("parse");
        assert!(exact.contains(ip("10.0.0.7")));
        assert!(!exact.contains(ip("10.0.0.8")));
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
            "10.0.0.0/08",
        ] {
            let e = TrustedProxies::parse(&["127.0.0.1".into(), bad.into()]).expect_err(bad);
            assert_eq!(e.key(), Some("trusted_proxies[1]"), "{bad}");
        }
    }
}
