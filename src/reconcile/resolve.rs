//! Dereference: turn the declared policy and subject into Vultr IDs.

use crate::crd::PolicyAttachmentSpec;
use crate::domain::Grant;
use crate::error::Error;
use crate::vultr::{self, Directory};

/// The pair a spec declares, and what people call its two sides.
pub struct Resolution {
    pub grant: Grant,
    pub policy_name: String,
    pub subject_name: String,
}

/// Resolves the spec to the (policy, subject) pair it declares against the shared
/// directory: exact matches; "not found" and "ambiguous" are distinct errors.
pub async fn resolve(
    directory: &Directory,
    spec: &PolicyAttachmentSpec,
) -> Result<Resolution, Error> {
    let policy = match (&spec.policy.id, &spec.policy.name) {
        (Some(id), None) => vultr::PolicyRef::ById(id.clone()),
        (None, Some(name)) => vultr::PolicyRef::ByName(name.clone()),
        _ => return Err(invalid("spec.policy needs exactly one of id or name")),
    };
    let subject = match (&spec.user, &spec.group, &spec.role) {
        (Some(user), None, None) => vultr::SubjectRef::User(match (&user.id, &user.email) {
            (Some(id), None) => vultr::UserRef::ById(id.clone()),
            (None, Some(email)) => vultr::UserRef::ByEmail(email.clone()),
            _ => return Err(invalid("spec.user needs exactly one of id or email")),
        }),
        (None, Some(group), None) => vultr::SubjectRef::Group(match (&group.id, &group.name) {
            (Some(id), None) => vultr::GroupRef::ById(id.clone()),
            (None, Some(name)) => vultr::GroupRef::ByName(name.clone()),
            _ => return Err(invalid("spec.group needs exactly one of id or name")),
        }),
        (None, None, Some(role)) => vultr::SubjectRef::Role(match (&role.id, &role.name) {
            (Some(id), None) => vultr::RoleRef::ById(id.clone()),
            (None, Some(name)) => vultr::RoleRef::ByName(name.clone()),
            _ => return Err(invalid("spec.role needs exactly one of id or name")),
        }),
        _ => return Err(invalid("spec needs exactly one of user, group or role")),
    };
    let policy = directory.policy(&policy).await?;
    let (subject, subject_name) = directory.subject(&subject).await?;
    Ok(Resolution {
        grant: Grant {
            policy_id: policy.id,
            subject,
        },
        policy_name: policy.name,
        subject_name,
    })
}

fn invalid(message: &str) -> Error {
    Error::InvalidSpec(message.to_owned())
}
