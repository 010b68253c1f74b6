//! `http.route` for a request path: the first matching `OTEL_EBPF_ROUTES_PATTERNS` pattern, or
//! (by default) a low-cardinality heuristic that replaces id-like path segments with `*`.
//!
//! The heuristic collapses a segment to `*` when it is:
//! - all digits (`/users/42`),
//! - a UUID (`/orders/3f0c1a9e-8b7d-4c2e-9f1a-0123456789ab`),
//! - hexadecimal of 8 or more characters containing a digit (`/blobs/5f2b9c0e`),
//! - only digits and the separators `-._:~,` with at least one digit (`/days/2024-06-01`),
//! - 16 or more characters mixing letters and digits (tokens like `/s/aB3dE5fG7hJ9kL1m`),
//! - longer than 64 characters.
//!
//! Words (`/users`, `/api`, `/v1`, `/index.html`) are kept, so routes stay readable.

use crate::{Error, Result};

/// What `http.route` is for a path no pattern matches (`OTEL_EBPF_ROUTES_UNMATCHED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unmatched {
    /// Collapse id-like segments to `*`.
    #[default]
    Heuristic,
    /// The path as-is (may be high cardinality).
    Path,
    /// `/**` for every unmatched path.
    Wildcard,
    /// No `http.route` at all.
    Unset,
}

impl Unmatched {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "heuristic" => Some(Self::Heuristic),
            "path" => Some(Self::Path),
            "wildcard" => Some(Self::Wildcard),
            "unset" => Some(Self::Unset),
            _ => None,
        }
    }
}

/// One segment of a route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`, `:name` or `*`: exactly one non-empty path segment.
    Any,
}

/// A route pattern such as `/users/{id}/orders/:order`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
}

impl RoutePattern {
    /// Parses one pattern; it must start with `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.starts_with('/') {
            return Err(format!("route pattern {text:?} must start with '/'"));
        }
        let segments = split_segments(text)
            .map(|segment| {
                let is_param = (segment.starts_with('{') && segment.ends_with('}'))
                    || segment.starts_with(':')
                    || segment == "*";
                if is_param {
                    Segment::Any
                } else {
                    Segment::Literal(segment.to_owned())
                }
            })
            .collect();
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The pattern as configured: what `http.route` is set to when it matches.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = split_segments(path);
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(literal), Some(part)) if literal == part => {}
                (Segment::Any, Some(part)) if !part.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// Splits a path into segments, ignoring the leading and one trailing `/` so that `/a/b/` and
/// `/a/b` match the same patterns.
fn split_segments(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    trimmed.split('/').filter(move |_| !trimmed.is_empty())
}

/// Maps request paths to `http.route`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteMatcher {
    patterns: Vec<RoutePattern>,
    unmatched: Unmatched,
}

impl RouteMatcher {
    pub fn new(patterns: Vec<RoutePattern>, unmatched: Unmatched) -> Self {
        Self {
            patterns,
            unmatched,
        }
    }

    /// Parses a comma-separated pattern list (`OTEL_EBPF_ROUTES_PATTERNS`).
    pub fn parse_patterns(var: &'static str, list: &str) -> Result<Vec<RoutePattern>> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| RoutePattern::parse(item).map_err(|message| Error::Config { var, message }))
            .collect()
    }

    /// The route of `path` (no query string), or `None` when routes are unset for it. A route
    /// made from the path (the heuristic) is written into `scratch`, a buffer the caller reuses,
    /// so that routing a request allocates nothing.
    pub fn route<'a>(&'a self, path: &'a str, scratch: &'a mut String) -> Option<&'a str> {
        if let Some(pattern) = self.patterns.iter().find(|p| p.matches(path)) {
            return Some(&pattern.text);
        }
        match self.unmatched {
            Unmatched::Heuristic => {
                scratch.clear();
                write_heuristic_route(path, scratch);
                Some(scratch)
            }
            Unmatched::Path => Some(path),
            Unmatched::Wildcard => Some("/**"),
            Unmatched::Unset => None,
        }
    }
}

/// Appends the heuristic route of a path to `route`: id-like segments replaced by `*` (see the
/// module docs).
pub fn write_heuristic_route(path: &str, route: &mut String) {
    if !path.starts_with('/') {
        // `*` (OPTIONS) or an authority (CONNECT): nothing to collapse but also nothing to keep.
        route.push(if path == "*" { '*' } else { '/' });
        return;
    }
    for segment in path[1..].split('/') {
        route.push('/');
        route.push_str(if is_id_like(segment) { "*" } else { segment });
    }
}

