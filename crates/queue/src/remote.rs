//! The queue across nodes, owner side: the protocol a worker node speaks to
//! the node that owns a task (`/mcpplus/queue/1.0.0`), and [`RemoteOwner`],
//! which answers it from the local store.
//!
//! A task stays in the store of the node that accepted it. Workers on other
//! nodes pull: they claim with a lease, heartbeat, and report the outcome
//! back. Leases travel as durations and only the owner's clock compares
//! times: a grant or renewal lasts `lease_ms` from when the owner handled the
//! request, which is never before the worker sent it. The worker side is
//! [`crate::pull`]. The transport (libp2p in `mcpplus-mesh`, a lossy channel
//! in the model test) only carries these messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{AttemptOutcome, Lease, QueueStore, Settled, TaskState};

/// The request-response protocol name.
pub const PROTOCOL: &str = "/mcpplus/queue/1.0.0";
/// The most tasks one claim may ask for.
pub const MAX_CLAIM: u32 = 16;
/// The most attempts one heartbeat may carry.
pub const MAX_HEARTBEAT: usize = 256;
/// The longest progress message kept, in characters.
const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Claims remembered for retries (per owner, all peers together).
const REMEMBERED_CLAIMS: usize = 4096;

/// What a worker node asks a task's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OwnerRequest {
    /// Up to `max` ready tasks of `tools`. A retried request with the same
    /// `claim_id` (its answer was lost) gets the same grants back, as long
    /// as they still hold.
    Claim {
        /// The worker slot asking (for listings: `<peer>/<worker>`).
        worker: String,
        tools: Vec<String>,
        max: u32,
        claim_id: String,
    },
    /// Renew these attempts' leases.
    Heartbeat { attempts: Vec<AttemptRef> },
    /// How an attempt ended.
    Complete {
        id: String,
        attempt: u32,
        outcome: AttemptOutcome,
    },
    /// An attempt granted but never started (its grant came too late).
    Release { id: String, attempt: u32 },
    /// A running attempt's progress, in the tool's units (the owner shows it
    /// to whoever waits for the task: `tasks/get`, a federated call).
    Progress {
        id: String,
        attempt: u32,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    },
}

/// One attempt of one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    pub id: String,
    pub attempt: u32,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OwnerResponse {
    Granted {
        grants: Vec<Grant>,
    },
    /// One answer per attempt of the heartbeat, in its order.
    Leases {
        leases: Vec<Lease>,
    },
    Settled {
        settled: Settled,
    },
    Released {
        released: bool,
    },
    /// `false` when the attempt no longer holds the task.
    Progressed {
        recorded: bool,
    },
    /// The request was refused; `error` says why and what to do.
    Refused {
        error: String,
    },
}

/// A task handed to a remote worker: run `tool` with `arguments` as attempt
/// `attempt`, heartbeating well within `lease_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub attempt: u32,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub timeout_ms: Option<u64>,
    pub lease_ms: u64,
}

/// Answers workers of other nodes from this node's store.
pub struct RemoteOwner {
    store: Arc<QueueStore>,
    lease: Duration,
    claims: Mutex<RememberedClaims>,
}

#[derive(Default)]
struct RememberedClaims {
    grants: HashMap<(String, String), Vec<Grant>>,
    order: VecDeque<(String, String)>,
}

impl RemoteOwner {
    pub fn new(store: Arc<QueueStore>, lease: Duration) -> Self {
        Self {
            store,
            lease,
            claims: Mutex::default(),
        }
    }

