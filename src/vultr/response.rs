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
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
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
