//! Dereference: turn the declared policy and subject into Vultr IDs.

use crate::crd::PolicyAttachmentSpec;
use crate::error::Error;
use crate::port::{GrantPort, Resolution};

/// Resolves the spec to the (policy, subject) pair it declares through `port`: exact
/// matches; "not found" and "ambiguous" are distinct errors.
pub async fn resolve(
    port: &dyn GrantPort,
    spec: &PolicyAttachmentSpec,
) -> Result<Resolution, Error> {
    Ok(port.resolve(&spec.refs()?).await?)
}
