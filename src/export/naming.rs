//! Object names for exported grants: a readable slug of the subject's and the policy's
//! names plus a short hash of the pair's IDs, e.g. `alice-dns-admin-3f9a0c12d4`. The
//! hash makes names unique and stable (names can be shared, IDs cannot); the slug makes
//! them readable. Every name is a DNS-1123 label (at most 63 characters), which is also
//! a valid subdomain, so it fits wherever Kubernetes puts a name (labels included).

use std::collections::HashMap;

use crate::domain::Grant;

/// Longest name produced: a DNS-1123 label.
pub const MAX_NAME: usize = 63;
/// Hex digits of the ID hash in a name: 40 bits, so two pairs whose slugs are also
/// equal collide once in about a trillion; [`unique_names`] settles even that.
const HASH_DIGITS: usize = 10;

/// What a name is made of: the pair, and what people call its two sides (empty when
/// unknown, e.g. a subject missing from the directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameParts<'a> {
    pub grant: &'a Grant,
    pub subject_label: &'a str,
    pub policy_label: &'a str,
}

/// The name of one pair: `<subject>-<policy>-<hash>`. Deterministic: the same pair and
/// labels give the same name on every run and every machine.
pub(crate) fn object_name(parts: &NameParts<'_>) -> String {
    let hash = format!("{:016x}", fingerprint(parts.grant));
    with_hash(parts, &hash[..HASH_DIGITS])
}

