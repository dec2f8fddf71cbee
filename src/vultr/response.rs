//! Turns an HTTP outcome (status, headers, body, or a transport failure) into a
//! [`VultrError`]. Pure functions, so the mapping is tested without a network.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;

use super::error::VultrError;

/// Longest Retry-After honoured; a larger value is clamped so that a confused server
/// cannot park a deletion for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Longest server error text kept in a message (it ends up in conditions and Events).
const MAX_MESSAGE_CHARS: usize = 300;

/// `Ok(())` for 2xx, else the matching error.
pub(crate) fn check_status(
    route: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VultrError> {
    if status.is_success() {
        return Ok(());
    }
    let message = error_message(body);
    let retry_after = parse_retry_after(headers, SystemTime::now());
    Err(match status.as_u16() {
        401 => VultrError::Unauthorized { route },
        403 => VultrError::Forbidden { route, message },
        404 => VultrError::NotFound { route, message },
        429 => VultrError::RateLimited { route, retry_after },
        // 408 is the server saying it timed out waiting: as transient as our own timeout.
        code @ (408 | 500..=599) => VultrError::ApiUnavailable {
            route,
            status: Some(code),
            detail: format!("{}{}", status_text(status), suffix(message.as_deref())),
            retry_after,
        },
        code @ 400..=499 => VultrError::Rejected {
            route,
            status: code,
            message,
        },
        // Redirects are not followed (they could carry the key elsewhere); 1xx/3xx are
        // not part of the API.
        _ => VultrError::InvalidResponse {
            route,
            detail: format!("unexpected status {}", status_text(status)),
        },
    })
}

/// Decodes a 2xx JSON body.
pub(crate) fn decode<T: DeserializeOwned>(
    route: &'static str,
    body: &[u8],
) -> Result<T, VultrError> {
    serde_json::from_slice(body).map_err(|e| VultrError::InvalidResponse {
        route,
        detail: format!("the body is not the expected JSON: {e}"),
    })
}

/// Maps a reqwest failure (no usable answer) to `ApiUnavailable`.
pub(crate) fn transport_error(
    route: &'static str,
    err: reqwest::Error,
    timeout: Duration,
) -> VultrError {
    let detail = if err.is_connect() {
        format!("could not connect: {}", error_chain(&err.without_url()))
    } else if err.is_timeout() {
        format!(
            "timed out: no complete answer within {}",
            humantime::format_duration(timeout)
        )
    } else if err.is_body() || err.is_decode() {
        format!(
            "reading the answer failed: {}",
            error_chain(&err.without_url())
        )
    } else {
        format!("the request failed: {}", error_chain(&err.without_url()))
    };
    VultrError::ApiUnavailable {
        route,
        status: None,
        detail,
        retry_after: None,
    }
}

/// `Retry-After` as integer seconds or an HTTP date (RFC 9110 §10.2.3); `None` when absent
/// or unreadable. A date in the past means "now".
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Whole seconds too large for a u64: still a (very long) wait, not "no wait".
        MAX_RETRY_AFTER
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `error` field of a Vultr error body, if there is one.
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    let text = serde_json::from_slice::<ErrorBody>(body).ok()?.error?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(if text.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}…")
    } else {
        text.to_owned()
    })
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn suffix(message: Option<&str>) -> String {
    message.map(|m| format!(": {m}")).unwrap_or_default()
}

/// "outer: inner: innermost", since reqwest's own message hides the useful cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const ROUTE: &str = "GET /v2/policies";

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(code: u16, retry_after: Option<&str>, body: &str) -> Result<(), VultrError> {
        check_status(
            ROUTE,
            StatusCode::from_u16(code).unwrap(),
            &headers(retry_after),
            body.as_bytes(),
        )
    }

    #[test]
    fn success_statuses_pass() {
        for code in [200, 201, 204] {
            assert!(check(code, None, "").is_ok());
        }
    }

    #[test]
    fn statuses_map_to_reasons() {
        let cases = [
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "NotFound"),
            (429, "RateLimited"),
            (500, "ApiUnavailable"),
            (502, "ApiUnavailable"),
            (503, "ApiUnavailable"),
            (408, "ApiUnavailable"),
            (400, "Rejected"),
            (409, "Rejected"),
            (422, "Rejected"),
            (302, "InvalidResponse"),
        ];
        for (code, reason) in cases {
            let err = check(code, None, "").unwrap_err();
            assert_eq!(err.reason(), reason, "{code}");
            assert_eq!(
                err.is_transient(),
                matches!(reason, "RateLimited" | "ApiUnavailable"),
                "{code}"
            );
        }
    }

    #[test]
    fn rejected_carries_json_error_text() {
        let err = check(
            409,
            None,
            r#"{"error":"Policy already attached.","status":409}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            VultrError::Rejected {
                route: ROUTE,
                status: 409,
                message: Some("Policy already attached.".into())
            }
        );
        // Not JSON: no message, still a readable error.
        let err = check(400, None, "<html>nope</html>").unwrap_err();
        assert_eq!(err.to_string(), "Vultr rejected GET /v2/policies (400)");
    }

    #[test]
    fn rate_limited_surfaces_retry_after() {
        let err = check(429, Some("7"), "").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        let err = check(429, None, "").unwrap_err();
        assert_eq!(err.retry_after(), None);
        let err = check(503, Some("2"), "").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(err.status(), Some(503));
        assert!(err.to_string().contains("503 Service Unavailable"), "{err}");
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |v: &str| parse_retry_after(&headers(Some(v)), now);
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1000);
        let err = check(400, None, &format!(r#"{{"error":"{long}"}}"#)).unwrap_err();
        assert!(err.to_string().len() < 400);
    }

    #[test]
    fn decode_failure_is_invalid_response() {
        #[derive(Debug, serde::Deserialize)]
        struct X {
            #[allow(dead_code)]
            a: u32,
        }
        let err = decode::<X>(ROUTE, b"{").unwrap_err();
        assert_eq!(err.reason(), "InvalidResponse");
    }
}

