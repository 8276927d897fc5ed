//! The queue across nodes, worker side: idle slots of this node pull tasks
//! from another node that owns them (protocol in [`crate::remote`]).
//!
//! [`OwnerPull`] is the whole decision logic for one owner and carries no
//! I/O: the driver feeds it the clock, answers and finished runs, and carries
//! out the [`Action`]s it returns (send a request, start or stop a run). The
//! mesh drives it over libp2p; the model test drives it over a channel that
//! drops, duplicates and reorders messages.
//!
//! Safety rests on two rules:
//! - **Self-fencing.** An attempt stops once no heartbeat sent in the last
//!   2/3 of its lease has been acknowledged. The owner's lease runs from when
//!   it *received* the renewal, never earlier than it was sent, so the worker
//!   stops at least a third of a lease before the owner can hand the task to
//!   someone else — unless this process stalls for longer than that.
//! - **The outbox.** A finished attempt's outcome is written to this node's
//!   store before it is sent, and re-sent until the owner answers
//!   (`recorded`, `already_recorded` or `stale`), across restarts too.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::remote::{AttemptRef, Grant, OwnerRequest, OwnerResponse};
use crate::{AttemptOutcome, Lease, QueueStore, Settled};

/// How often, within one lease, a running attempt's lease is renewed.
const HEARTBEATS_PER_LEASE: i64 = 6;

/// The lease of one attempt as its worker sees it.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    lease_ms: i64,
    /// When the newest acknowledged renewal (or the claim) was sent.
    acknowledged_sent_at: i64,
    next_heartbeat_at: i64,
}

impl LeaseKeeper {
    /// For a grant answered to a claim first sent at `claim_sent_at`: the
    /// owner's lease cannot have started before that.
    pub fn new(claim_sent_at: i64, lease_ms: u64) -> Self {
        let lease_ms = lease_ms as i64;
        Self {
            lease_ms,
            acknowledged_sent_at: claim_sent_at,
            next_heartbeat_at: claim_sent_at + lease_ms / HEARTBEATS_PER_LEASE,
        }
    }

    /// Whether the attempt must stop: nothing sent in the last 2/3 lease was
    /// acknowledged.
    pub fn must_stop(&self, now: i64) -> bool {
        now - self.acknowledged_sent_at >= self.lease_ms * 2 / 3
    }

    /// Whether a renewal is due; if so it counts as sent at `now`.
    pub fn heartbeat_due(&mut self, now: i64) -> bool {
        if now < self.next_heartbeat_at {
            return false;
        }
        self.next_heartbeat_at = now + self.lease_ms / HEARTBEATS_PER_LEASE;
        true
    }

    /// The owner renewed a heartbeat sent at `sent_at`.
    pub fn acknowledged(&mut self, sent_at: i64) {
        self.acknowledged_sent_at = self.acknowledged_sent_at.max(sent_at);
    }
}

/// What a request was for, so its answer finds its way back.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    Claim { slot: usize, claim_id: String },
    Heartbeat { attempts: Vec<AttemptRef> },
    Complete(AttemptRef),
    Release(AttemptRef),
}

/// A request to send to the owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub request: OwnerRequest,
    pub purpose: Purpose,
    pub sent_at: i64,
}

/// Why a running attempt stops before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No renewal acknowledged for 2/3 of the lease (partition, slow owner).
    Fenced,
    /// The owner says the task was cancelled.
    Cancelled,
    /// The owner says the attempt no longer holds the task.
    Lost,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(Outgoing),
    /// Run `grant` in `slot`; report the end with [`OwnerPull::finished`].
    Start {
        slot: usize,
        grant: Grant,
    },
    /// Stop the run in `slot` now; its outcome is not reported.
    Stop {
        slot: usize,
        attempt: AttemptRef,
        why: StopReason,
    },
    /// The owner answered a reported outcome (for logs and metrics).
    Reported {
        attempt: AttemptRef,
        settled: Settled,
    },
}

