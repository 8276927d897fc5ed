//! The server's [`TaskRunner`]: a queued task is a call of the tool it names in
//! the served catalog, through the same `invoke` path (sandbox, limits, metrics)
//! as a direct call, with the guest's progress forwarded to the queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mcpplus_queue::worker::{ProgressSink, TaskRunner};
use mcpplus_queue::{AttemptOutcome, Task};
use mcpplus_runtime::Runtime;
use mcpplus_runtime::invoke::invoke_labelled;
use mcpplus_runtime::observer::{CallObserver, GuestSignal};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::catalog::LiveCatalog;
use crate::mcp::TaskLink;

/// Runs a task as a call of the tool it names, in the served catalog.
pub struct CatalogRunner {
    pub runtime: Arc<Runtime>,
    pub catalog: Arc<LiveCatalog>,
}

impl TaskRunner for CatalogRunner {
    fn run<'a>(
        &'a self,
        task: &'a Task,
        cancel: CancellationToken,
        progress: ProgressSink,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send + 'a>> {
        Box::pin(async move {
            let catalog = self.catalog.snapshot();
            let Some(entry) = catalog.tool(&task.tool) else {
                return AttemptOutcome::Failed {
                    error: format!(
                        "no tool named `{}` is loaded; load its component, then retry the task",
                        task.tool
                    ),
                    retryable: true,
                    result: None,
                };
            };
            let (signals, mut received) = tokio::sync::mpsc::unbounded_channel();
            // An MCP task's tool may ask its client: unanswered asks park the
            // task (`waiting_input`) until `tasks/update` brings the answers.
            // Other tasks have no client: asks fail, saying so.
            let link = TaskLink::for_task(task);
            let observer = CallObserver {
                signals,
                client_log_level: None,
                wants_progress: true,
                client: link
                    .clone()
                    .map(|l| l as Arc<dyn mcpplus_runtime::capabilities::client::ClientLink>),
            };
            let forward = tokio::spawn(async move {
                while let Some(signal) = received.recv().await {
                    if let GuestSignal::Progress {
                        progress: done,
                        total,
                        message,
                    } = signal
                    {
                        progress(done, total, message);
                    }
                }
            });
            let (outcome, label) = invoke_labelled(
                &self.runtime,
                entry.component,
                entry.signature,
                task.arguments.as_object(),
                &cancel,
                Some(observer),
            )
            .await;
            let _ = forward.await;
            // Asked something not yet answered: park, whatever the guest
            // returned meanwhile (as a 2026-07-28 round does). A failure of
            // the call itself (a trap, a limit) still fails it.
            if let Some(requests) = link.as_ref().and_then(|l| l.pending())
                && matches!(label, "ok" | "tool_error")
            {
                return AttemptOutcome::InputRequired { requests };
            }
            let error_text = outcome
                .content
                .iter()
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let body = json!({
                "content": outcome.content,
                "structuredContent": outcome.structured,
                "isError": outcome.is_error,
            });
            if outcome.is_error {
                // The tool's own answer (an error it returned, arguments it
                // rejects) is the task's result; a failure of the call itself
                // (a trap, a limit, an unload) has none, so MCP tasks end
                // `failed` rather than `completed` with an error result.
                let answered = matches!(label, "tool_error" | "invalid_arguments" | "refused");
                AttemptOutcome::Failed {
                    error: error_text,
                    // Arguments the tool rejects, or a capability the policy
                    // refuses, fail the same way every time.
                    retryable: !matches!(label, "invalid_arguments" | "refused"),
                    result: answered.then_some(body),
                }
            } else {
                AttemptOutcome::Completed(body)
            }
        })
    }
    fn hosted_tools(&self) -> Option<Vec<String>> {
        Some(self.catalog.snapshot().tool_names())
    }
}