/// Names for every pair, in the order given, guaranteed distinct: a collision of the
/// short hash (with equal slugs) takes the full 64-bit hash, and pairs that still
/// collide (only a repeated pair can) a counter. Callers pass each pair once.
pub(crate) fn unique_names(parts: &[NameParts<'_>]) -> Vec<String> {
    let mut names: Vec<String> = parts.iter().map(object_name).collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    for name in &names {
        *count.entry(name.clone()).or_default() += 1;
    }
    for (name, part) in names.iter_mut().zip(parts) {
        if count[name.as_str()] > 1 {
            *name = with_hash(part, &format!("{:016x}", fingerprint(part.grant)));
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in &mut names {
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            let suffix = format!("-{n}");
            let keep = name.len().min(MAX_NAME - suffix.len());
            *name = format!("{}{suffix}", &name[..keep]);
        }
    }
    names
}

/// `<subject>-<policy>-<hash>`, the slugs shortened to fit [`MAX_NAME`].
fn with_hash(parts: &NameParts<'_>, hash: &str) -> String {
    let kind = parts.grant.subject.kind().as_str().to_ascii_lowercase();
    let subject = slug(subject_word(parts.subject_label), &kind);
    let policy = slug(parts.policy_label, "policy");
    // Room for the two slugs: the name less the hash and two dashes, shared evenly,
    // and what one side does not use goes to the other.
    let room = MAX_NAME - hash.len() - 2;
    let half = room / 2;
    let subject_len = subject.len().min(room - policy.len().min(half));
    let subject = trim_to(&subject, subject_len);
    let policy = trim_to(&policy, room - subject.len());
    format!("{subject}-{policy}-{hash}")
}

/// The readable part of a subject's label: a user's email without its domain
/// (`alice@example.com` → `alice`); the hash tells equal local parts apart.
fn subject_word(label: &str) -> &str {
    match label.split_once('@') {
        Some((local, _)) if !local.trim().is_empty() => local,
        _ => label,
    }
}

/// Lower-case ASCII letters and digits, everything else one `-`, no dash at either
/// end; `fallback` when nothing is left (e.g. a name in another script).
fn slug(text: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        fallback.to_owned()
    } else {
        out.to_owned()
    }
}

/// The first `len` characters (all ASCII), without a trailing dash.
fn trim_to(slug: &str, len: usize) -> String {
    slug[..slug.len().min(len)].trim_end_matches('-').to_owned()
}

/// FNV-1a (64 bits) of the pair's IDs, lower-cased (Vultr's UUIDs are
/// case-insensitive), with the subject kind: specified here, unlike std's hasher, so
/// names never change with the Rust version.
fn fingerprint(grant: &Grant) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let key = format!(
        "{}\0{}\0{}",
        grant.policy_id.to_ascii_lowercase(),
        grant.subject.kind().as_str(),
        grant.subject.id().to_ascii_lowercase()
    );
    key.bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// An RFC 1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric (what a
/// namespace name must be).
pub(crate) fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    const DNS_ADMIN: &str = "62948e0d-b09d-4d08-9554-3985b635cb17";
    const ALICE: &str = "8aff6ef5-26f9-458b-ae87-2ac06cfe1d4b";

    fn grant(policy: &str, subject: Subject) -> Grant {
        Grant {
            policy_id: policy.to_owned(),
            subject,
        }
    }

    fn name(grant: &Grant, subject: &str, policy: &str) -> String {
        object_name(&NameParts {
            grant,
            subject_label: subject,
            policy_label: policy,
        })
    }

    #[test]
    fn names_read_like_the_pair() {
        let g = grant(DNS_ADMIN, Subject::User(ALICE.into()));
        let n = name(&g, "alice@example.com", "dns-admin");
        assert!(n.starts_with("alice-dns-admin-"), "{n}");
        assert_eq!(n.len(), "alice-dns-admin-".len() + HASH_DIGITS);
        let g = grant(DNS_ADMIN, Subject::Group("g1".into()));
        assert!(name(&g, "Ops Team", "DNS Admin").starts_with("ops-team-dns-admin-"));
    }

    #[test]
    fn names_are_stable_and_pinned() {
        // A change of the hash or the slug would rename every exported object: this
        // value is the contract with names already committed to Git.
        let g = grant(DNS_ADMIN, Subject::User(ALICE.into()));
        assert_eq!(
            name(&g, "alice@example.com", "dns-admin"),
            name(&g, "alice@example.com", "dns-admin")
        );
        assert_eq!(
            name(&g, "alice@example.com", "dns-admin"),
            "alice-dns-admin-6af3ccfa1e"
        );
        assert_eq!(fingerprint(&g), 0x6af3_ccfa_1e6f_434b);
        // UUIDs are case-insensitive: the same pair spelt differently, the same name.
        let upper = grant(
            &DNS_ADMIN.to_uppercase(),
            Subject::User(ALICE.to_uppercase()),
        );
        assert_eq!(
            name(&upper, "alice@example.com", "dns-admin"),
            name(&g, "alice@example.com", "dns-admin")
        );
    }

    #[test]
    fn the_hash_tells_pairs_with_equal_slugs_apart() {
        let a = grant(DNS_ADMIN, Subject::User("u1".into()));
        let b = grant(DNS_ADMIN, Subject::User("u2".into()));
        let c = grant(DNS_ADMIN, Subject::Group("u1".into()));
        let names = [
            name(&a, "alice@a.example", "dns-admin"),
            name(&b, "alice@b.example", "dns-admin"),
            name(&c, "alice", "dns-admin"),
        ];
        assert_ne!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        assert_ne!(names[1], names[2]);
    }

    #[test]
    fn every_name_is_a_dns_label_of_at_most_63() {
        let long = "x".repeat(300);
        let cases = [
            ("alice@example.com", "dns-admin"),
            ("", ""),
            ("管理者", "ポリシー"),
            ("--weird__Name..", "!!Policy!!"),
            (long.as_str(), long.as_str()),
            (long.as_str(), "p"),
            ("u", long.as_str()),
            (
                "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-x-y-z",
                "1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6",
            ),
            ("@example.com", "a"),
        ];
        for (subject, policy) in cases {
            for s in [Subject::User("u".into()), Subject::Group("g".into())] {
                let g = grant("p", s);
                let n = name(&g, subject, policy);
                assert!(is_dns1123_label(&n), "{n:?} from {subject:?} / {policy:?}");
                assert!(n.len() <= MAX_NAME, "{n:?}");
            }
        }
        // A long policy name leaves the short subject whole, and the reverse.
        let g = grant("p", Subject::User("u".into()));
        assert!(name(&g, "bob@x.example", &long).starts_with("bob-xxx"));
        assert!(name(&g, &long, "dns-admin").contains("-dns-admin-"));
        // Unknown names fall back to the kind.
        assert!(name(&g, "", "").starts_with("user-policy-"));
    }

    #[test]
    fn unique_names_settles_collisions() {
        let a = grant("p1", Subject::User("u1".into()));
        let b = grant("p2", Subject::User("u2".into()));
        let parts = |g| NameParts {
            grant: g,
            subject_label: "same",
            policy_label: "same",
        };
        let distinct = unique_names(&[parts(&a), parts(&b)]);
        assert_ne!(distinct[0], distinct[1]);
        assert_eq!(
            distinct[0],
            object_name(&parts(&a)),
            "no collision, no change"
        );
        // The same pair twice (which callers avoid) still gets two names.
        let twice = unique_names(&[parts(&a), parts(&a), parts(&a)]);
        assert_eq!(twice.len(), 3);
        assert!(
            twice
                .iter()
                .all(|n| is_dns1123_label(n) && n.len() <= MAX_NAME)
        );
        let mut sorted = twice.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "{twice:?}");
    }

    #[test]
    fn dns_checks() {
        for good in ["a", "team-1", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