fn is_id_like(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    bytes.len() > 64
        || digits == bytes.len()
        || is_uuid(bytes)
        || (bytes.len() >= 8 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit))
        || (digits > 0
            && bytes
                .iter()
                .all(|b| b.is_ascii_digit() || b"-._:~,".contains(b)))
        || (bytes.len() >= 16
            && digits > 0
            && letters > 0
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heuristic_route(path: &str) -> String {
        let mut route = String::new();
        write_heuristic_route(path, &mut route);
        route
    }

    fn route(matcher: &RouteMatcher, path: &str) -> Option<String> {
        matcher.route(path, &mut String::new()).map(str::to_owned)
    }

    #[test]
    fn heuristic_table() {
        let table = [
            ("/", "/"),
            ("", "/"),
            ("*", "*"),
            ("/users", "/users"),
            ("/users/", "/users/"),
            ("/users/42", "/users/*"),
            ("/users/42/orders/7", "/users/*/orders/*"),
            ("/v1/items", "/v1/items"),
            ("/api/v2/items/0", "/api/v2/items/*"),
            ("/orders/3f0c1a9e-8b7d-4c2e-9f1a-0123456789ab", "/orders/*"),
            (
                "/orders/3F0C1A9E-8B7D-4C2E-9F1A-0123456789AB/x",
                "/orders/*/x",
            ),
            ("/blobs/5f2b9c0e", "/blobs/*"),
            ("/blobs/deadbeef", "/blobs/deadbeef"),
            ("/blobs/5f2b9c0", "/blobs/5f2b9c0"),
            ("/days/2024-06-01", "/days/*"),
            ("/pkg/1.2.3", "/pkg/*"),
            ("/s/aB3dE5fG7hJ9kL1m", "/s/*"),
            ("/s/aB3dE5fG7hJ9kL1", "/s/aB3dE5fG7hJ9kL1"),
            ("/s/abcdefghijklmnopqrst", "/s/abcdefghijklmnopqrst"),
            ("/index.html", "/index.html"),
            ("/static/app.3f2a9c1b.js", "/static/app.3f2a9c1b.js"),
            ("/a//b", "/a//b"),
            (&format!("/x/{}", "a".repeat(65)), "/x/*"),
        ];
        for (path, want) in table {
            assert_eq!(heuristic_route(path), want, "path {path:?}");
        }
    }

    #[test]
    fn patterns_take_precedence_in_order() {
        let patterns =
            RouteMatcher::parse_patterns("V", "/users/{id}, /users/:id/orders/*,/users/me")
                .unwrap_or_default();
        assert_eq!(patterns.len(), 3);
        let matcher = RouteMatcher::new(patterns, Unmatched::Heuristic);
        let table = [
            ("/users/42", Some("/users/{id}")),
            ("/users/42/", Some("/users/{id}")),
            ("/users/me", Some("/users/{id}")),
            ("/users/42/orders/9", Some("/users/:id/orders/*")),
            ("/users", Some("/users")),
            ("/users/42/orders", Some("/users/*/orders")),
            ("/users//orders/9", Some("/users//orders/*")),
        ];
        for (path, want) in table {
            assert_eq!(route(&matcher, path).as_deref(), want, "path {path:?}");
        }
    }

    #[test]
    fn unmatched_modes() {
        let table = [
            (Unmatched::Heuristic, Some("/a/*")),
            (Unmatched::Path, Some("/a/17")),
            (Unmatched::Wildcard, Some("/**")),
            (Unmatched::Unset, None),
        ];
        for (mode, want) in table {
            let matcher = RouteMatcher::new(Vec::new(), mode);
            assert_eq!(route(&matcher, "/a/17").as_deref(), want, "{mode:?}");
        }
        assert_eq!(Unmatched::parse(" Wildcard "), Some(Unmatched::Wildcard));
        assert_eq!(Unmatched::parse("nope"), None);
    }

    #[test]
    fn invalid_pattern_names_the_variable() {
        let error = RouteMatcher::parse_patterns("OTEL_EBPF_ROUTES_PATTERNS", "/ok,users/{id}");
        let message = error.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("OTEL_EBPF_ROUTES_PATTERNS") && message.contains("users/{id}"),
            "{message}"
        );
    }
}