    /// This node's store.
    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }

    /// How long a claim that finds nothing may wait for work before it is
    /// answered empty: short beside the lease, so the grant still arrives
    /// well inside the worker's fencing margin.
    pub fn claim_hold(&self) -> Duration {
        (self.lease / 10).min(Duration::from_secs(1))
    }

    /// Answer `request` from `peer` at owner time `now` (ms). Blocking: call
    /// it off the async threads. The caller has checked the peer's role.
    pub fn handle(&self, peer: &str, request: OwnerRequest, now: i64) -> OwnerResponse {
        match self.answer(peer, request, now) {
            Ok(response) => response,
            Err(e) => OwnerResponse::Refused {
                error: e.to_string(),
            },
        }
    }

    fn answer(
        &self,
        peer: &str,
        request: OwnerRequest,
        now: i64,
    ) -> crate::store::Result<OwnerResponse> {
        let lease_ms = self.lease.as_millis() as i64;
        Ok(match request {
            OwnerRequest::Claim {
                worker,
                tools,
                max,
                claim_id,
            } => {
                let key = (peer.to_string(), claim_id);
                if let Some(earlier) = self.remembered(&key) {
                    // Only the grants that still hold: a lapsed one may
                    // already run elsewhere.
                    let mut still = Vec::new();
                    for grant in earlier {
                        let task = self.store.get(&grant.id)?;
                        if task.state == TaskState::Running && task.attempt == grant.attempt {
                            self.store
                                .heartbeat(&grant.id, grant.attempt, now + lease_ms)?;
                            still.push(grant);
                        }
                    }
                    return Ok(OwnerResponse::Granted { grants: still });
                }
                if tools.is_empty() {
                    return Ok(OwnerResponse::Refused {
                        error: "a remote claim must name the tools its worker hosts".into(),
                    });
                }
                let slot = format!("{peer}/{worker}");
                let mut grants = Vec::new();
                for _ in 0..max.min(MAX_CLAIM) {
                    let Some(claim) = self.store.claim_as(
                        &slot,
                        Some(peer),
                        Some(&tools),
                        now + lease_ms,
                        now,
                    )?
                    else {
                        break;
                    };
                    grants.push(Grant {
                        id: claim.task.id.clone(),
                        attempt: claim.attempt,
                        tool: claim.task.tool.clone(),
                        arguments: claim.task.arguments.clone(),
                        timeout_ms: claim.task.timeout_ms,
                        lease_ms: lease_ms as u64,
                    });
                }
                // An empty answer is not remembered: a retry may find work.
                if !grants.is_empty() {
                    self.remember(key, grants.clone());
                }
                OwnerResponse::Granted { grants }
            }
            OwnerRequest::Heartbeat { attempts } => {
                if attempts.len() > MAX_HEARTBEAT {
                    return Ok(OwnerResponse::Refused {
                        error: format!(
                            "a heartbeat may carry at most {MAX_HEARTBEAT} attempts, got {}",
                            attempts.len()
                        ),
                    });
                }
                let leases = attempts
                    .iter()
                    .map(|a| self.store.heartbeat(&a.id, a.attempt, now + lease_ms))
                    .collect::<Result<_, _>>()?;
                OwnerResponse::Leases { leases }
            }
            OwnerRequest::Complete {
                id,
                attempt,
                outcome,
            } => OwnerResponse::Settled {
                settled: self.store.settle(&id, attempt, &outcome, now)?,
            },
            OwnerRequest::Release { id, attempt } => OwnerResponse::Released {
                released: self.store.release(&id, attempt)?,
            },
            OwnerRequest::Progress {
                id,
                attempt,
                progress,
                total,
                message,
            } => {
                // Bounded like a local report: a long message is cut, not stored whole.
                let message =
                    message.map(|m| m.chars().take(MAX_PROGRESS_MESSAGE).collect::<String>());
                OwnerResponse::Progressed {
                    recorded: self.store.progress(
                        &id,
                        attempt,
                        progress,
                        total,
                        message.as_deref(),
                    )?,
                }
            }
        })
    }

    fn remembered(&self, key: &(String, String)) -> Option<Vec<Grant>> {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.grants.get(key).cloned()
    }

    fn remember(&self, key: (String, String), grants: Vec<Grant>) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims.order.len() >= REMEMBERED_CLAIMS
            && let Some(oldest) = claims.order.pop_front()
        {
            claims.grants.remove(&oldest);
        }
        claims.order.push_back(key.clone());
        claims.grants.insert(key, grants);
    }
}
