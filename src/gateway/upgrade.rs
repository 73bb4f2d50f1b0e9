//! WebSocket and other HTTP/1.1 protocol upgrades (RFC 9110 §7.8) through the
//! gateway.
//!
//! An upgrade request is decided like any other: its token is validated and its
//! route's requirements checked first, so a refused request gets its 401/403 and
//! never an upgrade, and the upstream never sees it. An allowed one is forwarded
//! with `Connection: upgrade` and its `Upgrade` header kept; when the upstream
//! answers `101 Switching Protocols` to one of the protocols the client offered,
//! the client gets the 101 and both upgraded connections are spliced both ways
//! until either side closes.
//!
//! Only the protocols of `[forward] upgrade_protocols` (default `["websocket"]`)
//! are passed on; the `Upgrade` header of any other request is removed like every
//! hop-by-hop header, and the request forwarded as a plain one. `h2c` and `HTTP/…`
//! can never be listed: after such an upgrade the client could send the upstream
//! further requests on the spliced connection that the gateway never decided on.
//!
//! An upgraded connection keeps its place under `max_connections`; the idle and
//! header timeouts no longer apply to it (its protocol has its own keep-alives,
//! such as WebSocket pings), nor do the body limits; a reload leaves it with the
//! upstream it was opened to; on shutdown it is given `shutdown_timeout_secs` to
//! end, then closed.
//!
//! Over HTTP/2 a WebSocket is an extended CONNECT (RFC 8441): `:method CONNECT`,
//! `:protocol websocket`, on a listener that advertises it (every gateway
//! listener does; the ext-authz check services do not). It
//! is decided as the `GET` of its HTTP/1.1 form (so a route decides a WebSocket
//! alike over either version, and a DPoP proof for it names `GET`), then sent to
//! the upstream as that HTTP/1.1 handshake (RFC 6455 §4.1) with the gateway's own
//! `Sec-WebSocket-Key`, whose `Sec-WebSocket-Accept` the gateway checks in the
//! client's stead; the client gets a `200` and its stream is spliced with the
//! upstream's upgraded connection. The stream counts as a request in flight on
//! its connection, so the idle timeout does not close a connection a WebSocket
//! is open on. Any other CONNECT (a forward-proxy tunnel, another `:protocol`,
//! a WebSocket when `websocket` is not listed, or one to an `h2c://` upstream,
//! which would need extended CONNECT of its own) is answered `501`.

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::config::ConfigError;
use super::forward::strip_hop_by_hop;
use super::listener::ConnTicket;

/// `[forward] upgrade_protocols`, checked: lowercase protocol names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpgradePolicy {
    protocols: Vec<String>,
}

impl UpgradePolicy {
    pub(crate) fn from_config(list: &[String]) -> Result<UpgradePolicy, ConfigError> {
        let mut protocols = Vec::with_capacity(list.len());
        for (i, name) in list.iter().enumerate() {
            let key = || format!("forward.upgrade_protocols[{i}]");
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(is_tchar) {
                return Err(ConfigError::at(
                    key(),
                    format!("{name:?} is not a protocol name (RFC 9110 token)"),
                ));
            }
            if lower == "h2c" || lower == "http" {
                return Err(ConfigError::at(
                    key(),
                    format!(
                        "{name:?} cannot be upgraded to: further requests on the upgraded \
                         connection would reach the upstream without being checked"
                    ),
                ));
            }
            protocols.push(lower);
        }
        Ok(UpgradePolicy { protocols })
    }

    /// The `Upgrade` value to forward for a request asking for an upgrade to
    /// allowed protocols only; `None` when it asks for none or for another one.
    fn requested(&self, version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
        if version != Version::HTTP_11 || self.protocols.is_empty() {
            return None;
        }
        let asks = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        let mut upgrade = headers.get_all(UPGRADE).iter();
        let (Some(value), None) = (upgrade.next(), upgrade.next()) else {
            return None;
        };
        if !asks {
            return None;
        }
        let offered = protocol_names(value)?;
        let allowed = !offered.is_empty() && offered.iter().all(|p| self.allows(p));
        allowed.then(|| value.clone())
    }

    fn allows(&self, protocol: &str) -> bool {
        self.protocols
            .iter()
            .any(|p| p.eq_ignore_ascii_case(protocol))
    }

    /// The method a `CONNECT` request is decided as: `GET` for an HTTP/2
    /// WebSocket (extended CONNECT, RFC 8441) this policy allows, else `Err`
    /// with why it is not served (answered `501`). Not called for other methods.
    pub(crate) fn connect_method<B>(&self, req: &Request<B>) -> Result<Method, &'static str> {
        match req.extensions().get::<Protocol>() {
            None => Err("CONNECT is not supported: this is a reverse proxy"),
            Some(p) if !p.as_str().eq_ignore_ascii_case("websocket") => {
                Err("this extended CONNECT protocol is not supported")
            }
            Some(_) if !self.allows("websocket") || req.version() != Version::HTTP_2 => {
                Err("WebSocket upgrades are not enabled")
            }
            Some(_) => Ok(Method::GET),
        }
    }
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        UpgradePolicy {
            protocols: vec!["websocket".to_owned()],
        }
    }
}

