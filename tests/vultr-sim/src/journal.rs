//! The request journal: one entry per `/v2` request, faulted ones included, of every
//! organisation (each entry says which).

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Bounds memory under a benchmark; the oldest entries go first.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, empty if none.
    pub query: String,
    /// Method and route template, e.g. `DELETE /v2/policies/{policy_id}/users/{user_id}`;
    /// the template is `(unmatched)` for unknown paths.
    pub route: String,
    /// Status sent; 0 when a hang or drop fault sent none.
    pub status: u16,
    /// When the request arrived, as unix milliseconds in JSON.
    #[serde(with = "crate::timefmt::unix_ms")]
    pub at: SystemTime,
    /// Time from arrival to the response (or to the hang/drop decision).
    pub latency_ms: f64,
    /// The request's `User-Agent`, empty if none: tells which client (which operator
    /// replica) sent it.
    #[serde(default)]
    pub user_agent: String,
    /// [`key_fingerprint`] of the request's Bearer key, empty if none: tells which key a
    /// request used (e.g. across a rotation) without recording the key.
    #[serde(default)]
    pub key_fingerprint: String,
    /// Name of the organisation the Bearer key belongs to (when the request arrived),
    /// empty without a key or for an unknown one.
    #[serde(default)]
    pub org: String,
}

/// 8 hex digits of the key's FNV-1a hash: stable across runs, and not the key.
pub fn key_fingerprint(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:08x}", hash >> 32)
}

#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: VecDeque<JournalEntry>,
}

impl Journal {
    pub(crate) fn record(&mut self, entry: JournalEntry) {
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Every entry, or those of one organisation.
    pub(crate) fn entries(&self, org: Option<&str>) -> Vec<JournalEntry> {
        self.entries
            .iter()
            .filter(|e| org.is_none_or(|o| e.org == o))
            .cloned()
            .collect()
    }

    /// Forgets every entry, or those of one organisation.
    pub(crate) fn clear(&mut self, org: Option<&str>) {
        match org {
            None => self.entries.clear(),
            Some(o) => self.entries.retain(|e| e.org != o),
        }
    }
}
