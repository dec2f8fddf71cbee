//! The exported manifests: one PolicyAttachment per grant with only `metadata.name`
//! (and the namespace, if asked) and `spec`, sorted by name, as multi-document YAML.
//! Each document starts with a comment naming the pair as people know it, which
//! matters most when the spec says IDs.

use std::collections::BTreeSet;

use kube::api::ObjectMeta;

use super::Reference;
use super::naming::{NameParts, unique_names};
use super::org::Org;
use super::reference;
use crate::crd::{DeletionPolicy, PolicyAttachment, PolicyAttachmentSpec};
use crate::domain::{Grant, Refs};

/// What every manifest of one export shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub namespace: Option<String>,
    pub reference: Reference,
    pub deletion_policy: DeletionPolicy,
}

/// One manifest, with the comment that precedes it.
#[derive(Debug, Clone)]
pub struct Document {
    pub comment: String,
    pub object: PolicyAttachment,
}

/// The manifests, sorted by name, and the notes (sorted, each once) for stderr.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub documents: Vec<Document>,
    pub notes: Vec<String>,
}

/// Manifests for `grants` (each pair once, whatever the order or repeats given).
pub(crate) fn build(grants: &[Grant], org: &Org, options: &Options) -> Manifests {
    let mut grants: Vec<&Grant> = grants.iter().collect();
    // One object per pair, in an order independent of how the listings came back.
    let key = |g: &Grant| {
        (
            g.policy_id.to_ascii_lowercase(),
            g.subject.kind().as_str(),
            g.subject.id().to_ascii_lowercase(),
        )
    };
    grants.sort_by_key(|g| key(g));
    grants.dedup_by_key(|g| key(g));

    let parts: Vec<NameParts<'_>> = grants
        .iter()
        .map(|g| NameParts {
            grant: g,
            subject_label: org.subject_label(&g.subject),
            policy_label: org.policy_label(&g.policy_id),
        })
        .collect();
    let names = unique_names(&parts);

    let mut notes = BTreeSet::new();
    let mut documents: Vec<Document> = grants
        .iter()
        .zip(names)
        .map(|(grant, name)| {
            let (refs, why) = reference::refs(grant, org, options.reference);
            notes.extend(why);
            Document {
                comment: comment(grant, org),
                object: object(name, refs, options),
            }
        })
        .collect();
    documents.sort_by(|a, b| a.object.metadata.name.cmp(&b.object.metadata.name));
    Manifests {
        documents,
        notes: notes.into_iter().collect(),
    }
}

fn object(name: String, refs: Refs, options: &Options) -> PolicyAttachment {
    PolicyAttachment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: options.namespace.clone(),
            ..ObjectMeta::default()
        },
        spec: PolicyAttachmentSpec::declaring(refs, options.deletion_policy),
        status: None,
    }
}

/// `dns-admin on User alice@example.com (62948e0d-... / 8aff6ef5-...)`, on one line.
fn comment(grant: &Grant, org: &Org) -> String {
    let or_id = |label: &str, id: &str| {
        if label.is_empty() {
            id.to_owned()
        } else {
            label.to_owned()
        }
    };
    let text = format!(
        "{} on {} {} ({} / {})",
        or_id(org.policy_label(&grant.policy_id), &grant.policy_id),
        grant.subject.kind(),
        or_id(org.subject_label(&grant.subject), grant.subject.id()),
        grant.policy_id,
        grant.subject.id(),
    );
    // Names come from Vultr: a line break would end the comment.
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Multi-document YAML: `---`, the comment, the object; empty for no documents.
pub(crate) fn render(documents: &[Document]) -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n# ");
        out.push_str(&doc.comment);
        out.push('\n');
        out.push_str(&yaml_serde::to_string(&doc.object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;
    use crate::export::naming::is_dns1123_label;
    use crate::export::org::fixture;

    fn org() -> Org {
        fixture::org(
            &[("p1", "dns-admin"), ("p2", "billing-read")],
            &[("u1", "alice@example.com"), ("u2", "bob@example.com")],
            &[("g1", "ops\nteam")],
            &[],
        )
    }

    fn grants() -> Vec<Grant> {
        vec![
            Grant {
                policy_id: "p2".into(),
                subject: Subject::Group("g1".into()),
            },
            Grant {
                policy_id: "p1".into(),
                subject: Subject::User("u2".into()),
            },
            Grant {
                policy_id: "p1".into(),
                subject: Subject::User("u1".into()),
            },
        ]
    }

    fn options() -> Options {
        Options {
            namespace: None,
            reference: Reference::Names,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    #[test]
    fn documents_are_sorted_deduplicated_and_independent_of_input_order() {
        let built = build(&grants(), &org(), &options());
        let names: Vec<&str> = built
            .documents
            .iter()
            .map(|d| d.object.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names.len(), 3);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|n| is_dns1123_label(n)));
        let mut shuffled = grants();
        shuffled.reverse();
        shuffled.push(shuffled[0].clone());
        let again = build(&shuffled, &org(), &options());
        assert_eq!(
            render(&again.documents).unwrap(),
            render(&built.documents).unwrap()
        );
        assert_eq!(again.notes, built.notes);
    }

    #[test]
    fn rendered_yaml_has_only_name_namespace_and_spec() {
        let mut opts = options();
        opts.namespace = Some("platform".into());
        opts.deletion_policy = DeletionPolicy::Orphan;
        let built = build(&grants()[2..], &org(), &opts);
        let yaml = render(&built.documents).unwrap();
        let name = built.documents[0].object.metadata.name.clone().unwrap();
        assert_eq!(
            yaml,
            format!(
                "---\n# dns-admin on User alice@example.com (p1 / u1)\n\
                 apiVersion: iam.vultr-operator.io/v1alpha1\n\
                 kind: PolicyAttachment\n\
                 metadata:\n  name: {name}\n  namespace: platform\n\
                 spec:\n  policy:\n    name: dns-admin\n  user:\n    email: alice@example.com\n\
                 \x20 deletionPolicy: Orphan\n"
            )
        );
        // It reads back as the object it came from.
        let back: PolicyAttachment =
            yaml_serde::from_str(yaml.trim_start_matches("---\n")).unwrap();
        assert_eq!(back.metadata, built.documents[0].object.metadata);
        assert_eq!(back.spec, built.documents[0].object.spec);
    }

    #[test]
    fn comments_stay_on_one_line() {
        let built = build(&grants()[..1], &org(), &options());
        assert_eq!(
            built.documents[0].comment,
            "billing-read on Group ops team (p2 / g1)"
        );
        assert_eq!(render(&[]).unwrap(), "");
    }
}
