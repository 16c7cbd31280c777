//! The HTTP rules that validation and translation share: which header names Envoy reserves,
//! which one carries the authority, and which status codes are real ones. One home for each,
//! so a VirtualService is validated by the same rule that later translates it.
//!
//! Owns only these predicates; it must not know Envoy types or how headers are emitted.

/// A pseudo-header or `host`: Envoy manages these itself, so header operations on them are
/// dropped (istiod's `isInternalHeader`).
pub fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// `:authority` or `host`: setting either rewrites the authority instead of adding a header.
pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Status codes with a registered reason phrase (as Go's `http.StatusText`): a `retryOn` entry
/// that parses as one of these is a retriable status code, anything else an Envoy condition.
const KNOWN_HTTP_STATUS_CODES: &[u16] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 510, 511,
];

/// The status code `s` names, when it is a known one (`"503"` → 503; `"5xx"`, `"600"` → none).
pub fn known_status_code(s: &str) -> Option<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|code| KNOWN_HTTP_STATUS_CODES.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_known_ones_only() {
        assert_eq!(known_status_code("503"), Some(503));
        assert_eq!(known_status_code("418"), Some(418));
        assert_eq!(known_status_code("599"), None);
        assert_eq!(known_status_code("5xx"), None);
        assert_eq!(known_status_code("-1"), None);
    }

    #[test]
    fn authority_is_internal_but_allowed_to_be_set() {
        for name in [":authority", "Host", "host"] {
            assert!(
                is_internal_header(name) && is_authority_header(name),
                "{name}"
            );
        }
        assert!(is_internal_header(":path") && !is_authority_header(":path"));
        assert!(!is_internal_header("x-user") && !is_authority_header("x-user"));
    }
}
