//! Dereference: turn the declared policy and subject into Vultr IDs.

use crate::crd::PolicyAttachmentSpec;
use crate::error::Error;
use crate::port::{GrantPort, Resolution};
use crate::vultr;

/// Resolves the spec to the (policy, subject) pair it declares through `port`: exact
/// matches; "not found" and "ambiguous" are distinct errors.
pub async fn resolve(
    port: &dyn GrantPort,
    spec: &PolicyAttachmentSpec,
) -> Result<Resolution, Error> {
    let (policy, subject) = references(spec)?;
    Ok(port.resolve(&policy, &subject).await?)
}

/// How the spec names the policy and the subject (admission refuses the other shapes;
/// these errors are for objects stored before it did).
pub fn references(
    spec: &PolicyAttachmentSpec,
) -> Result<(vultr::PolicyRef, vultr::SubjectRef), Error> {
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
    Ok((policy, subject))
}

fn invalid(message: &str) -> Error {
    Error::InvalidSpec(message.to_owned())
}
