//! One method per Vultr IAM endpoint the operator uses. Each records its route template,
//! which is the label for logs and metrics.

use std::collections::HashSet;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::attachments::parse_attached_page;
use super::client::VultrClient;
use super::error::VultrError;
use super::model::{Group, Policy, Role, User};
use super::pagination::{PER_PAGE, collect_pages, parse_page};
use super::response::decode;
use crate::domain::{Grant, ListingSource, Subject, SubjectKind};

/// Route templates: what logs and metrics show instead of concrete paths.
pub mod routes {
    pub const LIST_POLICIES: &str = "GET /v2/policies";
    pub const LIST_POLICY_USERS: &str = "GET /v2/policies/{policy_id}/users";
    pub const LIST_POLICY_GROUPS: &str = "GET /v2/policies/{policy_id}/groups";
    pub const ATTACH_USER: &str = "POST /v2/policies/{policy_id}/users/{user_id}";
    pub const ATTACH_GROUP: &str = "POST /v2/policies/{policy_id}/groups/{group_id}";
    pub const DETACH_USER: &str = "DELETE /v2/policies/{policy_id}/users/{user_id}";
    pub const DETACH_GROUP: &str = "DELETE /v2/policies/{policy_id}/groups/{group_id}";
    pub const LIST_USERS: &str = "GET /v2/users";
    pub const LIST_GROUPS: &str = "GET /v2/groups";
    pub const LIST_ROLES: &str = "GET /v2/roles";
    // Role grants are role-first in Vultr.
    pub const LIST_ROLE_POLICIES: &str = "GET /v2/roles/{role_id}/policies";
    pub const ATTACH_ROLE: &str = "POST /v2/roles/{role_id}/policies/{policy_id}";
    pub const DETACH_ROLE: &str = "DELETE /v2/roles/{role_id}/policies/{policy_id}";
}

/// Route templates of the attach and detach of one subject kind.
fn write_routes(kind: SubjectKind) -> (&'static str, &'static str) {
    match kind {
        SubjectKind::User => (routes::ATTACH_USER, routes::DETACH_USER),
        SubjectKind::Group => (routes::ATTACH_GROUP, routes::DETACH_GROUP),
        SubjectKind::Role => (routes::ATTACH_ROLE, routes::DETACH_ROLE),
    }
}

/// The path of a pair: policy-first for users and groups, role-first for roles.
fn pair_path<'a>(policy_id: &'a str, subject: &'a Subject) -> [&'a str; 5] {
    match subject {
        Subject::User(id) => ["v2", "policies", policy_id, "users", id],
        Subject::Group(id) => ["v2", "policies", policy_id, "groups", id],
        Subject::Role(id) => ["v2", "roles", id, "policies", policy_id],
    }
}

/// Which object an ID names, to pick the not-found error for an unusable one.
#[derive(Clone, Copy)]
pub(crate) enum IdOf {
    Policy,
    Subject(SubjectKind),
}

/// An ID that can be used as a path segment. Empty, `.`, `..` (which URL
/// normalisation would drop, turning a DELETE of one attachment into a DELETE of the
/// collection) or control characters cannot name a Vultr object, so report it as not
/// found without sending anything.
pub(crate) fn path_id(of: IdOf, id: &str) -> Result<&str, VultrError> {
    let usable = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 256
        && !id.chars().any(char::is_control);
    if usable {
        return Ok(id);
    }
    let reference = format!("id {id:?}");
    Err(match of {
        IdOf::Policy => VultrError::PolicyNotFound { reference },
        IdOf::Subject(SubjectKind::User) => VultrError::UserNotFound { reference },
        IdOf::Subject(SubjectKind::Group) => VultrError::GroupNotFound { reference },
        IdOf::Subject(SubjectKind::Role) => VultrError::RoleNotFound { reference },
    })
}

/// An object the organization lists in full: the route of `GET /v2/{KEY}`, whose
/// pages hold the objects under `KEY`.
pub(crate) trait Listed: DeserializeOwned {
    const ROUTE: &'static str;
    const KEY: &'static str;
}

macro_rules! listed {
    ($($type:ty => $route:ident, $key:literal;)*) => {$(
        impl Listed for $type {
            const ROUTE: &'static str = routes::$route;
            const KEY: &'static str = $key;
        }
    )*};
}

listed! {
    Policy => LIST_POLICIES, "policies";
    User => LIST_USERS, "users";
    Group => LIST_GROUPS, "groups";
    Role => LIST_ROLES, "roles";
}

impl VultrClient {
    /// Every object of a kind in the organization (paged).
    pub(crate) async fn list<T: Listed>(&self) -> Result<Vec<T>, VultrError> {
        self.list_all(T::ROUTE, &["v2", T::KEY], T::KEY).await
    }

