//! Request-path normalisation, before any route is matched.
//!
//! The gateway decides on the path it forwards, so the upstream must never see a
//! path that means something else than the one the route matched (`/public/../admin`,
//! `/orders/%2e%2e/admin`, `/orders%2fx`, `/orders/..;/admin`). [`normalize_path`]
//! turns the raw path of the request target into one canonical form, or refuses it:
//!
//! 1. the path must start with `/`;
//! 2. a raw `\` is refused (some servers read it as `/`), and so is a raw `;`:
//!    Tomcat, Jetty and Spring cut path parameters (`/orders/..;/admin` reaches
//!    `/admin` there, CVE-2020-1957), so a `;` anywhere in the path is refused
//!    rather than given one meaning here and another upstream;
//! 3. percent-encodings must be `%` and two hex digits; those of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded, every other one
//!    is kept with upper-case hex, except that these are refused:
//!    - an encoded `/` (`%2F`) or `\` (`%5C`): a separator hidden from the router;
//!    - an encoded `;` (`%3B`): a path parameter for stacks that decode first;
//!    - an encoded `%` that starts another encoding (`%25` and two hex digits, e.g.
//!      `%252e`): an upstream that decodes twice would see a different path;
//!    - NUL and the other control characters, encoded (`%00`-`%1F`, `%7F`) or not,
//!      and the C1 controls (U+0080-U+009F);
//!    - bytes that do not decode to UTF-8, such as the overlong `%C0%AE` (a `.` to
//!      lenient decoders) or a lone `%FF`;
//! 4. empty segments are dropped (`//` becomes `/`), `.` segments are removed, and
//!    `..` removes the segment before it; a `..` above the root is refused;
//! 5. a trailing `/` (or a final `.`/`..` segment) is kept as a trailing `/`.
//!
//! Decoding happens before step 4, so `%2e%2e` is a `..` segment like any other.
//! Refusals are answered with 400 and never forwarded.
//!
//! The normal form is what is forwarded. Routes are matched on its fully decoded
//! form ([`match_key`]), which is what an upstream that decodes the path once
//! routes on: `/caf%C3%A9` and `/café`, or `/a%21` and `/a!`, take the same route.

use std::fmt;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// `%2F` or `%5C`: a separator hidden from the router.
    EncodedSeparator,
    /// A control character: `%00`-`%1F`, `%7F`, or U+0080-U+009F.
    ControlCharacter,
    /// A raw `\`.
    Backslash,
    /// A `;` (raw or `%3B`): a path parameter to Tomcat, Jetty or Spring.
    PathParameter,
    /// `%25` followed by two hex digits: an encoding hidden under another.
    DoubleEncoding,
    /// Percent-encoded bytes that are not UTF-8 (overlong forms included).
    InvalidUtf8,
    /// A `..` segment that would climb above `/`.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with /",
            PathError::InvalidPercentEncoding => "invalid percent-encoding in the path",
            PathError::EncodedSeparator => "encoded / or \\ in the path",
            PathError::ControlCharacter => "control character in the path",
            PathError::Backslash => "\\ in the path",
            PathError::PathParameter => "; in the path (path parameters are not accepted)",
            PathError::DoubleEncoding => "double percent-encoding in the path",
            PathError::InvalidUtf8 => "the path does not decode to UTF-8",
            PathError::AboveRoot => "the path climbs above the root",
        })
    }
}

impl std::error::Error for PathError {}

/// The canonical form of a request path (without its query), per the
/// [module rules](self).
///
/// ```
/// use bearer_guard::gateway::path::{normalize_path, PathError};
///
/// assert_eq!(normalize_path("/orders/../admin").as_deref(), Ok("/admin"));
/// assert_eq!(normalize_path("/a//b/%7Euser").as_deref(), Ok("/a/b/~user"));
/// assert_eq!(normalize_path("/orders%2f7"), Err(PathError::EncodedSeparator));
/// ```
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(path.to_owned());
    }
    normalize_segments(path)
}