#[derive(Debug, Clone)]
enum Slot {
    Idle {
        next_claim_at: i64,
    },
    Claiming {
        claim_id: String,
        first_sent_at: i64,
        last_sent_at: i64,
        request: OwnerRequest,
    },
    Running {
        attempt: AttemptRef,
        keeper: LeaseKeeper,
    },
}

/// Timing of a worker's pulling.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// This worker's name at the owner (`<worker>/<slot>` is appended).
    pub worker: String,
    /// The tools this node hosts (claims ask only for these).
    pub tools: Vec<String>,
    pub slots: usize,
    /// How long an idle slot waits after an empty or refused claim.
    pub poll_ms: i64,
    /// How long an unanswered request waits before it is sent again.
    pub retry_ms: i64,
    /// The owner's lease, until a grant says otherwise; claims are given up
    /// after 2/3 of it.
    pub lease_ms: u64,
}

/// One node's pulling from one owner.
pub struct OwnerPull {
    owner: String,
    config: PullConfig,
    outbox: Arc<QueueStore>,
    slots: Vec<Slot>,
    /// Outcomes waiting for the owner's answer → when to send again.
    unanswered: BTreeMap<AttemptRef, i64>,
    /// Unique to this instance, so a restarted worker's claim ids never meet
    /// the grants its previous life was given.
    instance: u64,
    claims_made: u64,
}

impl OwnerPull {
    /// Pull from `owner`, keeping finished outcomes in `outbox` (this node's
    /// store). Outcomes left there by an earlier run are sent again.
    pub fn new(
        owner: impl Into<String>,
        config: PullConfig,
        outbox: Arc<QueueStore>,
        now: i64,
    ) -> crate::store::Result<Self> {
        let owner = owner.into();
        let unanswered = outbox
            .outbox(&owner)?
            .into_iter()
            .map(|(attempt, _)| (attempt, now))
            .collect();
        Ok(Self {
            slots: vec![Slot::Idle { next_claim_at: now }; config.slots],
            owner,
            config,
            outbox,
            unanswered,
            instance: instance_nonce(),
            claims_made: 0,
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The tools later claims ask for (the node's catalog changed).
    pub fn set_tools(&mut self, tools: Vec<String>) {
        self.config.tools = tools;
    }

    /// The owner hinted that work is ready: idle slots claim at the next tick
    /// instead of waiting out their poll.
    pub fn poke(&mut self, now: i64) {
        for slot in &mut self.slots {
            if let Slot::Idle { next_claim_at } = slot {
                *next_claim_at = (*next_claim_at).min(now);
            }
        }
    }

    /// The attempts running here now.
    pub fn running(&self) -> Vec<(usize, AttemptRef)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Running { attempt, .. } => Some((i, attempt.clone())),
                _ => None,
            })
            .collect()
    }

    /// Outcomes not yet answered by the owner.
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    /// Time passed: claim with idle slots, renew leases, fence attempts
    /// whose lease may be gone, and send unanswered outcomes again.
    pub fn tick(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        let give_up_claim = self.config.lease_ms as i64 * 2 / 3;
        for slot in 0..self.slots.len() {
            match &mut self.slots[slot] {
                Slot::Running { attempt, keeper } if keeper.must_stop(now) => {
                    actions.push(Action::Stop {
                        slot,
                        attempt: attempt.clone(),
                        why: StopReason::Fenced,
                    });
                    self.slots[slot] = Slot::Idle { next_claim_at: now };
                }
                Slot::Claiming { first_sent_at, .. } if now - *first_sent_at >= give_up_claim => {
                    // A grant that still arrives is released (see `answered`).
                    self.slots[slot] = Slot::Idle { next_claim_at: now };
                }
                Slot::Claiming {
                    last_sent_at,
                    request,
                    claim_id,
                    ..
                } if now - *last_sent_at >= self.config.retry_ms => {
                    *last_sent_at = now;
                    actions.push(Action::Send(Outgoing {
                        request: request.clone(),
                        purpose: Purpose::Claim {
                            slot,
                            claim_id: claim_id.clone(),
                        },
                        sent_at: now,
                    }));
                }
                _ => {}
            }
            if let Slot::Idle { next_claim_at } = self.slots[slot]
                && now >= next_claim_at
            {
                actions.push(self.claim(slot, now));
            }
        }
        // One renewal for every running attempt once any is due.
        let mut due = false;
        for slot in &mut self.slots {
            if let Slot::Running { keeper, .. } = slot {
                due |= keeper.heartbeat_due(now);
            }
        }
        if due {
            let attempts: Vec<AttemptRef> = self.running().into_iter().map(|(_, a)| a).collect();
            actions.push(Action::Send(Outgoing {
                request: OwnerRequest::Heartbeat {
                    attempts: attempts.clone(),
                },
                purpose: Purpose::Heartbeat { attempts },
                sent_at: now,
            }));
        }
        let due: Vec<AttemptRef> = self
            .unanswered
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(a, _)| a.clone())
            .collect();
        for attempt in due {
            actions.extend(self.send_outcome(attempt, now));
        }
        actions
    }

