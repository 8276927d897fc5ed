//! What nodes say to each other over `/mcpplus/queue/1.0.0` (request-response,
//! JSON, 1 MiB requests / 10 MiB responses at most).

use mcpplus_queue::remote::{OwnerRequest, OwnerResponse};
use serde::{Deserialize, Serialize};

pub use mcpplus_queue::remote::PROTOCOL;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum MeshRequest {
    /// A worker of the sender speaks to the queue of the receiver.
    Queue(OwnerRequest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum MeshResponse {
    Queue(OwnerResponse),
    /// The sender may not do this here; `error` names the missing role.
    Denied {
        error: String,
    },
}
