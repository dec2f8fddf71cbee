//! A Vultr organisation in memory behind [`GrantPort`], for the reconciler's unit tests:
//! policies and subjects by ID and name, the grants that exist, a journal of every call
//! it answered, and faults to inject into the next attach or revoke.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{GrantPort, Observation, Resolution};
use crate::domain::{
    Grant, GroupRef, ListingSource, PolicyRef, Refs, RoleRef, Subject, SubjectKind, SubjectRef,
    UserRef,
};
use crate::vultr::{AttachOutcome, RevokeOutcome, VultrError};

/// One call the port answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Resolve,
    Observe(Grant),
    Attach(Grant),
    Revoke(Grant),
}

/// Which write a fault is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Attach,
    Revoke,
}

#[derive(Default)]
struct Org {
    /// (kind, ID, name): a subject's kind, `None` for a policy.
    objects: Vec<(Option<SubjectKind>, String, String)>,
    granted: HashSet<Grant>,
    calls: Vec<Call>,
    faults: VecDeque<(Write, VultrError)>,
}

#[derive(Default)]
pub struct InMemory {
    org: Mutex<Org>,
}

impl InMemory {
    fn org(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn policy(self, id: &str, name: &str) -> Self {
        self.org().objects.push((None, id.into(), name.into()));
        self
    }

    /// Adds a user, group or role; a user's name is its email.
    pub fn subject(self, kind: SubjectKind, id: &str, name: &str) -> Self {
        self.org()
            .objects
            .push((Some(kind), id.into(), name.into()));
        self
    }

    /// Makes `grant` exist in Vultr already.
    pub fn granting(self, grant: &Grant) -> Self {
        self.org().granted.insert(grant.clone());
        self
    }

    /// The next `write` fails with `err` (faults are used in order).
    pub fn fail_next(&self, write: Write, err: VultrError) {
        self.org().faults.push_back((write, err));
    }

    /// Removes `grant` behind the operator's back (drift).
    pub fn remove_out_of_band(&self, grant: &Grant) {
        self.org().granted.remove(grant);
    }

    pub fn granted(&self) -> HashSet<Grant> {
        self.org().granted.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.org().calls.clone()
    }

    /// The writes (attach and revoke) it answered, in order.
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Attach(_) | Call::Revoke(_)))
            .collect()
    }

    fn fault(&self, write: Write) -> Option<VultrError> {
        let mut org = self.org();
        let i = org.faults.iter().position(|(w, _)| *w == write)?;
        org.faults.remove(i).map(|(_, err)| err)
    }

    fn find(
        &self,
        kind: Option<SubjectKind>,
        by_id: bool,
        wanted: &str,
    ) -> Result<(String, String), String> {
        self.org()
            .objects
            .iter()
            .find(|(k, id, name)| *k == kind && if by_id { id == wanted } else { name == wanted })
            .map(|(_, id, name)| (id.clone(), name.clone()))
            .ok_or_else(|| format!("{} {wanted:?}", if by_id { "id" } else { "name" }))
    }

    fn resolve_subject(&self, subject: &SubjectRef) -> Result<(Subject, String), VultrError> {
        use SubjectKind::{Group, Role, User};
        let (kind, by_id, wanted) = match subject {
            SubjectRef::User(UserRef::ById(id)) => (User, true, id),
            SubjectRef::User(UserRef::ByEmail(email)) => (User, false, email),
            SubjectRef::Group(GroupRef::ById(id)) => (Group, true, id),
            SubjectRef::Group(GroupRef::ByName(name)) => (Group, false, name),
            SubjectRef::Role(RoleRef::ById(id)) => (Role, true, id),
            SubjectRef::Role(RoleRef::ByName(name)) => (Role, false, name),
        };
        let (id, name) = self
            .find(Some(kind), by_id, wanted)
            .map_err(|reference| match kind {
                User => VultrError::UserNotFound { reference },
                Group => VultrError::GroupNotFound { reference },
                Role => VultrError::RoleNotFound { reference },
            })?;
        Ok((Subject::new(kind, id), name))
    }
}

/// A 503 from Vultr on `route`, as the client classifies it.
pub fn unavailable(route: &'static str) -> VultrError {
    VultrError::ApiUnavailable {
        route,
        status: Some(503),
        detail: "503 Service Unavailable".into(),
        retry_after: None,
    }
}

impl GrantPort for InMemory {
    fn resolve<'a>(&'a self, refs: &'a Refs) -> BoxFuture<'a, Result<Resolution, VultrError>> {
        let Refs { policy, subject } = refs;
        async move {
            self.org().calls.push(Call::Resolve);
            let (by_id, wanted) = match policy {
                PolicyRef::ById(id) => (true, id),
                PolicyRef::ByName(name) => (false, name),
            };
            let (policy_id, policy_name) = self
                .find(None, by_id, wanted)
                .map_err(|reference| VultrError::PolicyNotFound { reference })?;
            let (subject, subject_name) = self.resolve_subject(subject)?;
            Ok(Resolution {
                grant: Grant { policy_id, subject },
                policy_name,
                subject_name,
            })
        }
        .boxed()
    }

    fn observe<'a>(
        &'a self,
        grant: &'a Grant,
        _max_age: Duration,
        _batch: bool,
    ) -> BoxFuture<'a, Result<Observation, VultrError>> {
        async move {
            let mut org = self.org();
            org.calls.push(Call::Observe(grant.clone()));
            Ok(Observation::Listed {
                present: org.granted.contains(grant),
                fetched_at: SystemTime::now(),
            })
        }
        .boxed()
    }

    fn require_newer(&self, _grant: &Grant) {}

    fn attach<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<AttachOutcome, VultrError>> {
        async move {
            self.org().calls.push(Call::Attach(grant.clone()));
            if let Some(err) = self.fault(Write::Attach) {
                return Err(err);
            }
            Ok(match self.org().granted.insert(grant.clone()) {
                true => AttachOutcome::Attached,
                false => AttachOutcome::AlreadyAttached,
            })
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, grant: &'a Grant) -> BoxFuture<'a, Result<RevokeOutcome, VultrError>> {
        async move {
            self.org().calls.push(Call::Revoke(grant.clone()));
            if let Some(err) = self.fault(Write::Revoke) {
                return Err(err);
            }
            Ok(match self.org().granted.remove(grant) {
                true => RevokeOutcome::Revoked,
                false => RevokeOutcome::AlreadyAbsent,
            })
        }
        .boxed()
    }

    fn refresh<'a>(&'a self, sources: &'a HashSet<ListingSource>) -> BoxFuture<'a, usize> {
        async move { sources.len() }.boxed()
    }
}
