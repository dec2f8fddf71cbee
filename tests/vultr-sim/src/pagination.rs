//! Cursor pagination as the contract describes it.
//!
//! `per_page` defaults to 100; values above 500 are clamped to 500 (lenient, like
//! the tolerant client the contract asks for); 0 or a non-number is a 400. Cursors
//! are opaque: URL-safe base64 of `offset:N`. A cursor that does not decode is a
//! 400; one past the end yields an empty page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::error::ApiError;

pub(crate) const DEFAULT_PER_PAGE: usize = 100;
pub(crate) const MAX_PER_PAGE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) offset: usize,
    pub(crate) per_page: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Meta {
    pub(crate) total: usize,
    pub(crate) links: Links,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Links {
    pub(crate) next: String,
    pub(crate) prev: String,
}

pub(crate) fn encode_cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("offset:")?.parse().ok()
}

impl PageRequest {
    /// Reads `per_page` and `cursor` from a raw query string; other keys are ignored.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut page = PageRequest {
            offset: 0,
            per_page: DEFAULT_PER_PAGE,
        };
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (key, value) in pairs {
            match key.as_ref() {
                "per_page" => {
                    let n: usize = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ApiError::bad_request("Invalid per_page."))?;
                    page.per_page = n.min(MAX_PER_PAGE);
                }
                "cursor" if !value.is_empty() => {
                    page.offset = decode_cursor(&value)
                        .ok_or_else(|| ApiError::bad_request("Invalid cursor."))?;
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// The index range to serve out of `total` items, and the meta block for it.
    pub(crate) fn window(&self, total: usize) -> (std::ops::Range<usize>, Meta) {
        let start = self.offset.min(total);
        let end = start.saturating_add(self.per_page).min(total);
        let next = if end < total {
            encode_cursor(end)
        } else {
            String::new()
        };
        let prev = if start > 0 {
            encode_cursor(start.saturating_sub(self.per_page))
        } else {
            String::new()
        };
        (
            start..end,
            Meta {
                total,
                links: Links { next, prev },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let c = encode_cursor(300);
        assert_eq!(decode_cursor(&c), Some(300));
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("offset:x")), None);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            PageRequest::from_query(None).unwrap(),
            PageRequest {
                offset: 0,
                per_page: 100
            }
        );
        let q = format!("per_page=1000&cursor={}", encode_cursor(7));
        assert_eq!(
            PageRequest::from_query(Some(&q)).unwrap(),
            PageRequest {
                offset: 7,
                per_page: 500
            }
        );
        assert!(PageRequest::from_query(Some("per_page=0")).is_err());
        assert!(PageRequest::from_query(Some("per_page=abc")).is_err());
        assert!(PageRequest::from_query(Some("cursor=%%%")).is_err());
    }

    #[test]
    fn windows() {
        let window = |offset, per_page| PageRequest { offset, per_page }.window(25);
        let (r, m) = window(0, 10);
        assert_eq!(r, 0..10);
        assert_eq!(m.links.prev, "");
        assert_eq!(decode_cursor(&m.links.next), Some(10));
        let (r, m) = window(20, 10);
        assert_eq!(r, 20..25);
        assert_eq!(m.links.next, "");
        assert_eq!(decode_cursor(&m.links.prev), Some(10));
        let (r, m) = window(99, 10);
        assert!(r.is_empty());
        assert_eq!(m.total, 25);
    }
}
