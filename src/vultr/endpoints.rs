//! One method per Vultr IAM endpoint the operator uses. Each records its route template,
//! which is the label for logs and metrics.

use std::collections::HashSet;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::attachments::parse_attached_page;
use super::client::VultrClient;
use super::error::VultrError;
use super::model::{Group, Policy, User};
use super::pagination::{PER_PAGE, collect_pages, parse_page};
use super::response::decode;
use crate::domain::{Subject, SubjectKind};

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
}

/// Path segment and route templates of one subject kind.
struct SubjectRoutes {
    segment: &'static str,
    list: &'static str,
    attach: &'static str,
    detach: &'static str,
}

fn subject_routes(kind: SubjectKind) -> SubjectRoutes {
    match kind {
        SubjectKind::User => SubjectRoutes {
            segment: "users",
            list: routes::LIST_POLICY_USERS,
            attach: routes::ATTACH_USER,
            detach: routes::DETACH_USER,
        },
        SubjectKind::Group => SubjectRoutes {
            segment: "groups",
            list: routes::LIST_POLICY_GROUPS,
            attach: routes::ATTACH_GROUP,
            detach: routes::DETACH_GROUP,
        },
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
    })
}

impl VultrClient {
    /// Every IAM policy of the organization (paged).
    pub async fn list_policies(&self) -> Result<Vec<Policy>, VultrError> {
        self.list_all(routes::LIST_POLICIES, &["v2", "policies"], "policies")
            .await
    }

    /// Every user of the organization (paged).
    pub async fn list_users(&self) -> Result<Vec<User>, VultrError> {
        self.list_all(routes::LIST_USERS, &["v2", "users"], "users")
            .await
    }

    /// Every group of the organization (paged).
    pub async fn list_groups(&self) -> Result<Vec<Group>, VultrError> {
        self.list_all(routes::LIST_GROUPS, &["v2", "groups"], "groups")
            .await
    }

    /// IDs of the users (or groups) the policy is directly attached to, read from the
    /// paged listing in either of its two shapes.
    pub async fn attached_ids(
        &self,
        policy_id: &str,
        kind: SubjectKind,
    ) -> Result<HashSet<String>, VultrError> {
        let policy_id = path_id(IdOf::Policy, policy_id)?;
        let routes = subject_routes(kind);
        let route = routes.list;
        let segments = ["v2", "policies", policy_id, routes.segment];
        let ids = collect_pages(route, |cursor| async move {
            let body = self.get_page(route, &segments, cursor).await?;
            parse_attached_page(&body, kind)
                .map_err(|detail| VultrError::InvalidResponse { route, detail })
        })
        .await?;
        Ok(ids.into_iter().collect())
    }

    /// `POST /v2/policies/{policy_id}/users|groups/{id}`; any 2xx is success, the body
    /// is ignored (undocumented). See `attach_confirmed` for the tolerant version.
    pub async fn attach(&self, policy_id: &str, subject: &Subject) -> Result<(), VultrError> {
        self.change(Method::POST, policy_id, subject).await
    }

    /// `DELETE /v2/policies/{policy_id}/users|groups/{id}`; any 2xx is success, a 404
    /// comes back as `NotFound`. See `revoke` for the deletion semantics.
    pub async fn detach(&self, policy_id: &str, subject: &Subject) -> Result<(), VultrError> {
        self.change(Method::DELETE, policy_id, subject).await
    }

    async fn change(
        &self,
        method: Method,
        policy_id: &str,
        subject: &Subject,
    ) -> Result<(), VultrError> {
        let policy_id = path_id(IdOf::Policy, policy_id)?;
        let subject_id = path_id(IdOf::Subject(subject.kind()), subject.id())?;
        let routes = subject_routes(subject.kind());
        let route = if method == Method::POST {
            routes.attach
        } else {
            routes.detach
        };
        let segments = ["v2", "policies", policy_id, routes.segment, subject_id];
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
        }
        assert_eq!(
            path_id(IdOf::Policy, "62948e0d-b09d-4d08-9554-3985b635cb17").unwrap(),
            "62948e0d-b09d-4d08-9554-3985b635cb17"
        );
    }
}
