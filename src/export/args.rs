//! The flags of `export`.

use clap::{Args, ValueEnum};

use crate::connect::VultrArgs;
use crate::crd::DeletionPolicy;

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub vultr: VultrArgs,

    /// Only grants of this policy, by name or ID (repeatable).
    #[arg(long = "policy", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub policies: Vec<String>,

    /// Only grants to this user, by email or ID (repeatable).
    #[arg(long = "user", value_name = "EMAIL|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub users: Vec<String>,

    /// Only grants to this group, by name or ID (repeatable).
    #[arg(long = "group", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub groups: Vec<String>,

    /// Only grants to this role, by name or ID (repeatable).
    #[arg(long = "role", value_name = "NAME|ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub roles: Vec<String>,

    /// Namespace written into every manifest. Without it the manifests have none, and
    /// whatever applies them decides (kubectl -n, Kustomize, Argo CD, Flux).
    #[arg(long, value_name = "NS", value_parser = dns_label)]
    pub namespace: Option<String>,

    /// How manifests refer to policies and subjects: `names` (policy and group names,
    /// user emails: readable; a name that is not unique in Vultr falls back to its ID, with
    /// a note on stderr) or `ids` (survive renames in Vultr).
    #[arg(long, value_enum, default_value_t = Reference::Names)]
    pub reference: Reference,

    /// `deletionPolicy` of every manifest: `Delete` (deleting the object revokes the
    /// grant) or `Orphan` (deleting it leaves the grant in Vultr).
    #[arg(long, value_enum, default_value_t = DeletionPolicyArg::Delete)]
    pub deletion_policy: DeletionPolicyArg,

    /// Only the grants that no PolicyAttachment in the cluster declares (recorded in its
    /// status, or its spec resolved against Vultr): what was granted out of band. Lists
    /// PolicyAttachments in all namespaces through the usual kube config (KUBECONFIG or
    /// the in-cluster service account).
    #[arg(long)]
    pub unmanaged: bool,
}

/// How exported manifests refer to Vultr objects.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Names,
    Ids,
}

/// `spec.deletionPolicy`, spelt as in the manifest.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicyArg {
    #[value(name = "Delete")]
    Delete,
    #[value(name = "Orphan")]
    Orphan,
}

impl From<DeletionPolicyArg> for DeletionPolicy {
    fn from(arg: DeletionPolicyArg) -> Self {
        match arg {
            DeletionPolicyArg::Delete => Self::Delete,
            DeletionPolicyArg::Orphan => Self::Orphan,
        }
    }
}

/// A namespace name (an RFC 1123 label).
fn dns_label(text: &str) -> Result<String, String> {
    if super::naming::is_dns1123_label(text) {
        Ok(text.to_owned())
    } else {
        Err(
            "must be a namespace name: at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
                .to_owned(),
        )
    }
}