/// The protocol names of an `Upgrade` value (`websocket`, `foo/2` → `foo`), or
/// `None` when it is not a list of protocols.
fn protocol_names(value: &HeaderValue) -> Option<Vec<&str>> {
    let text = value.to_str().ok()?;
    let mut names = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, version) = match item.split_once('/') {
            Some((name, version)) => (name, Some(version)),
            None => (item, None),
        };
        let token = |t: &str| !t.is_empty() && t.bytes().all(is_tchar);
        if !token(name) || !version.is_none_or(token) {
            return None;
        }
        names.push(name);
    }
    Some(names)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// An allowed upgrade request on its way to the upstream.
pub(crate) struct Pending {
    protocol: HeaderValue,
    client: OnUpgrade,
    ticket: ConnTicket,
    form: Form,
}

/// How the client asked for its upgrade.
enum Form {
    /// An HTTP/1.1 `Upgrade`, forwarded as it came: the client checks the
    /// upstream's handshake answer itself.
    Http11,
    /// An HTTP/2 extended CONNECT for a WebSocket, forwarded as the HTTP/1.1
    /// handshake with this key, the gateway's own.
    Connect { key: HeaderValue },
}

/// Takes the client's side of the upgrade out of an allowed request asking for
/// one the policy permits (and its connection can be upgraded). An HTTP/2
/// WebSocket's request becomes its HTTP/1.1 form's `GET` here; a `CONNECT`
/// left as one when this returns `None` must not be forwarded.
pub(crate) fn take(policy: &UpgradePolicy, parts: &mut http::request::Parts) -> Option<Pending> {
    let (protocol, form) = if parts.method == Method::CONNECT {
        // Only a WebSocket the policy allows gets here (`connect_method`).
        let websocket = parts
            .extensions
            .get::<Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if !websocket || !policy.allows("websocket") {
            return None;
        }
        (
            HeaderValue::from_static("websocket"),
            Form::Connect { key: new_key() },
        )
    } else {
        (
            policy.requested(parts.version, &parts.headers)?,
            Form::Http11,
        )
    };
    if parts.extensions.get::<ConnTicket>().is_none()
        || parts.extensions.get::<OnUpgrade>().is_none()
    {
        return None;
    }
    let client = parts.extensions.remove::<OnUpgrade>()?;
    let ticket = parts.extensions.remove::<ConnTicket>()?;
    if let Form::Connect { .. } = form {
        parts.method = Method::GET;
        parts.extensions.remove::<Protocol>();
    }
    Some(Pending {
        protocol,
        client,
        ticket,
        form,
    })
}

/// A `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1). A nonce,
/// not a secret: were the system's generator to fail, the process-unique
/// request id serves.
fn new_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        // Its second half is a per-request counter, scrambled.
        let id = super::access::fresh_request_id();
        if let Some(tail) = id.as_bytes().get(16..32) {
            nonce.copy_from_slice(tail);
        }
    }
    // Base64 is always a valid header value.
    HeaderValue::try_from(STANDARD.encode(nonce))
        .unwrap_or_else(|_| HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with (RFC 6455 §4.2.2).
fn accept_for(key: &HeaderValue) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let joined = [key.as_bytes(), GUID].concat();
    STANDARD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &joined))
}

