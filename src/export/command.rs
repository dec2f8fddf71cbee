//! The edge of `export`: connect to Vultr as `run` does, walk the directory, read the
//! selected listings, (with `--unmanaged`) list the cluster's PolicyAttachments, then
//! print the manifests on stdout and notes and a summary on stderr.

use std::io::Write;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};

use super::ExportArgs;
use super::filter::{Filter, Selectors, UnknownSelectors};
use super::manifest::{self, Options};
use super::org::Org;
use super::read::{self, with_retries};
use super::unmanaged::{Declared, Skipped};
use crate::connect::{self, ConnectError};
use crate::crd::{PolicyAttachment, PolicyAttachmentSpec};
use crate::domain::{Grant, SubjectKind};
use crate::vultr::{Directory, Group, Policy, Role, User, VultrError};

/// The User-Agent instance of an export, so Vultr-side logs tell it from the operator.
const INSTANCE: &str = "export";
/// One walk serves the whole export: misses never walk again.
const ONE_WALK: Duration = Duration::from_secs(24 * 3600);

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("reading Vultr failed: {0}")]
    Vultr(#[from] VultrError),
    #[error("{0}")]
    UnknownFilter(#[from] UnknownSelectors),
    #[error(
        "--unmanaged needs the cluster, but no Kubernetes client could be set up \
         (KUBECONFIG or the in-cluster service account): {0}"
    )]
    KubeConfig(#[source] kube::Error),
    #[error("--unmanaged: cannot list PolicyAttachments in all namespaces: {0}")]
    KubeList(#[source] kube::Error),
    #[error("cannot render the manifests as YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("cannot write the manifests: {0}")]
    Write(#[from] std::io::Error),
}

/// Runs the export: manifests on stdout, notes and a summary on stderr.
pub(crate) async fn run(args: ExportArgs) -> Result<(), ExportError> {
    let vultr = connect::client(&args.vultr, INSTANCE)?;
    // Before any Vultr request: a missing kube config fails at once.
    let cluster = match args.unmanaged {
        true => Some(
            kube::Client::try_default()
                .await
                .map_err(ExportError::KubeConfig)?,
        ),
        false => None,
    };
    let directory = Directory::new(vultr.clone(), ONE_WALK, ONE_WALK);
    let org = walk(&directory).await?;
    let selectors = Selectors {
        policies: args.policies.clone(),
        users: args.users.clone(),
        groups: args.groups.clone(),
        roles: args.roles.clone(),
    };
    let filter = Filter::new(&selectors, &org)?;
    let mut grants = read::grants(&vultr, &filter.sources(&org)).await?;
    grants.retain(|g| filter.keeps(g));
    // Not locked: tasks of the runtime log to stderr meanwhile.
    let mut stderr = std::io::stderr();
    if let Some(cluster) = cluster {
        let declared = declared_in_cluster(cluster, &directory, &mut stderr).await?;
        grants.retain(|g| !declared.declares(g));
    }
    let options = Options {
        namespace: args.namespace.clone(),
        reference: args.reference,
        deletion_policy: args.deletion_policy.into(),
    };
    let built = manifest::build(&grants, &org, &options);
    for note in &built.notes {
        writeln!(stderr, "note: {note}")?;
    }
    let yaml = manifest::render(&built.documents)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(yaml.as_bytes())?;
    stdout.flush()?;
    writeln!(stderr, "{}", summary(&built.documents, args.unmanaged))?;
    Ok(())
}

/// One walk of each listing, retried like every read of the export.
async fn walk(directory: &Directory) -> Result<Org, VultrError> {
    let (policies, users, groups, roles) = tokio::try_join!(
        with_retries(|| directory.all::<Policy>()),
        with_retries(|| directory.all::<User>()),
        with_retries(|| directory.all::<Group>()),
        with_retries(|| directory.all::<Role>()),
    )?;
    Ok(Org::new(policies, users, groups, roles))
}

/// The pairs every PolicyAttachment of the cluster declares: recorded in its status,
/// and its spec resolved against the directory. Objects are read one by one, so one
/// this build cannot read (e.g. a subject kind it does not know) is skipped with a
/// note instead of failing the export; so is a spec that does not resolve.
async fn declared_in_cluster(
    client: kube::Client,
    directory: &Directory,
    stderr: &mut impl Write,
) -> Result<Declared, ExportError> {
    let resource = ApiResource::erase::<PolicyAttachment>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut declared = Declared::default();
    let mut unreadable = Skipped::default();
    let mut unresolved = Skipped::default();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.map_err(ExportError::KubeList)?;
        for item in page.items {
            let at = format!(
                "{}/{}",
                item.metadata.namespace.as_deref().unwrap_or_default(),
                item.metadata.name.as_deref().unwrap_or_default()
            );
            let obj = match serde_json::to_value(&item)
                .and_then(serde_json::from_value::<PolicyAttachment>)
            {
                Ok(obj) => obj,
                Err(err) => {
                    unreadable.add(format!("{at}: {err}"));
                    continue;
                }
            };
            if let Some(grant) = obj.recorded_grant() {
                declared.add(&grant);
            }
            match resolve(directory, &obj.spec).await {
                Ok(grant) => declared.add(&grant),
                Err(err) => unresolved.add(format!("{at}: {err}")),
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    if let Some(note) = unreadable.note("PolicyAttachments this version cannot read were skipped") {
        writeln!(stderr, "note: {note}")?;
    }
    if let Some(note) = unresolved.note(
        "PolicyAttachments whose spec does not resolve in this organisation declare only \
         the pair recorded in their status",
    ) {
        writeln!(stderr, "note: {note}")?;
    }
    Ok(declared)
}

/// The pair `spec` declares, resolved against the directory.
async fn resolve(directory: &Directory, spec: &PolicyAttachmentSpec) -> Result<Grant, String> {
    let refs = spec.refs().map_err(|err| format!("invalid spec: {err}"))?;
    let resolution = directory
        .resolve(&refs)
        .await
        .map_err(|err| err.to_string())?;
    Ok(resolution.grant)
}

/// `exported 4 PolicyAttachments (2 user grants, 1 group grant, 1 role grant)`.
fn summary(documents: &[manifest::Document], unmanaged: bool) -> String {
    let count = |kind: SubjectKind| {
        documents
            .iter()
            .filter(|d| kind_of(&d.object) == Some(kind))
            .count()
    };
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!(
        "exported {}{} ({}, {}, {})",
        plural(documents.len(), "PolicyAttachment"),
        if unmanaged {
            " for unmanaged grants"
        } else {
            ""
        },
        plural(count(SubjectKind::User), "user grant"),
        plural(count(SubjectKind::Group), "group grant"),
        plural(count(SubjectKind::Role), "role grant"),
    )
}

fn kind_of(obj: &PolicyAttachment) -> Option<SubjectKind> {
    obj.spec.subject_display().0
}
