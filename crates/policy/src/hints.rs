//! MCP tool annotations derived from what a component is actually granted, so a
//! client's "is this safe to run?" question is answered by the sandbox, not by
//! the tool's own claims. They describe what the grants make possible; a tool
//! may do less.

use serde::Serialize;

use super::{FileAccess, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolHints {
    /// No grant lets the tool change anything outside its own call.
    pub read_only_hint: bool,
    /// A grant lets it change or delete existing state (meaningful when not
    /// read-only): writable files, network or sockets (which can reach
    /// services that delete), queue, peer or workflow administration. Queue
    /// or workflow submission alone only adds.
    pub destructive_hint: bool,
    /// It can reach things outside the host: network or sockets.
    pub open_world_hint: bool,
}

// `[client]` grants change no hint: asking the client that made the call (its
// user, its model, its roots) changes nothing outside the call and reaches no
// one but that client, which sees and answers every request itself.

impl ToolHints {
    pub fn from_policy(policy: &Policy) -> Self {
        let writes_files = policy
            .files
            .iter()
            .any(|f| f.access == FileAccess::ReadWrite);
        let open_world = !policy.network.is_empty()
            || !policy.sockets.connect.is_empty()
            || !policy.sockets.bind.is_empty();
        let destructive = writes_files
            || open_world
            || policy.queue.admin
            || policy.peers.admin
            || policy.workflow.admin;
        ToolHints {
            read_only_hint: !destructive && !policy.queue.submit && !policy.workflow.submit,
            destructive_hint: destructive,
            open_world_hint: open_world,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Destination, FileGrant};

    #[test]
    fn hints_follow_the_grants() {
        let mut policy = Policy::default();
        let none = ToolHints::from_policy(&policy);
        assert!(none.read_only_hint && !none.destructive_hint && !none.open_world_hint);

        policy.files.push(FileGrant {
            host: "/tmp".into(),
            guest: "/d".into(),
            access: FileAccess::ReadOnly,
        });
        assert!(ToolHints::from_policy(&policy).read_only_hint);

        policy.queue.submit = true;
        let submit = ToolHints::from_policy(&policy);
        assert!(!submit.read_only_hint && !submit.destructive_hint);

        policy.files[0].access = FileAccess::ReadWrite;
        assert!(ToolHints::from_policy(&policy).destructive_hint);

        let mut net = Policy::default();
        net.network
            .push(Destination::parse("https://api.example.com").unwrap());
        let hints = ToolHints::from_policy(&net);
        assert!(hints.open_world_hint && !hints.read_only_hint);

        // Workflows: submitting only adds; cancelling is administration.
        let mut wf = Policy::default();
        wf.workflow.submit = true;
        let submit = ToolHints::from_policy(&wf);
        assert!(!submit.read_only_hint && !submit.destructive_hint);
        wf.workflow.admin = true;
        let admin = ToolHints::from_policy(&wf);
        assert!(!admin.read_only_hint && admin.destructive_hint && !admin.open_world_hint);
    }
}