impl Pending {
    /// Whether the client asked by HTTP/2 extended CONNECT: it must get a `2xx`
    /// only once its stream is spliced.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self.form, Form::Connect { .. })
    }

    /// Puts `Connection: upgrade` and the `Upgrade` back on the request to the
    /// upstream, after its hop-by-hop headers were removed (and, for an HTTP/2
    /// WebSocket, the gateway's `Sec-WebSocket-Key`: RFC 8441 has none).
    pub(crate) fn restore_headers(&self, headers: &mut HeaderMap) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, self.protocol.clone());
        if let Form::Connect { key } = &self.form {
            headers.insert(SEC_WEBSOCKET_KEY, key.clone());
        }
    }

    /// The upstream's `101`: checked (it must name a protocol the client offered),
    /// then both connections are spliced in a task of their own and the client's
    /// `101` returned. `Err` says why the upstream's answer cannot be relayed.
    pub(crate) fn splice(
        self,
        mut response: Response<Incoming>,
    ) -> Result<Response<()>, &'static str> {
        let chosen = {
            let mut values = response.headers().get_all(UPGRADE).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.clone(),
                _ => return Err("a 101 without one Upgrade header"),
            }
        };
        let offered = protocol_names(&self.protocol).unwrap_or_default();
        let picked = protocol_names(&chosen).unwrap_or_default();
        let fits = picked.len() == 1 && offered.iter().any(|o| o.eq_ignore_ascii_case(picked[0]));
        if !fits {
            return Err("a 101 to a protocol the client did not offer");
        }
        if let Form::Connect { key } = &self.form {
            let mut accepts = response.headers().get_all(SEC_WEBSOCKET_ACCEPT).iter();
            let answered = match (accepts.next(), accepts.next()) {
                (Some(v), None) => v.as_bytes() == accept_for(key).as_bytes(),
                _ => false,
            };
            if !answered {
                return Err("a 101 without the Sec-WebSocket-Accept of the gateway's key");
            }
        }
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        debug_assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
        match self.form {
            Form::Http11 => {
                parts
                    .headers
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(UPGRADE, chosen);
                parts.version = Version::HTTP_11;
            }
            Form::Connect { .. } => {
                // RFC 8441 §5: a 2xx opens the tunnel; the handshake's own
                // headers (`Sec-WebSocket-Protocol`, `-Extensions`) stay.
                parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
                parts.status = StatusCode::OK;
                parts.version = Version::HTTP_2;
            }
        }
        let Pending {
            client, mut ticket, ..
        } = self;
        // An HTTP/2 stream stays in flight on its connection while it is open.
        let in_flight = ticket.tunnel_in_flight();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let relay = async {
                let (client, upstream) = tokio::try_join!(client, upstream)?;
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(copied)
            };
            tokio::select! {
                relayed = relay => match relayed {
                    Ok((up, down)) => tracing::debug!(
                        bytes_to_upstream = up,
                        bytes_to_client = down,
                        "upgraded connection closed"
                    ),
                    Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
                },
                () = ticket.shutdown_over() => {
                    tracing::debug!("upgraded connection closed by the shutdown");
                }
            }
        });
        Ok(Response::from_parts(parts, ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> Result<UpgradePolicy, ConfigError> {
        UpgradePolicy::from_config(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn smuggling_protocols_are_refused_in_the_configuration() {
        for bad in ["h2c", "H2C", "http", "HTTP"] {
            let e = policy(&[bad]).expect_err(bad);
            assert_eq!(e.key(), Some("forward.upgrade_protocols[0]"));
        }
        assert!(policy(&["web socket"]).is_err());
        assert!(policy(&[""]).is_err());
        assert_eq!(
            policy(&["WebSocket"]).expect("ok"),
            UpgradePolicy::default()
        );
    }

    #[test]
    fn the_websocket_accept_is_rfc_6455s() {
        // RFC 6455 §1.3's worked example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let nonce = STANDARD.decode(a.as_bytes()).expect("base64");
        assert_eq!(nonce.len(), 16);
    }

    fn connect_request(protocol: Option<&'static str>, version: Version) -> Request<()> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(version)
            .uri("https://gw.example/ws")
            .body(())
            .expect("request");
        if let Some(p) = protocol {
            req.extensions_mut().insert(Protocol::from_static(p));
        }
        req
    }

    #[test]
    fn only_an_allowed_http2_websocket_connect_is_served() {
        let p = UpgradePolicy::default();
        let ws = connect_request(Some("websocket"), Version::HTTP_2);
        assert_eq!(p.connect_method(&ws), Ok(Method::GET));
        assert_eq!(
            p.connect_method(&connect_request(Some("WebSocket"), Version::HTTP_2)),
            Ok(Method::GET)
        );
        for refused in [
            connect_request(None, Version::HTTP_2),
            connect_request(None, Version::HTTP_11),
            connect_request(Some("connect-udp"), Version::HTTP_2),
            connect_request(Some("websocket"), Version::HTTP_11),
        ] {
            assert!(p.connect_method(&refused).is_err(), "{refused:?}");
        }
        let off = policy(&[]).expect("empty list");
        assert!(off.connect_method(&ws).is_err());
        let other = policy(&["foo"]).expect("foo");
        assert!(other.connect_method(&ws).is_err());
    }

    #[test]
    fn only_allowed_http11_upgrades_are_passed_on() {
        let p = UpgradePolicy::default();
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            p.requested(Version::HTTP_11, &ws)
                .as_ref()
                .map(HeaderValue::as_bytes),
            Some(&b"websocket"[..])
        );
        assert!(p.requested(Version::HTTP_10, &ws).is_none());
        assert!(p.requested(Version::HTTP_2, &ws).is_none());
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(p.requested(Version::HTTP_11, &no_connection).is_none());
        for other in [
            "h2c",
            "websocket, h2c",
            "HTTP/2.0",
            "foo",
            "websocket/",
            ",",
        ] {
            let h = headers(&[("connection", "upgrade"), ("upgrade", other)]);
            assert!(p.requested(Version::HTTP_11, &h).is_none(), "{other}");
        }
        let twice = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "websocket"),
        ]);
        assert!(p.requested(Version::HTTP_11, &twice).is_none());
        let off = policy(&[]).expect("empty list");
        assert!(off.requested(Version::HTTP_11, &ws).is_none());
    }
}
