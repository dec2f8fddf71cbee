//! Dereference: turn the declared policy and subject into Vultr IDs.

use crate::crd::{Grant, PolicyAttachmentSpec};
use crate::error::Error;
use crate::vultr::{self, Subject, VultrClient};

/// Resolves the spec to the (policy, subject) pair it declares: exact matches, paged
/// listings; "not found" and "ambiguous" are distinct errors.
pub async fn resolve(vultr: &VultrClient, spec: &PolicyAttachmentSpec) -> Result<Grant, Error> {
    let policy = match (&spec.policy.id, &spec.policy.name) {
        (Some(id), None) => vultr::PolicyRef::ById(id.clone()),
        (None, Some(name)) => vultr::PolicyRef::ByName(name.clone()),
        _ => return Err(invalid("spec.policy needs exactly one of id or name")),
    };
    let policy_id = vultr.resolve_policy(&policy).await?;
    let subject = match (&spec.user, &spec.group) {
        (Some(user), None) => {
            let user = match (&user.id, &user.email) {
                (Some(id), None) => vultr::UserRef::ById(id.clone()),
                (None, Some(email)) => vultr::UserRef::ByEmail(email.clone()),
                _ => return Err(invalid("spec.user needs exactly one of id or email")),
            };
            Subject::User(vultr.resolve_user(&user).await?)
        }
        (None, Some(group)) => {
            let group = match (&group.id, &group.name) {
                (Some(id), None) => vultr::GroupRef::ById(id.clone()),
                (None, Some(name)) => vultr::GroupRef::ByName(name.clone()),
                _ => return Err(invalid("spec.group needs exactly one of id or name")),
            };
            Subject::Group(vultr.resolve_group(&group).await?)
        }
        _ => return Err(invalid("spec needs exactly one of user or group")),
    };
    Ok(Grant { policy_id, subject })
}

fn invalid(message: &str) -> Error {
    Error::InvalidSpec(message.to_owned())
}
