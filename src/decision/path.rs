//! Request-path normalisation, before any route is matched.
//!
//! The gateway decides on the path it forwards, so the upstream must never see a
//! path that means something else than the one the route matched (`/public/../admin`,
//! `/orders/%2e%2e/admin`, `/orders%2fx`). [`normalize_path`] turns the raw path of
//! the request target into one canonical form, or refuses it:
//!
//! 1. the path must start with `/`;
//! 2. a raw `\` is refused (some servers read it as `/`);
//! 3. percent-encodings must be `%` and two hex digits; those of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded, every other one
//!    is kept with upper-case hex, except that an encoded `/` (`%2F`), `\` (`%5C`),
//!    NUL or other control character (`%00`-`%1F`, `%7F`) is refused;
//! 4. empty segments are dropped (`//` becomes `/`), `.` segments are removed, and
//!    `..` removes the segment before it; a `..` above the root is refused;
//! 5. a trailing `/` (or a final `.`/`..` segment) is kept as a trailing `/`.
//!
//! Decoding happens before step 4, so `%2e%2e` is a `..` segment like any other.
//! Refusals are answered with 400 and never forwarded.

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
    /// `%00`-`%1F` or `%7F`.
    ControlCharacter,
    /// A raw `\`.
    Backslash,
    /// A `..` segment that would climb above `/`.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with /",
            PathError::InvalidPercentEncoding => "invalid percent-encoding in the path",
            PathError::EncodedSeparator => "encoded / or \\ in the path",
            PathError::ControlCharacter => "encoded control character in the path",
            PathError::Backslash => "\\ in the path",
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

/// Decodes the unreserved percent-encodings of one segment (rule 3).
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = |b: Option<&u8>| {
                    b.and_then(|b| (*b as char).to_digit(16))
                        .ok_or(PathError::InvalidPercentEncoding)
                };
                let value = (hex(bytes.get(i + 1))? * 16 + hex(bytes.get(i + 2))?) as u8;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(b as char);
                    }
                    b => {
                        out.push('%');
                        out.push_str(&format!("{b:02X}"));
                    }
                }
                i += 3;
            }
            _ => {
                // Copy the run up to the next special byte; `%` and `\` are ASCII,
                // so the run ends on a character boundary.
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'%' | b'\\'))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize_path(path).unwrap_or_else(|e| panic!("{path}: {e}"))
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
    fn requires_an_absolute_path() {
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
    }
}