/// [`normalize_path`] the long way, segment by segment.
fn normalize_segments(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        let segment = decode_segment(raw)?;
        trailing_slash = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Whether `path` (starting with `/`) is its own normal form, found without
/// building it: printable ASCII without `%`, `\` or `;` (nothing to decode or
/// refuse), and no empty, `.` or `..` segment except a final empty one (the
/// trailing `/`, which is kept). Most request paths are.
fn is_normal(path: &str) -> bool {
    let plain = path
        .bytes()
        .all(|b| matches!(b, 0x21..=0x7e) && !matches!(b, b'%' | b'\\' | b';'));
    if !plain {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Decodes the unreserved percent-encodings of one segment (rules 2 and 3).
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    // The segment fully decoded, to check that it is UTF-8 without controls.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'%' => {
                let value = hex_pair(bytes, i + 1).ok_or(PathError::InvalidPercentEncoding)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b';' => return Err(PathError::PathParameter),
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(b as char);
                    }
                    b => {
                        out.push('%');
                        out.push_str(&format!("{b:02X}"));
                    }
                }
                decoded.push(value);
                i += 3;
            }
            _ => {
                // Copy the run up to the next special byte; `%`, `;` and `\` are
                // ASCII, so the run ends on a character boundary.
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'%' | b'\\' | b';'))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..end]);
                decoded.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
    // Checked on the output, where `%25%32%65` has become `%252e`.
    let out_bytes = out.as_bytes();
    if (0..out_bytes.len())
        .any(|i| out_bytes[i..].starts_with(b"%25") && hex_pair(out_bytes, i + 3).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| PathError::InvalidUtf8)?;
    if text.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlCharacter);
    }
    Ok(out)
}

/// The byte that the two hex digits at `bytes[at..at + 2]` encode.
fn hex_pair(bytes: &[u8], at: usize) -> Option<u8> {
    let digit = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    Some((digit(bytes.get(at))? * 16 + digit(bytes.get(at + 1))?) as u8)
}

/// What routes are matched on: a [`normalize_path`] result with every
/// percent-encoding decoded, i.e. the path an upstream that decodes once sees.
/// Normal forms never hold `%2F`, `%3B` or bytes that are not UTF-8, so decoding
/// cannot add a segment or fail; a path that is not in normal form is returned as is.
///
/// ```
/// use bearer_guard::gateway::path::{match_key, normalize_path};
///
/// let a = normalize_path("/caf%C3%A9/a%21").unwrap();
/// let b = normalize_path("/café/a!").unwrap();
/// assert_ne!(a, b);
/// assert_eq!(match_key(&a), match_key(&b));
/// assert_eq!(match_key(&a), "/café/a!");
/// ```
pub fn match_key(normal: &str) -> String {
    decoded(normal).into_owned()
}

