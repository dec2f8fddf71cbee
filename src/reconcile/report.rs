//! Making outcomes visible on the object: Events, and failures as `Synced=False` (and
//! `Ready=False` when terminal) plus a Warning Event. Neither ever fails a reconcile,
//! and neither ever gates a Vultr call.

use kube::Resource;
use kube::runtime::events::EventType;
use tracing::warn;

use crate::crd::PolicyAttachment;
use crate::error::Error;
use crate::reconcile::context::Context;
use crate::reconcile::status::Update;

impl Context {
    /// Publishes an Event about `obj`. Failing to publish is logged, never returned.
    pub async fn event(
        &self,
        obj: &PolicyAttachment,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if let Err(err) = self
            .recorder
            .publish(&obj.object_ref(&()), type_, reason, action, note)
            .await
        {
            warn!(%err, reason, "failed to publish event");
        }
    }

    /// Writes `status`, logging a failure instead of returning it: for writes that only
    /// inform (e.g. `Detaching`) and must never stand between the operator and Vultr.
    /// In a namespace being deleted, the RoleBindings and Events go first.
    pub async fn write_status_best_effort(&self, obj: &PolicyAttachment, st: &Update) {
        if let Err(err) = st.write(&self.api_for(obj), obj).await {
            warn!(%err, "could not write status; going on");
        }
    }

    /// Makes a failure visible on the object: `Synced=False` with the error's reason and
    /// `message`, and a Warning Event (the recorder folds repeats into one series). A
    /// terminal failure also sets `Ready=False`; a transient one leaves `Ready` as the
    /// last verification saw it.
    pub async fn report_failure(
        &self,
        obj: &PolicyAttachment,
        st: &mut Update,
        err: &Error,
        action: &str,
        message: String,
    ) {
        if !err.is_transient() {
            st.ready(false, err.reason(), &message);
        }
        st.not_synced(err.reason(), &message);
        if let Err(write_err) = st.write(&self.api_for(obj), obj).await {
            warn!(%write_err, "could not record the failure in status; going on");
        }
        self.event(obj, EventType::Warning, err.reason(), action, message)
            .await;
    }
}
