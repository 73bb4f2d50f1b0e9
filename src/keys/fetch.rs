//! One HTTP GET of a JWKS or metadata document, within limits: a timeout, a body
//! size cap (checked against `Content-Length` and while streaming), no redirects to
//! another host, and the caching headers the refresh policy needs.

use std::time::{Duration, SystemTime};

use headers::{CacheControl, Expires, HeaderMapExt};
use reqwest::Url;

/// The limits of one fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_keys: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: Duration::from_secs(5),
            max_bytes: 512 * 1024,
            max_keys: 100,
        }
    }
}

/// Why a fetch failed. The key store keeps its last-known-good keys on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
}

/// A fetched document and what its headers say about caching it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub body: Vec<u8>,
    /// `Some(ZERO)` for `no-store`/`no-cache`, the `max-age` if given.
    pub max_age: Option<Duration>,
    pub expires: Option<SystemTime>,
}

/// A client with the defaults the key store wants: rustls, the fetch timeout, and
/// redirects followed only within the same scheme, host and port (at most 3).
pub(crate) fn default_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first();
            let same_origin = first.is_some_and(|f| {
                f.scheme() == attempt.url().scheme()
                    && f.host_str() == attempt.url().host_str()
                    && f.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if same_origin && attempt.previous().len() <= 3 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!("bearer-guard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GETs `url` within `limits`. The whole exchange, body included, is bounded by
/// the timeout even when the user supplied a client without one.
pub(crate) async fn get(
    client: &reqwest::Client,
    url: &Url,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    match tokio::time::timeout(limits.timeout, get_inner(client, url, limits)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(limits.timeout)),
    }
}

async fn get_inner(
    client: &reqwest::Client,
    url: &Url,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    let mut response = client
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > limits.max_bytes as u64)
    {
        return Err(FetchError::TooLarge(limits.max_bytes));
    }
    let cache_control = response.headers().typed_get::<CacheControl>();
    let max_age = cache_control.and_then(|cc| {
        if cc.no_store() || cc.no_cache() {
            Some(Duration::ZERO)
        } else {
            cc.max_age()
        }
    });
    let expires = response
        .headers()
        .typed_get::<Expires>()
        .map(SystemTime::from);

    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(FetchError::TooLarge(limits.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        body,
        max_age,
        expires,
    })
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Transport("timed out".to_owned());
    }
    // The Display of reqwest errors names the URL and the cause, never a token.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    FetchError::Transport(msg)
}
