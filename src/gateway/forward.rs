//! What the upstream receives besides the decision's header changes: hop-by-hop
//! headers removed (RFC 9110 §7.6.1) and the `X-Forwarded-*` headers the
//! gateway's own, unless a trusted proxy is in front. Which client headers never
//! reach the upstream, and the claim headers, are the decision's
//! (`decision/headers.rs`).

use std::net::IpAddr;

use http::header::{
    CONNECTION, Entry, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};

use super::config::{ConfigError, ForwardConfig};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const CLOSE: HeaderName = HeaderName::from_static("close");

/// Removes the hop-by-hop headers, and those the `Connection` header names.
/// `Trailer` is end-to-end (RFC 9110 §6.6.2, not in §7.6.1's list) and kept:
/// hyper sends HTTP/1.1 trailer fields only when `Trailer` declares them.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection: keep-alive` (nginx and
    // Node send it on every kept-alive response): one pass over the names
    // present, noting which of the fixed few are there, then a removal of each
    // name found and no allocation unless `Connection` names other headers.
    let mut present = 0u8;
    for name in headers.keys() {
        present |= hop_by_hop_bit(name);
    }
    if present == 0 {
        return;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    if present & CONNECTION_BIT != 0
        && let Entry::Occupied(connection) = headers.entry(CONNECTION)
    {
        for value in connection.remove_entry_mult().1 {
            for option in value.as_bytes().split(|&b| b == b',') {
                match option.trim_ascii() {
                    // Hop-by-hop already, or (`close`) the usual option, which
                    // names a header only if one is called so. Anything not a
                    // header name names nothing.
                    o if o.eq_ignore_ascii_case(b"keep-alive") => {}
                    o if o.eq_ignore_ascii_case(b"close") => {
                        if present & CLOSE_BIT != 0 {
                            named.push(CLOSE);
                        }
                    }
                    o => named.extend(HeaderName::from_bytes(o).ok()),
                }
            }
        }
    }
    // Each name made only when it is there to remove.
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(PROXY_CONNECTION);
    }
    if present & TE_BIT != 0 {
        headers.remove(TE);
    }
    if present & TRANSFER_ENCODING_BIT != 0 {
        headers.remove(TRANSFER_ENCODING);
    }
    if present & UPGRADE_BIT != 0 {
        headers.remove(UPGRADE);
    }
    for name in named {
        headers.remove(name);
    }
}

const CONNECTION_BIT: u8 = 1;
const KEEP_ALIVE_BIT: u8 = 1 << 1;
const PROXY_CONNECTION_BIT: u8 = 1 << 2;
const TE_BIT: u8 = 1 << 3;
const TRANSFER_ENCODING_BIT: u8 = 1 << 4;
const UPGRADE_BIT: u8 = 1 << 5;
/// A header named `close`: not hop-by-hop, unless `Connection: close` says so.
const CLOSE_BIT: u8 = 1 << 6;

/// Which of RFC 9110 §7.6.1's hop-by-hop fields (and the non-standard
/// `Keep-Alive` and `Proxy-Connection`) `name` is, as a bit; `0` for the
/// others. A standard name is told apart from the two custom ones without
/// comparing text.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    if *name == CONNECTION {
        CONNECTION_BIT
    } else if *name == TE {
        TE_BIT
    } else if *name == TRANSFER_ENCODING {
        TRANSFER_ENCODING_BIT
    } else if *name == UPGRADE {
        UPGRADE_BIT
    } else if *name == KEEP_ALIVE {
        KEEP_ALIVE_BIT
    } else if *name == PROXY_CONNECTION {
        PROXY_CONNECTION_BIT
    } else if *name == CLOSE {
        CLOSE_BIT
    } else {
        0
    }
}

/// `ip` as text, appended to `out`: an IPv4 address digit by digit (the usual
/// case, a tenth of `Display`'s cost), an IPv6 one by `Display`.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    x_forwarded: bool,
    trust_forwarded: bool,
    /// `X-Forwarded-Proto`: the scheme of the listener.
    proto: HeaderValue,
}