    fn claim(&mut self, slot: usize, now: i64) -> Action {
        self.claims_made += 1;
        let claim_id = format!(
            "{}-{:016x}-{}",
            self.config.worker, self.instance, self.claims_made
        );
        let request = OwnerRequest::Claim {
            worker: format!("{}/{slot}", self.config.worker),
            tools: self.config.tools.clone(),
            max: 1,
            claim_id: claim_id.clone(),
        };
        self.slots[slot] = Slot::Claiming {
            claim_id: claim_id.clone(),
            first_sent_at: now,
            last_sent_at: now,
            request: request.clone(),
        };
        Action::Send(Outgoing {
            request,
            purpose: Purpose::Claim { slot, claim_id },
            sent_at: now,
        })
    }

    /// The owner answered the request sent at `sent_at` for `purpose`.
    pub fn answered(
        &mut self,
        purpose: Purpose,
        sent_at: i64,
        response: OwnerResponse,
        now: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        match (purpose, response) {
            (Purpose::Claim { slot, claim_id }, OwnerResponse::Granted { grants }) => {
                let mut grants = grants.into_iter();
                let waiting = matches!(&self.slots[slot],
                    Slot::Claiming { claim_id: c, .. } if *c == claim_id);
                if waiting {
                    let Slot::Claiming { first_sent_at, .. } = self.slots[slot] else {
                        unreachable!("checked above")
                    };
                    match grants.next() {
                        Some(grant) => {
                            let keeper = LeaseKeeper::new(first_sent_at, grant.lease_ms);
                            if keeper.must_stop(now) {
                                // Too late to start safely: give it back.
                                actions.push(self.release(&grant, now));
                                self.slots[slot] = Slot::Idle { next_claim_at: now };
                            } else {
                                self.slots[slot] = Slot::Running {
                                    attempt: AttemptRef {
                                        id: grant.id.clone(),
                                        attempt: grant.attempt,
                                    },
                                    keeper,
                                };
                                actions.push(Action::Start { slot, grant });
                            }
                        }
                        None => {
                            self.slots[slot] = Slot::Idle {
                                next_claim_at: now + self.config.poll_ms,
                            }
                        }
                    }
                }
                // Grants nobody waits for (a duplicate or late answer).
                for grant in grants {
                    let attempt = AttemptRef {
                        id: grant.id.clone(),
                        attempt: grant.attempt,
                    };
                    // Running here, or finished and being reported: keep it.
                    let ours = self.slot_running(&attempt).is_some()
                        || self.unanswered.contains_key(&attempt);
                    if !ours {
                        actions.push(self.release(&grant, now));
                    }
                }
            }
            (Purpose::Claim { slot, claim_id }, OwnerResponse::Refused { .. }) => {
                if matches!(&self.slots[slot], Slot::Claiming { claim_id: c, .. } if *c == claim_id)
                {
                    self.slots[slot] = Slot::Idle {
                        next_claim_at: now + self.config.poll_ms,
                    };
                }
            }
            (Purpose::Heartbeat { attempts }, OwnerResponse::Leases { leases }) => {
                for (attempt, lease) in attempts.into_iter().zip(leases) {
                    let Some(slot) = self.slot_running(&attempt) else {
                        continue;
                    };
                    match lease {
                        Lease::Renewed => {
                            if let Slot::Running { keeper, .. } = &mut self.slots[slot] {
                                keeper.acknowledged(sent_at);
                            }
                        }
                        Lease::Cancelled | Lease::Lost => {
                            let why = if lease == Lease::Cancelled {
                                StopReason::Cancelled
                            } else {
                                StopReason::Lost
                            };
                            actions.push(Action::Stop { slot, attempt, why });
                            self.slots[slot] = Slot::Idle { next_claim_at: now };
                        }
                    }
                }
            }
            (Purpose::Complete(attempt), OwnerResponse::Settled { settled })
                if self.unanswered.remove(&attempt).is_some() =>
            {
                let _ = self
                    .outbox
                    .outbox_remove(&self.owner, &attempt.id, attempt.attempt);
                actions.push(Action::Reported { attempt, settled });
            }
            // Refused renewals or reports, and release answers: nothing to
            // do; an unanswered outcome is sent again on its timer.
            _ => {}
        }
        actions
    }

