//! Follows the API key file while the operator runs: a rotated Secret (the kubelet swaps
//! the volume's `..data` symlink) takes effect at the next poll, without a restart.
//! Polling rather than inotify: a symlink swap in a parent directory is easy to miss
//! with watches, and one small read every few seconds costs nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::api_key::{ApiKey, ApiKeyError};
use super::client::VultrClient;

/// Shortest poll period honoured, whatever the flag says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What one read of the key file means.
#[derive(Debug)]
pub(crate) enum Poll {
    /// Nothing new: same content as the last read, or a new content with the same key
    /// (e.g. only a trailing newline changed).
    Unchanged,
    /// A different, valid key: use it from now on.
    Rotated(ApiKey),
    /// The file changed to something unusable (unreadable, empty, not a single token):
    /// keep the key in use. Reported once per change, not at every poll.
    Refused(ApiKeyError),
}

/// What the last poll saw; compared so that one change is acted on (and logged) once.
/// No `Debug`: the content is the key.
#[derive(PartialEq, Eq)]
enum Seen {
    Content(String),
    Unreadable(std::io::ErrorKind),
}

/// The decision part of the follower, without I/O: remembers the key in use and what
/// the file held at the last poll. No `Debug`: it holds the file's content.
pub(crate) struct KeyFile {
    path: PathBuf,
    current: ApiKey,
    last: Option<Seen>,
}

impl KeyFile {
    /// `current` is the key the client was built with (read from `path` at start).
    pub(crate) fn new(path: impl Into<PathBuf>, current: ApiKey) -> Self {
        Self {
            path: path.into(),
            current,
            last: None,
        }
    }

    /// Decides what a read of the file means; a `Rotated` key becomes the current one.
    pub(crate) fn observe(&mut self, read: std::io::Result<String>) -> Poll {
        let seen = match &read {
            Ok(text) => Seen::Content(text.clone()),
            Err(err) => Seen::Unreadable(err.kind()),
        };
        if self.last.as_ref() == Some(&seen) {
            return Poll::Unchanged;
        }
        self.last = Some(seen);
        let key = read
            .map_err(|source| ApiKeyError::ReadFile {
                path: self.path.clone(),
                source,
            })
            .and_then(|text| ApiKey::new(text, &format!("file {}", self.path.display())));
        match key {
            Ok(key) if key == self.current => Poll::Unchanged,
            Ok(key) => {
                self.current = key.clone();
                Poll::Rotated(key)
            }
            Err(err) => Poll::Refused(err),
        }
    }
}

/// Polls `path` every `interval` and swaps the client's key when the file holds a new
/// valid one. Runs until the runtime stops. Logs name the file, never the key.
pub(crate) async fn follow_key_file(
    client: VultrClient,
    path: PathBuf,
    current: ApiKey,
    interval: Duration,
) {
    let mut file = KeyFile::new(path.clone(), current);
    let mut ticker = tokio::time::interval(interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the key was read at start-up just before.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        // A few bytes from a tmpfs Secret volume: a blocking read is cheaper than a
        // thread hand-off.
        let read = std::fs::read_to_string(&path);
        apply(&client, &path, file.observe(read));
    }
}