/// [`match_key`], borrowed when there is nothing to decode.
pub(crate) fn decoded(normal: &str) -> std::borrow::Cow<'_, str> {
    if !normal.contains('%') {
        return std::borrow::Cow::Borrowed(normal);
    }
    let bytes = normal.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex_pair(bytes, i + 1)) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| normal.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize_path(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every path over a small alphabet (all of the special bytes among it),
    /// up to 5 bytes after the `/`: where the quick check says a path is its
    /// own normal form, the long way agrees; and the long way's results that
    /// are plain ASCII pass the quick check (it misses none it could take).
    #[test]
    fn the_quick_check_agrees_with_the_long_way() {
        const ALPHABET: &[u8] = b"/.a%2e;\\~ \x7f";
        let mut paths = vec![b"/".to_vec()];
        let mut frontier = paths.clone();
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for &b in ALPHABET {
                    let mut q = p.clone();
                    q.push(b);
                    next.push(q);
                }
            }
            paths.extend(next.iter().cloned());
            frontier = next;
        }
        let mut quick = 0;
        for bytes in &paths {
            let Ok(path) = std::str::from_utf8(bytes) else {
                continue;
            };
            let long = normalize_segments(path);
            if is_normal(path) {
                quick += 1;
                assert_eq!(long.as_deref(), Ok(path), "{path:?}");
            }
            if let Ok(normal) = &long {
                assert!(normalize_path(normal) == Ok(normal.clone()), "{normal:?}");
                if normal.bytes().all(|b| b.is_ascii_graphic()) && !normal.contains(['%', ';']) {
                    assert!(is_normal(normal), "{normal:?} missed by the quick check");
                }
            }
        }
        assert!(quick > 1000, "only {quick} paths took the quick check");
    }

    #[test]
    fn decoded_borrows_only_without_percent() {
        assert!(matches!(
            decoded("/a/b"),
            std::borrow::Cow::Borrowed("/a/b")
        ));
        assert_eq!(decoded("/caf%C3%A9"), "/café");
        assert_eq!(match_key("/a%21"), "/a!");
    }

    #[test]
    fn resolves_dot_dot_segments() {
        assert_eq!(ok("/orders/../admin"), "/admin");
        assert_eq!(ok("/a/b/../../c"), "/c");
        assert_eq!(ok("/a/./b/."), "/a/b/");
        assert_eq!(ok("/a/b/.."), "/a/");
    }

    #[test]
    fn encoded_dot_dot_cannot_escape_a_prefix() {
        assert_eq!(ok("/orders/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/orders/.%2e/admin"), "/admin");
        assert_eq!(normalize_path("/%2e%2e/admin"), Err(PathError::AboveRoot));
    }

    #[test]
    fn refuses_climbing_above_the_root() {
        assert_eq!(normalize_path("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/a/../.."), Err(PathError::AboveRoot));
    }

    #[test]
    fn collapses_empty_segments() {
        assert_eq!(ok("/a//b"), "/a/b");
        assert_eq!(ok("//a///b//"), "/a/b/");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn refuses_encoded_separators_and_controls() {
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%0ab"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%7f"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
    }

    #[test]
    fn refuses_invalid_percent_encoding() {
        for bad in ["/a%", "/a%2", "/a%zz", "/a%2g", "/%%41"] {
            assert_eq!(
                normalize_path(bad),
                Err(PathError::InvalidPercentEncoding),
                "{bad}"
            );
        }
    }

    #[test]
    fn decodes_only_unreserved_characters() {
        assert_eq!(ok("/%7Euser/%41%62%2D%5F"), "/~user/Ab-_");
        assert_eq!(ok("/a%20b/%3f/%e2%82%ac"), "/a%20b/%3F/%E2%82%AC");
        assert_eq!(ok("/caf\u{e9}"), "/caf\u{e9}");
    }

    #[test]
    fn refuses_path_parameters_raw_or_encoded() {
        for bad in [
            "/orders/..;/admin",
            "/a;b",
            "/a;",
            "/;/x",
            "/a%3bb",
            "/a%3B",
        ] {
            assert_eq!(normalize_path(bad), Err(PathError::PathParameter), "{bad}");
        }
    }

    #[test]
    fn refuses_an_encoding_hidden_under_an_encoded_percent() {
        for bad in ["/%252e%252e/admin", "/a%2541", "/a%252F", "/a%25%32%35"] {
            let got = normalize_path(bad);
            assert!(
                matches!(
                    got,
                    Err(PathError::DoubleEncoding | PathError::InvalidPercentEncoding)
                ),
                "{bad}: {got:?}"
            );
        }
        assert_eq!(
            normalize_path("/%252e%252e/admin"),
            Err(PathError::DoubleEncoding)
        );
        // A literal `%` that starts no encoding is data.
        assert_eq!(ok("/100%25"), "/100%25");
        assert_eq!(ok("/50%25off"), "/50%25off");
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8() {
        for bad in [
            "/%C0%AE%C0%AE/admin",
            "/%c0%ae",
            "/%FF",
            "/%E2%82",
            "/%ED%A0%80",
        ] {
            assert_eq!(normalize_path(bad), Err(PathError::InvalidUtf8), "{bad}");
        }
        assert_eq!(ok("/%E2%82%AC"), "/%E2%82%AC");
    }

    #[test]
    fn refuses_c1_controls_raw_or_encoded() {
        for bad in ["/a%C2%85", "/a%c2%9b", "/a\u{85}", "/\u{9b}x"] {
            assert_eq!(
                normalize_path(bad),
                Err(PathError::ControlCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn match_key_decodes_what_the_upstream_decodes() {
        assert_eq!(match_key("/caf%C3%A9"), "/café");
        assert_eq!(match_key("/a%20b/%3F"), "/a b/?");
        assert_eq!(match_key("/100%25"), "/100%");
        assert_eq!(match_key("/plain/path/"), "/plain/path/");
        // Equivalent spellings share one key.
        for (a, b) in [
            ("/caf%C3%A9", "/café"),
            ("/a%21", "/a!"),
            ("/x%40y", "/x@y"),
        ] {
            assert_eq!(match_key(&ok(a)), match_key(&ok(b)), "{a} vs {b}");
        }
    }

    #[test]
    fn requires_an_absolute_path() {
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
    }
}