    /// The run in `slot` ended with `outcome`. Kept in the outbox, then sent.
    pub fn finished(
        &mut self,
        slot: usize,
        attempt: &AttemptRef,
        outcome: AttemptOutcome,
        now: i64,
    ) -> crate::store::Result<Vec<Action>> {
        if self.slot_running(attempt) != Some(slot) {
            // Stopped before it ended: its outcome is not ours to report.
            return Ok(Vec::new());
        }
        self.outbox
            .outbox_put(&self.owner, &attempt.id, attempt.attempt, &outcome, now)?;
        self.slots[slot] = Slot::Idle { next_claim_at: now };
        self.unanswered.insert(attempt.clone(), now);
        Ok(self
            .send_outcome(attempt.clone(), now)
            .into_iter()
            .collect())
    }

    fn send_outcome(&mut self, attempt: AttemptRef, now: i64) -> Option<Action> {
        let Some(outcome) = self.outbox.outbox_get(&self.owner, &attempt).ok().flatten() else {
            // Gone from the outbox (answered through a duplicate): done.
            self.unanswered.remove(&attempt);
            return None;
        };
        self.unanswered
            .insert(attempt.clone(), now + self.config.retry_ms);
        Some(Action::Send(Outgoing {
            request: OwnerRequest::Complete {
                id: attempt.id.clone(),
                attempt: attempt.attempt,
                outcome,
            },
            purpose: Purpose::Complete(attempt),
            sent_at: now,
        }))
    }

    fn release(&self, grant: &Grant, now: i64) -> Action {
        let attempt = AttemptRef {
            id: grant.id.clone(),
            attempt: grant.attempt,
        };
        Action::Send(Outgoing {
            request: OwnerRequest::Release {
                id: attempt.id.clone(),
                attempt: attempt.attempt,
            },
            purpose: Purpose::Release(attempt),
            sent_at: now,
        })
    }

    fn slot_running(&self, attempt: &AttemptRef) -> Option<usize> {
        self.running()
            .into_iter()
            .find(|(_, a)| a == attempt)
            .map(|(slot, _)| slot)
    }
}

/// A random number, different for every instance (std's hasher keys are
/// random per process and per `RandomState`).
fn instance_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