fn apply(client: &VultrClient, path: &Path, poll: Poll) {
    match poll {
        Poll::Unchanged => {}
        Poll::Rotated(key) => match client.set_api_key(&key) {
            Ok(()) => info!(
                path = %path.display(),
                "the Vultr API key file changed: later requests use the new key"
            ),
            Err(err) => warn!(
                path = %path.display(),
                error = %err,
                "the Vultr API key file changed but its key is unusable: keeping the previous key"
            ),
        },
        Poll::Refused(err) => warn!(
            path = %path.display(),
            error = %err,
            "the Vultr API key file changed but holds no usable key: keeping the previous key"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    const OLD: &str = "OLDKEY-0a1b2c3d4e5f";
    const NEW: &str = "NEWKEY-9f8e7d6c5b4a";

    fn key(k: &str) -> ApiKey {
        ApiKey::new(k, "a test").unwrap()
    }

    fn file() -> KeyFile {
        KeyFile::new("/etc/vultr/api-key", key(OLD))
    }

    fn ok(text: &str) -> std::io::Result<String> {
        Ok(text.to_owned())
    }

    #[test]
    fn same_key_is_unchanged_even_with_other_whitespace() {
        let mut f = file();
        assert!(matches!(
            f.observe(ok(&format!("{OLD}\n"))),
            Poll::Unchanged
        ));
        assert!(matches!(f.observe(ok(OLD)), Poll::Unchanged));
        assert!(matches!(f.observe(ok(OLD)), Poll::Unchanged));
    }

    #[test]
    fn a_new_key_rotates_once() {
        let mut f = file();
        match f.observe(ok(&format!("{NEW}\n"))) {
            Poll::Rotated(k) => assert_eq!(k.expose(), NEW),
            other => panic!("expected a rotation, got {other:?}"),
        }
        assert!(matches!(
            f.observe(ok(&format!("{NEW}\n"))),
            Poll::Unchanged
        ));
        // Rotating back is a rotation too.
        assert!(matches!(f.observe(ok(OLD)), Poll::Rotated(k) if k.expose() == OLD));
    }

    #[test]
    fn unusable_content_keeps_the_key_and_is_reported_once() {
        let mut f = file();
        for bad in ["", "  \n", "two words"] {
            let poll = f.observe(ok(bad));
            let Poll::Refused(err) = poll else {
                panic!("{bad:?}: expected Refused, got {poll:?}");
            };
            assert!(err.to_string().contains("/etc/vultr/api-key"), "{err}");
            assert!(
                matches!(f.observe(ok(bad)), Poll::Unchanged),
                "{bad:?} reported twice"
            );
        }
        // The old key is still the current one: it coming back is no rotation.
        assert!(matches!(f.observe(ok(OLD)), Poll::Unchanged));
        assert!(matches!(f.observe(ok(NEW)), Poll::Rotated(_)));
    }

    #[test]
    fn unreadable_file_keeps_the_key_and_is_reported_once() {
        let mut f = file();
        let gone = || Err(Error::new(ErrorKind::NotFound, "gone"));
        assert!(matches!(
            f.observe(gone()),
            Poll::Refused(ApiKeyError::ReadFile { .. })
        ));
        assert!(matches!(f.observe(gone()), Poll::Unchanged));
        assert!(matches!(f.observe(ok(NEW)), Poll::Rotated(_)));
    }

    #[test]
    fn refusals_never_show_the_content() {
        let mut f = file();
        let secret_like = format!("{NEW} {NEW}");
        let Poll::Refused(err) = f.observe(ok(&secret_like)) else {
            panic!("expected Refused");
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(NEW), "{shown}");
    }

    #[tokio::test]
    async fn a_running_client_follows_the_file() {
        use crate::vultr::fake::{FakeVultr, Reply, TEST_KEY};
        let fake = FakeVultr::start(|_| Reply::json(200, serde_json::json!({"users": []}))).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        std::fs::write(&path, format!("{TEST_KEY}\n")).unwrap();
        let client = fake.client();
        let task = tokio::spawn(follow_key_file(
            client.clone(),
            path.clone(),
            key(TEST_KEY),
            Duration::from_millis(100),
        ));
        let sent_key = || async {
            client.list::<crate::vultr::User>().await.unwrap();
            fake.requests()
                .last()
                .unwrap()
                .authorization
                .clone()
                .unwrap()
        };
        assert_eq!(sent_key().await, format!("Bearer {TEST_KEY}"));

        std::fs::write(&path, format!("{NEW}\n")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sent_key().await != format!("Bearer {NEW}") {
            assert!(tokio::time::Instant::now() < deadline, "key never swapped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Unusable content: the key in use stays.
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(sent_key().await, format!("Bearer {NEW}"));
        task.abort();
    }
}
