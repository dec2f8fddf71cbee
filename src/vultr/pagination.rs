//! Vultr cursor pagination: `?per_page=&cursor=`, next cursor in `meta.links.next`,
//! empty or missing on the last page.

use std::collections::HashSet;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::VultrError;

/// Page size asked for: Vultr's maximum, to keep request counts (and the rate limit) low.
pub const PER_PAGE: u32 = 500;

/// Upper bound on pages followed in one listing (250 000 objects at 500 a page), so that
/// a server that never ends a listing cannot keep a reconcile busy forever.
pub const MAX_PAGES: usize = 500;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor of the following page; `None` on the last one.
    pub next: Option<String>,
}

/// Reads the array under `key` (missing or `null` is an error: the listing did not say
/// what it holds) and the next cursor.
pub(crate) fn parse_page<T: DeserializeOwned>(body: &Value, key: &str) -> Result<Page<T>, String> {
    let items = match body.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| T::deserialize(item).map_err(|e| format!("an entry of `{key}`: {e}")))
            .collect::<Result<Vec<T>, String>>()?,
        Some(Value::Null) => Vec::new(),
        Some(_) => return Err(format!("`{key}` is not an array")),
        None => return Err(format!("the body has no `{key}` field")),
    };
    Ok(Page {
        items,
        next: next_cursor(body),
    })
}

/// `meta.links.next` if it is a non-empty string.
pub(crate) fn next_cursor(body: &Value) -> Option<String> {
    body.pointer("/meta/links/next")
        .and_then(Value::as_str)
        .filter(|next| !next.is_empty())
        .map(str::to_owned)
}

/// Calls `fetch` with `None`, then with each next cursor, until a page has none.
/// A repeated cursor or more than [`MAX_PAGES`] pages is an `InvalidResponse`.
pub(crate) async fn collect_pages<T, F, Fut>(
    route: &'static str,
    mut fetch: F,
) -> Result<Vec<T>, VultrError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, VultrError>>,
{
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let page = fetch(cursor.take()).await?;
        all.extend(page.items);
        match page.next {
            None => return Ok(all),
            Some(next) => {
                if !seen.insert(next.clone()) {
                    return Err(VultrError::InvalidResponse {
                        route,
                        detail: format!("pagination cursor {next:?} came back a second time"),
                    });
                }
                cursor = Some(next);
            }
        }
    }
    Err(VultrError::InvalidResponse {
        route,
        detail: format!("the listing did not end after {MAX_PAGES} pages"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    #[test]
    fn parses_items_and_cursor() {
        let body = json!({"things":[1,2],"meta":{"total":4,"links":{"next":"c2","prev":""}}});
        let page: Page<u32> = parse_page(&body, "things").unwrap();
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.as_deref(), Some("c2"));
    }

    #[test]
    fn empty_or_missing_next_ends_the_listing() {
        for body in [
            json!({"things":[],"meta":{"links":{"next":""}}}),
            json!({"things":[],"meta":{"links":{}}}),
            json!({"things":[],"meta":{}}),
            json!({"things":[]}),
            json!({"things":null,"meta":{"links":{"next":null}}}),
        ] {
            let page: Page<u32> = parse_page(&body, "things").unwrap();
            assert_eq!(page.next, None, "{body}");
        }
    }

    #[test]
    fn missing_key_or_bad_entry_is_an_error() {
        assert!(parse_page::<u32>(&json!({"other":[]}), "things").is_err());
        assert!(parse_page::<u32>(&json!({"things":{}}), "things").is_err());
        assert!(parse_page::<u32>(&json!({"things":["x"]}), "things").is_err());
    }

    #[tokio::test]
    async fn follows_cursors_across_pages() {
        let calls = Mutex::new(Vec::new());
        let all = collect_pages("GET /x", |cursor: Option<String>| {
            calls.lock().unwrap().push(cursor.clone());
            async move {
                Ok(match cursor.as_deref() {
                    None => Page {
                        items: vec![1, 2],
                        next: Some("b".into()),
                    },
                    Some("b") => Page {
                        items: vec![3],
                        next: Some("c".into()),
                    },
                    Some("c") => Page {
                        items: vec![4],
                        next: None,
                    },
                    Some(other) => panic!("unexpected cursor {other}"),
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(all, vec![1, 2, 3, 4]);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![None, Some("b".to_owned()), Some("c".to_owned())]
        );
    }

    #[tokio::test]
    async fn cursor_loop_is_detected() {
        let err = collect_pages("GET /x", |_cursor| async {
            Ok(Page {
                items: vec![0u8],
                next: Some("same".into()),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidResponse");
        assert!(err.to_string().contains("second time"), "{err}");
    }

    #[tokio::test]
    async fn endless_listing_is_cut_off() {
        let mut n = 0u64;
        let err = collect_pages("GET /x", |_cursor| {
            n += 1;
            let next = n.to_string();
            async move {
                Ok(Page::<u8> {
                    items: vec![],
                    next: Some(next),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("did not end"), "{err}");
        assert_eq!(n, MAX_PAGES as u64);
    }

    #[tokio::test]
    async fn errors_stop_the_listing() {
        let err = collect_pages::<u8, _, _>("GET /x", |_cursor| async {
            Err(VultrError::Unauthorized { route: "GET /x" })
        })
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "Unauthorized");
    }
}
