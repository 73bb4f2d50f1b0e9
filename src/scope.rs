//! The one scope-token grammar (RFC 6749 §3.3), for requirements, configuration and the CLI.

/// An RFC 6749 §3.3 scope-token: printable ASCII without space, `"` or `\`.
/// Configuration readers check with it so a [`Require`](crate::Require) never panics on input.
pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_are_printable_ascii_without_space_quote_or_backslash() {
        for ok in ["a", "orders:read", "!#[]~", "https://api.example.com/x"] {
            assert!(is_scope_token(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "caf\u{e9}", "a\tb", "\u{7f}"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
