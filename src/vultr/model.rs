//! Vultr IAM objects as the API returns them.
//!
//! Parsing is lenient: unknown fields are ignored and everything but `id` may be missing
//! or `null`, because the contract was pieced together from sources that disagree.

use serde::{Deserialize, Deserializer};

/// A Vultr IAM policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Policy {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Kept as raw JSON: the operator never interprets it.
    #[serde(default)]
    pub policy_document: Option<serde_json::Value>,
    /// Raw JSON: sources disagree on whether it is a number or a string.
    #[serde(default)]
    pub version: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_system_policy: bool,
    #[serde(default)]
    pub date_created: Option<String>,
}

/// A Vultr user of the organization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub email: String,
    #[serde(default)]
    pub api_enabled: Option<bool>,
    #[serde(default)]
    pub service_user: Option<bool>,
}

/// A Vultr user group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Group {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub display_name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub date_created: Option<String>,
}

/// A Vultr IAM role. Its field list is the least certain of the contract: only `id` is
/// required, and resolution matches on `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Role {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Raw JSON: its type is undocumented.
    #[serde(default)]
    pub role_type: Option<serde_json::Value>,
    #[serde(default)]
    pub date_created: Option<String>,
}

/// Result of [`super::VultrClient::attach_confirmed`].
#[derive(Debug, Clone)]
pub enum AttachOutcome {
    /// This call created the attachment.
    Attached,
    /// Vultr refused the POST but the listing shows the pair: it was already there.
    AlreadyAttached,
    /// Vultr refused the POST (this rejection) and the listing does not show the pair
    /// yet: an earlier attach may still be on its way into the listing.
    Unconfirmed(super::VultrError),
}

/// Result of [`super::VultrClient::revoke`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Vultr confirmed the detach.
    Revoked,
    /// Vultr answered 404: nothing was left to revoke.
    AlreadyAbsent,
}

/// Objects for unit tests, as the listings would give them.
#[cfg(test)]
pub(crate) mod fixture {
    use serde_json::json;

    use super::{Group, Policy, Role, User};

    pub(crate) fn policy(id: &str, name: &str) -> Policy {
        serde_json::from_value(json!({"id": id, "name": name})).expect("a policy")
    }

    pub(crate) fn user(id: &str, email: &str) -> User {
        serde_json::from_value(json!({"id": id, "email": email})).expect("a user")
    }

    pub(crate) fn group(id: &str, name: &str) -> Group {
        serde_json::from_value(json!({"id": id, "display_name": name})).expect("a group")
    }

    pub(crate) fn role(id: &str, name: &str) -> Role {
        serde_json::from_value(json!({"id": id, "name": name})).expect("a role")
    }
}

/// `null` reads as the type's default, like a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_govultr_shape_and_ignores_unknown_fields() {
        let p: Policy = serde_json::from_str(
            r#"{"id":"p1","name":"dns-admin","description":"d",
                "policy_document":{"Version":"2024-01-01","Statement":[]},
                "version":3,"is_system_policy":true,"date_created":"2024-01-01T00:00:00Z",
                "something_new":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(p.id, "p1");
        assert_eq!(p.name, "dns-admin");
        assert!(p.is_system_policy);
    }

    #[test]
    fn minimal_and_null_fields_are_fine() {
        let p: Policy = serde_json::from_str(r#"{"id":"p1","name":null}"#).unwrap();
        assert_eq!(p.name, "");
        let u: User = serde_json::from_str(r#"{"id":"u1","email":null}"#).unwrap();
        assert_eq!(u.email, "");
        let g: Group = serde_json::from_str(r#"{"id":"g1"}"#).unwrap();
        assert_eq!(g.display_name, "");
        let r: Role = serde_json::from_str(r#"{"id":"r1","name":null}"#).unwrap();
        assert_eq!(r.name, "");
    }

    #[test]
    fn roles_parse_leniently() {
        let r: Role = serde_json::from_str(
            r#"{"id":"r1","name":"auditors","description":null,"role_type":7,
                "date_created":"2024-01-01T00:00:00+00:00","permissions":["x"]}"#,
        )
        .unwrap();
        assert_eq!(r.name, "auditors");
        assert_eq!(r.role_type, Some(serde_json::json!(7)));
        assert!(serde_json::from_str::<Role>(r#"{"name":"auditors"}"#).is_err());
    }

    #[test]
    fn missing_id_is_an_error() {
        assert!(serde_json::from_str::<User>(r#"{"email":"a@b.c"}"#).is_err());
    }
}