    /// The IDs one attachment listing shows, read from every page in either of its two
    /// shapes: user or group IDs of a policy, policy IDs of a role.
    pub(crate) async fn listed_ids(
        &self,
        source: &ListingSource,
    ) -> Result<HashSet<String>, VultrError> {
        let (route, kind, segments) = match source {
            ListingSource::PolicyUsers(policy_id) => (
                routes::LIST_POLICY_USERS,
                SubjectKind::User,
                ["v2", "policies", path_id(IdOf::Policy, policy_id)?, "users"],
            ),
            ListingSource::PolicyGroups(policy_id) => (
                routes::LIST_POLICY_GROUPS,
                SubjectKind::Group,
                [
                    "v2",
                    "policies",
                    path_id(IdOf::Policy, policy_id)?,
                    "groups",
                ],
            ),
            ListingSource::RolePolicies(role_id) => (
                routes::LIST_ROLE_POLICIES,
                SubjectKind::Role,
                [
                    "v2",
                    "roles",
                    path_id(IdOf::Subject(SubjectKind::Role), role_id)?,
                    "policies",
                ],
            ),
        };
        let ids = collect_pages(route, |cursor| async move {
            let body = self.get_page(route, &segments, cursor).await?;
            parse_attached_page(&body, kind)
                .map_err(|detail| VultrError::InvalidResponse { route, detail })
        })
        .await?;
        Ok(ids.into_iter().collect())
    }

    /// `POST /v2/policies/{policy_id}/users|groups/{id}`, or role-first
    /// `POST /v2/roles/{role_id}/policies/{policy_id}`; any 2xx is success, the body is
    /// ignored (undocumented). See `attach_confirmed` for the tolerant version.
    pub(crate) async fn attach(&self, grant: &Grant) -> Result<(), VultrError> {
        self.change(Method::POST, grant).await
    }

    /// `DELETE /v2/policies/{policy_id}/users|groups/{id}`, or role-first
    /// `DELETE /v2/roles/{role_id}/policies/{policy_id}`; any 2xx is success, a 404
    /// comes back as `NotFound`. See `revoke` for the deletion semantics.
    pub(crate) async fn detach(&self, grant: &Grant) -> Result<(), VultrError> {
        self.change(Method::DELETE, grant).await
    }

    async fn change(&self, method: Method, grant: &Grant) -> Result<(), VultrError> {
        let Grant { policy_id, subject } = grant;
        path_id(IdOf::Policy, policy_id)?;
        path_id(IdOf::Subject(subject.kind()), subject.id())?;
        let (attach, detach) = write_routes(subject.kind());
        let route = if method == Method::POST {
            attach
        } else {
            detach
        };
        let segments = pair_path(policy_id, subject);
        self.request(method, route, &segments, &[]).await?;
        Ok(())
    }

    /// Pages through a listing whose objects sit in the array `key`.
    async fn list_all<T: DeserializeOwned>(
        &self,
        route: &'static str,
        segments: &[&str],
        key: &str,
    ) -> Result<Vec<T>, VultrError> {
        collect_pages(route, |cursor| async move {
            let body = self.get_page(route, segments, cursor).await?;
            parse_page::<T>(&body, key)
                .map_err(|detail| VultrError::InvalidResponse { route, detail })
        })
        .await
    }

    /// One page of a listing, as JSON.
    async fn get_page(
        &self,
        route: &'static str,
        segments: &[&str],
        cursor: Option<String>,
    ) -> Result<Value, VultrError> {
        let per_page = PER_PAGE.to_string();
        let mut query = vec![("per_page", per_page.as_str())];
        if let Some(cursor) = cursor.as_deref() {
            query.push(("cursor", cursor));
        }
        let answer = self.request(Method::GET, route, segments, &query).await?;
        decode(route, &answer.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_pairs_are_role_first() {
        let role = Subject::Role("r1".into());
        assert_eq!(
            pair_path("p1", &role),
            ["v2", "roles", "r1", "policies", "p1"]
        );
        assert_eq!(write_routes(SubjectKind::Role).0, routes::ATTACH_ROLE);
        assert_eq!(
            pair_path("p1", &Subject::Group("g1".into())),
            ["v2", "policies", "p1", "groups", "g1"]
        );
    }

    #[test]
    fn unusable_ids_are_not_found_without_a_request() {
        for id in ["", ".", "..", "a\nb"] {
            assert_eq!(
                path_id(IdOf::Policy, id).unwrap_err().reason(),
                "PolicyNotFound"
            );
            assert_eq!(
                path_id(IdOf::Subject(SubjectKind::User), id)
                    .unwrap_err()
                    .reason(),
                "UserNotFound"
            );
            assert_eq!(
                path_id(IdOf::Subject(SubjectKind::Group), id)
                    .unwrap_err()
                    .reason(),
                "GroupNotFound"
            );
            assert_eq!(
                path_id(IdOf::Subject(SubjectKind::Role), id)
                    .unwrap_err()
                    .reason(),
                "RoleNotFound"
            );
        }
        assert_eq!(
            path_id(IdOf::Policy, "62948e0d-b09d-4d08-9554-3985b635cb17").unwrap(),
            "62948e0d-b09d-4d08-9554-3985b635cb17"
        );
    }
}
