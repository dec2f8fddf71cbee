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

/// Property tests: any page body (bytes or JSON, well formed or not) gives a page or an
/// error, never a panic, and a page never holds more or fewer entries than the body.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::vultr::arbitrary::{any_bytes, any_json, mutated};
    use crate::vultr::model::{Group, Policy, User};
    use crate::vultr::response::decode;
    use proptest::prelude::*;
    use serde_json::json;

    const ROUTE: &str = "GET /v2/users";

    fn users_page() -> Value {
        json!({
            "users": [
                {"id": "u1", "email": "a@example.com", "name": "A", "api_enabled": true,
                 "service_user": false},
                {"id": "u2", "email": "b@example.com"}
            ],
            "meta": {"total": 3, "links": {"next": "c2", "prev": ""}}
        })
    }

    fn groups_page() -> Value {
        json!({
            "groups": [{"id": "g1", "display_name": "ops", "description": "d",
                        "date_created": "2024-01-01T00:00:00+00:00"}],
            "meta": {"total": 1, "links": {"next": "", "prev": ""}}
        })
    }

    fn policies_page() -> Value {
        json!({
            "policies": [{"id": "p1", "name": "dns-admin", "description": "d",
                          "policy_document": {"Version": "2024-01-01", "Statement": []},
                          "version": 2, "is_system_policy": false,
                          "date_created": "2024-01-01T00:00:00+00:00"}],
            "meta": {"total": 1, "links": {"next": "c9", "prev": ""}}
        })
    }

    /// A page body: anything, or one of the three listings with fields mutated.
    fn page_body() -> impl Strategy<Value = Value> {
        prop_oneof![
            any_json(),
            mutated(users_page()),
            mutated(groups_page()),
            mutated(policies_page()),
        ]
    }

    /// Checks one parse against the body it came from.
    fn check<T: DeserializeOwned>(body: &Value, key: &str) -> Result<(), TestCaseError> {
        if let Ok(page) = parse_page::<T>(body, key) {
            let expected = body.get(key).and_then(Value::as_array).map_or(0, Vec::len);
            prop_assert_eq!(page.items.len(), expected, "{}", body);
            let next = body.pointer("/meta/links/next").and_then(Value::as_str);
            prop_assert_eq!(page.next.as_deref(), next.filter(|n| !n.is_empty()));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn listing_pages_parse_or_fail_cleanly(body in page_body()) {
            check::<User>(&body, "users")?;
            check::<Group>(&body, "groups")?;
            check::<Policy>(&body, "policies")?;
        }

        #[test]
        fn page_bytes_decode_or_are_invalid_responses(bytes in any_bytes()) {
            // What `get_page` + `list_all` do with a 2xx body.
            let result = decode::<Value>(ROUTE, &bytes).and_then(|body| {
                parse_page::<User>(&body, "users")
                    .map_err(|detail| VultrError::InvalidResponse { route: ROUTE, detail })
            });
            if let Err(err) = result {
                prop_assert_eq!(err.reason(), "InvalidResponse");
            }
        }

        #[test]
        fn cursors_are_non_empty_strings(body in page_body()) {
            if let Some(next) = next_cursor(&body) {
                prop_assert!(!next.is_empty());
            }
        }

        #[test]
        fn any_cursor_sequence_ends(
            cursors in prop::collection::vec(proptest::option::of("[a-d]{1,2}"), 0..30),
        ) {
            // Page i answers cursors[i] as its next (None past the end): the listing must
            // end, at the first missing cursor or at the first repeated one.
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut calls = 0usize;
            let result = runtime.block_on(collect_pages(ROUTE, |_cursor| {
                let next = cursors.get(calls).cloned().flatten();
                calls += 1;
                async move { Ok(Page { items: vec![()], next }) }
            }));
            let mut seen = HashSet::new();
            let mut expected_calls = cursors.len() + 1;
            let mut repeated = false;
            for (i, c) in cursors.iter().enumerate() {
                match c {
                    None => {
                        expected_calls = i + 1;
                        break;
                    }
                    Some(c) if !seen.insert(c) => {
                        expected_calls = i + 1;
                        repeated = true;
                        break;
                    }
                    Some(_) => {}
                }
            }
            prop_assert_eq!(calls, expected_calls);
            match result {
                Ok(items) => {
                    prop_assert!(!repeated);
                    prop_assert_eq!(items.len(), calls);
                }
                Err(err) => {
                    prop_assert!(repeated, "{}", err);
                    prop_assert_eq!(err.reason(), "InvalidResponse");
                }
            }
        }
    }
}
