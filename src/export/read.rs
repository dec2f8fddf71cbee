//! Reading grants from Vultr: one paged listing per [`ListingSource`], a few at a time (the
//! client's limiter paces them), each retried on a transient failure (429, 5xx,
//! timeouts) after Vultr's `Retry-After` or a short backoff: an export is one pass, so
//! one blip should not fail it.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::domain::{Grant, ListingSource, Subject};
use crate::vultr::{VultrClient, VultrError};

/// Listings read at once; the limiter decides the rate, this only bounds the backlog.
const CONCURRENT: usize = 4;
/// Tries per request before a transient failure is final.
const ATTEMPTS: u32 = 3;

/// Every grant the sources list (a pair listed twice comes twice; callers dedupe).
pub(crate) async fn grants(
    vultr: &VultrClient,
    sources: &[ListingSource],
) -> Result<Vec<Grant>, VultrError> {
    let pages: Vec<Vec<Grant>> = futures::stream::iter(sources)
        .map(|source| with_retries(move || read(vultr, source)))
        .buffer_unordered(CONCURRENT)
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

/// The grants one source lists: a policy's users or groups, or a role's policies.
async fn read(vultr: &VultrClient, source: &ListingSource) -> Result<Vec<Grant>, VultrError> {
    let ids = vultr.listed_ids(source).await?;
    Ok(ids
        .into_iter()
        .map(|id| match source {
            ListingSource::PolicyUsers(policy_id) => Grant {
                policy_id: policy_id.clone(),
                subject: Subject::User(id),
            },
            ListingSource::PolicyGroups(policy_id) => Grant {
                policy_id: policy_id.clone(),
                subject: Subject::Group(id),
            },
            ListingSource::RolePolicies(role_id) => Grant {
                policy_id: id,
                subject: Subject::Role(role_id.clone()),
            },
        })
        .collect())
}

/// `call`, again after a transient failure, at most [`ATTEMPTS`] times in all.
pub(crate) async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, VultrError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VultrError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                // Longer than the directory's memory of a failed walk (1 s), so a
                // retried walk really asks again.
                let wait = err
                    .retry_after()
                    .unwrap_or(Duration::from_secs(2u64.pow(attempt)));
                tracing::warn!(error = %err, "retrying in {}", humantime::format_duration(wait));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> VultrError {
        VultrError::ApiUnavailable {
            route: "GET /v2/policies",
            status: Some(503),
            detail: "down".into(),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_then_final() {
        let calls = AtomicU32::new(0);
        let ok = with_retries(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(ok, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let err = with_retries(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(unavailable())
        })
        .await;
        assert_eq!(err, Err(unavailable()));
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_key_is_not_retried() {
        let calls = AtomicU32::new(0);
        let err = with_retries(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(VultrError::Unauthorized {
                route: "GET /v2/users",
            })
        })
        .await;
        assert_eq!(err.unwrap_err().reason(), "Unauthorized");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