impl Forwarding {
    /// `tls`: the listener terminates TLS.
    pub(super) fn from_config(c: &ForwardConfig, tls: bool) -> Result<Forwarding, ConfigError> {
        Ok(Forwarding {
            x_forwarded: c.x_forwarded,
            trust_forwarded: c.trust_forwarded,
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        })
    }

    /// `[forward] trust_forwarded`: the peer is a proxy whose headers count.
    pub(super) fn trust_forwarded(&self) -> bool {
        self.trust_forwarded
    }

    /// The `X-Forwarded-*` headers for a request from `peer`, whose target named
    /// `host` (the URI's authority or the `Host` header, as the client sent it).
    /// Called after the decision's removals: what is left of
    /// these headers is a trusted proxy's, so the peer's address is appended to
    /// its `X-Forwarded-For` list (several fields joined in order), and its
    /// `-Proto` and `-Host` win over ours.
    pub(super) fn set_forwarded_headers(
        &self,
        headers: &mut HeaderMap,
        peer: IpAddr,
        host: Option<HeaderValue>,
    ) {
        if !self.x_forwarded {
            return;
        }
        // Through entries: one lookup per header.
        let mut list: Vec<u8> = Vec::with_capacity(64);
        let forwarded_for = headers.entry(X_FORWARDED_FOR);
        if let Entry::Occupied(ref found) = forwarded_for {
            for value in found.iter() {
                let value = value.as_bytes().trim_ascii();
                if !value.is_empty() {
                    list.extend_from_slice(value);
                    list.extend_from_slice(b", ");
                }
            }
        }
        // An IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`.
        write_ip(&mut list, peer.to_canonical());
        // Joined from valid values and an address: cannot fail, but never panic.
        if let Ok(value) = HeaderValue::from_bytes(&list) {
            match forwarded_for {
                // Every earlier value is replaced by the joined list.
                Entry::Occupied(mut found) => drop(found.insert(value)),
                Entry::Vacant(empty) => drop(empty.insert(value)),
            }
        }
        if let Entry::Vacant(empty) = headers.entry(X_FORWARDED_PROTO) {
            empty.insert(self.proto.clone());
        }
        if let Some(host) = host
            && let Entry::Vacant(empty) = headers.entry(X_FORWARDED_HOST)
        {
            empty.insert(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::headers::ClaimHeaders;

    /// A header map of `pairs`, each appended (names may repeat).
    fn map(pairs: &[(&str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
        assert_eq!(
            h["trailer"], "x-checksum",
            "end-to-end: declares the trailers"
        );
    }

    #[test]
    fn every_copy_of_a_hop_by_hop_header_goes_and_names_may_repeat() {
        let mut h = map(&[
            ("connection", "TE, x-a"),
            ("connection", "x-a ,keep-alive"),
            ("te", "trailers"),
            ("te", "deflate"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("x-b", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-b"], "kept");

        // Nothing hop-by-hop: nothing touched.
        let mut h = map(&[("x-connection", "x-b"), ("x-b", "kept")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn the_hop_by_hop_bits_are_the_decisions_list_but_trailer() {
        use crate::decision::headers::HOP_BY_HOP;
        let mut seen = 0u8;
        for name in HOP_BY_HOP {
            let bit = hop_by_hop_bit(&HeaderName::from_static(name));
            if name == "trailer" {
                assert_eq!(bit, 0, "end-to-end");
            } else {
                assert_eq!(bit.count_ones(), 1, "{name}");
                assert_eq!(seen & bit, 0, "{name} shares a bit");
                seen |= bit;
            }
        }
        assert_eq!(hop_by_hop_bit(&HeaderName::from_static("x-te")), 0);
        assert_eq!(hop_by_hop_bit(&http::header::CONTENT_LENGTH), 0);
    }

    #[test]
    fn connection_close_removes_a_header_named_close_only() {
        let mut h = map(&[
            ("connection", "Close, KEEP-ALIVE"),
            ("close", "1"),
            ("keep-alive", "timeout=5"),
            ("x-b", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-b"], "kept");

        // `close` is an ordinary name unless the connection option says so.
        let mut h = map(&[("connection", "keep-alive"), ("close", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["close"], "1");

        // An option that is not a header name names nothing, and its
        // `Connection` still goes; the valid options beside it are honoured.
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_bytes(b"\xffx-b, x-c").expect("value"),
        );
        h.append("x-b", HeaderValue::from_static("kept"));
        h.append("x-c", HeaderValue::from_static("hop"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-b"], "kept");
    }

    /// The forwarding of `[forward]`, and its `trust_forwarded` for the decision.
    fn forwarding(x_forwarded: bool, trust_forwarded: bool) -> (Forwarding, bool) {
        let config = ForwardConfig {
            x_forwarded,
            trust_forwarded,
            ..ForwardConfig::default()
        };
        let f = Forwarding::from_config(&config, false).expect("forwarding");
        (f, trust_forwarded)
    }

    /// What the gateway does to the forwarding headers: the decision's removals
    /// (no claim headers configured), then its own.
    fn forwarded(
        (f, trust): &(Forwarding, bool),
        h: &mut HeaderMap,
        peer: IpAddr,
        host: Option<HeaderValue>,
    ) {
        for name in ClaimHeaders::default().untrusted(h, *trust) {
            h.remove(name);
        }
        f.set_forwarded_headers(h, peer, host);
    }

    /// A client's attempt at spoofing every forwarding header.
    fn spoofed() -> HeaderMap {
        map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.internal"),
            ("forwarded", "for=10.0.0.1"),
        ])
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "192.0.2.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().expect("ip");
            let mut out = b"x ".to_vec();
            write_ip(&mut out, ip);
            assert_eq!(out, format!("x {ip}").into_bytes());
        }
        let every_octet = (0..=255u8).map(|o| IpAddr::from([o, o, 0, 1]));
        for ip in every_octet {
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }

    #[test]
    fn x_forwarded_defaults_on_and_untrusted() {
        let c = ForwardConfig::default();
        assert!(c.x_forwarded && !c.trust_forwarded);
    }

    #[test]
    fn client_forwarding_headers_are_replaced_by_default() {
        let mut h = spoofed();
        let host = HeaderValue::from_static("api.example.com:8080");
        forwarded(
            &forwarding(true, false),
            &mut h,
            "192.0.2.7".parse().expect("ip"),
            Some(host),
        );
        assert_eq!(all(&h, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example.com:8080"]);
        assert!(h.get(http::header::FORWARDED).is_none());
    }

    #[test]
    fn a_trusted_proxy_list_is_appended_to_and_its_values_kept() {
        let mut h = spoofed();
        forwarded(
            &forwarding(true, true),
            &mut h,
            "::ffff:192.0.2.7".parse().expect("ip"),
            Some(HeaderValue::from_static("gw.local")),
        );
        assert_eq!(
            all(&h, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"],
            "fields joined in order, the peer (canonical IPv4) last"
        );
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["admin.internal"]);
        assert_eq!(all(&h, "forwarded"), ["for=10.0.0.1"]);

        let mut fresh = HeaderMap::new();
        forwarded(
            &forwarding(true, true),
            &mut fresh,
            "2001:db8::1".parse().expect("ip"),
            None,
        );
        assert_eq!(all(&fresh, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(all(&fresh, "x-forwarded-proto"), ["http"]);
        assert!(fresh.get("x-forwarded-host").is_none(), "no host, none set");
    }

    #[test]
    fn x_forwarded_proto_is_https_on_a_tls_listener() {
        let f = Forwarding::from_config(&ForwardConfig::default(), true).expect("forwarding");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        forwarded(&(f, false), &mut h, "192.0.2.7".parse().expect("ip"), None);
        assert_eq!(
            all(&h, "x-forwarded-proto"),
            ["https"],
            "the client's http replaced"
        );
    }

    #[test]
    fn x_forwarded_off_still_removes_untrusted_values() {
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut h = spoofed();
        forwarded(&forwarding(false, false), &mut h, peer, None);
        assert!(h.is_empty(), "{h:?}");
        let mut h = spoofed();
        forwarded(&forwarding(false, true), &mut h, peer, None);
        assert_eq!(h, spoofed(), "trusted and off: passed through untouched");
    }
}