/// Property tests: whatever Vultr (or a proxy in front of it) answers, classification
/// and decoding never panic and always give a typed result.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::vultr::arbitrary::{any_bytes, any_json, mutated};
    use crate::vultr::model::{Policy, User};
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    const ROUTE: &str = "GET /v2/policies";

    /// The reason a non-2xx status must map to.
    fn expected_reason(code: u16) -> &'static str {
        match code {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            429 => "RateLimited",
            408 | 500..=599 => "ApiUnavailable",
            400..=499 => "Rejected",
            _ => "InvalidResponse",
        }
    }

    /// Error bodies: anything, and Vultr's `{"error","status"}` with fields mutated.
    fn error_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any_bytes(),
            mutated(json!({"error": "Invalid policy.", "status": 400}))
                .prop_map(|v| v.to_string().into_bytes()),
        ]
    }

    /// Retry-After values: digits (any length), HTTP dates, and anything at all.
    fn retry_after_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[0-9]{1,40}".prop_map(String::into_bytes),
            " ?-?[0-9]{0,5}(\\.[0-9])? ?".prop_map(String::into_bytes),
            (0u64..20_000_000_000).prop_map(|secs| {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                httpdate::fmt_http_date(at).into_bytes()
            }),
            "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
                .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn headers_with(retry_after: Option<&[u8]>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(RETRY_AFTER, value);
        }
        headers
    }

    fn any_now() -> impl Strategy<Value = SystemTime> {
        (0u64..20_000_000_000).prop_map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_status_is_classified(
            code in 100u16..=999,
            body in error_body(),
            retry_after in proptest::option::of(retry_after_value()),
        ) {
            let status = StatusCode::from_u16(code).unwrap();
            let headers = headers_with(retry_after.as_deref());
            match check_status(ROUTE, status, &headers, &body) {
                Ok(()) => prop_assert!(status.is_success(), "{code} accepted"),
                Err(err) => {
                    prop_assert!(!status.is_success(), "{code} refused");
                    prop_assert_eq!(err.reason(), expected_reason(code));
                    prop_assert_eq!(
                        err.is_transient(),
                        matches!(code, 408 | 429 | 500..=599),
                        "{}", code
                    );
                    if let Some(wait) = err.retry_after() {
                        prop_assert!(wait <= MAX_RETRY_AFTER);
                    }
                    // Server text ends up in conditions and Events: bounded.
                    prop_assert!(err.to_string().chars().count() < 500, "{}", err);
                }
            }
        }

        #[test]
        fn retry_after_is_bounded_or_absent(value in retry_after_value(), now in any_now()) {
            let headers = headers_with(Some(&value));
            if let Some(wait) = parse_retry_after(&headers, now) {
                prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn whole_seconds_are_always_honoured(digits in "[0-9]{1,40}", now in any_now()) {
            // Any delay-seconds (RFC 9110), however long, is a wait: a huge one is clamped,
            // never ignored.
            let wait = parse_retry_after(&headers_with(Some(digits.as_bytes())), now);
            let expected = digits
                .parse::<u64>()
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
                .unwrap_or(MAX_RETRY_AFTER);
            prop_assert_eq!(wait, Some(expected));
        }

        #[test]
        fn error_text_is_trimmed_and_bounded(body in error_body()) {
            if let Some(text) = error_message(&body) {
                prop_assert!(!text.is_empty());
                prop_assert!(text.chars().count() <= MAX_MESSAGE_CHARS + 1);
            }
        }

        #[test]
        fn single_object_bodies_decode_or_are_invalid_responses(
            body in prop_oneof![
                any_bytes(),
                mutated(json!({"policy": {"id": "p1", "name": "dns-admin", "version": 1,
                    "is_system_policy": false, "policy_document": {"Statement": []}}}))
                    .prop_map(|v| v.to_string().into_bytes()),
                mutated(json!({"user": {"id": "u1", "email": "a@example.com", "name": "A",
                    "api_enabled": true, "service_user": false}}))
                    .prop_map(|v| v.to_string().into_bytes()),
            ],
        ) {
            // The envelopes of GET /v2/policies/{id} and GET /v2/users/{id}.
            #[derive(Debug, serde::Deserialize)]
            struct PolicyEnvelope {
                #[allow(dead_code)]
                policy: Policy,
            }
            #[derive(Debug, serde::Deserialize)]
            struct UserEnvelope {
                #[allow(dead_code)]
                user: User,
            }
            for result in [
                decode::<PolicyEnvelope>(ROUTE, &body).map(drop),
                decode::<UserEnvelope>(ROUTE, &body).map(drop),
                decode::<serde_json::Value>(ROUTE, &body).map(drop),
            ] {
                if let Err(err) = result {
                    prop_assert_eq!(err.reason(), "InvalidResponse");
                }
            }
        }

        #[test]
        fn json_error_bodies_never_panic(body in any_json()) {
            let bytes = body.to_string().into_bytes();
            let _ = error_message(&bytes);
        }
    }
}
