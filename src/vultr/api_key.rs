//! The Vultr API key, kept out of every log line, event, status and error message.

use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable read by [`ApiKey::from_env`].
pub const API_KEY_ENV: &str = "VULTR_API_KEY";

/// A Vultr API key. `Debug` and `Display` redact it; only [`ApiKey::expose`] gives it out.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Why no usable API key could be loaded. Messages name the source, never the key.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("environment variable {API_KEY_ENV} is not set (or not valid UTF-8)")]
    MissingEnv,
    #[error("could not read the Vultr API key file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Vultr API key from {origin} is empty")]
    Empty { origin: String },
    #[error(
        "the Vultr API key from {origin} contains whitespace or non-printable characters; \
         it must be a single token"
    )]
    InvalidCharacters { origin: String },
}

impl ApiKey {
    /// Wraps a key given in code; `origin` only labels error messages (e.g. "a test").
    pub(crate) fn new(key: impl Into<String>, origin: &str) -> Result<Self, ApiKeyError> {
        // Surrounding whitespace is an artefact of how files and env vars are written
        // (`echo key > file`), never part of a key.
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(ApiKeyError::Empty {
                origin: origin.to_owned(),
            });
        }
        // Anything else would make an invalid Authorization header much later, with
        // a less helpful error.
        if !trimmed.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiKeyError::InvalidCharacters {
                origin: origin.to_owned(),
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Reads the key from `VULTR_API_KEY`.
    pub(crate) fn from_env() -> Result<Self, ApiKeyError> {
        let value = std::env::var(API_KEY_ENV).map_err(|_| ApiKeyError::MissingEnv)?;
        Self::new(value, &format!("environment variable {API_KEY_ENV}"))
    }

    /// Reads the key from a file (a mounted Secret), ignoring surrounding whitespace.
    pub(crate) fn from_file(path: impl AsRef<Path>) -> Result<Self, ApiKeyError> {
        let path = path.as_ref();
        let value = std::fs::read_to_string(path).map_err(|source| ApiKeyError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::new(value, &format!("file {}", path.display()))
    }

    /// The secret itself. Call it only to build the Authorization header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A temporary file holding `contents`.
    fn key_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    const SECRET: &str = "SECRETKEY0123456789ABCDEFGHIJKLMN";

    #[test]
    fn debug_and_display_redact() {
        let key = ApiKey::new(SECRET, "a test").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key}"), "ApiKey(<redacted>)");
        assert!(!format!("{:#?}", Some(&key)).contains(SECRET));
        assert_eq!(key.expose(), SECRET);
    }

    #[test]
    fn from_file_trims_trailing_newline() {
        let file = key_file(&format!("{SECRET}\n"));
        let key = ApiKey::from_file(file.path()).unwrap();
        assert_eq!(key.expose(), SECRET);
    }

    #[test]
    fn from_file_rejects_empty_without_leaking() {
        let file = key_file("  \n\n");
        let err = ApiKey::from_file(file.path()).unwrap_err();
        assert!(matches!(err, ApiKeyError::Empty { .. }));
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn from_file_missing_names_the_path() {
        let err = ApiKey::from_file("/nonexistent/vultr-key").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vultr-key"), "{err}");
    }

    #[test]
    fn invalid_characters_error_does_not_contain_the_key() {
        let err = ApiKey::new(format!("{SECRET} {SECRET}"), "a test").unwrap_err();
        assert!(matches!(err, ApiKeyError::InvalidCharacters { .. }));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
