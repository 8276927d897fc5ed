//! Group commit: concurrent callers share one transaction, so one fsync makes
//! all their changes durable instead of one fsync each.
//!
//! A caller hands in its job and blocks until that job's result is in. Whoever
//! finds no batch running becomes the *leader*: it takes the oldest waiting
//! jobs (its own among them, at most [`MAX_BATCH`]), runs them all through
//! the `run` function it was given (one transaction, committed once), posts
//! each job's result, and steps down. Callers that arrived meanwhile have
//! queued up behind it; when it steps down one of them leads the next batch.
//! A lone caller leads a batch of one at once: nobody waits for company (no
//! timer), so at concurrency 1 this is the plain one-transaction path.
//!
//! Waiting is a std `Condvar`: callers are synchronous (the store's users call
//! it on blocking threads, `spawn_blocking`). A follower never waits for a
//! task that needs scheduling: the leader is always a thread that is already
//! running the batch, so blocking a follower cannot starve it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The most jobs one leader runs in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

pub(crate) struct GroupCommit<J, R> {
    state: Mutex<State<J, R>>,
    /// Notified whenever a leader steps down (its batch's results are in).
    done: Condvar,
}

struct State<J, R> {
    next_ticket: u64,
    /// Jobs waiting for a leader, oldest first, by ticket.
    pending: VecDeque<(u64, J)>,
    /// Results not yet collected by their callers; `None`: the batch's leader
    /// panicked before its `run` returned.
    results: HashMap<u64, Option<R>>,
    /// A leader is running a batch.
    leading: bool,
}

impl<J, R> GroupCommit<J, R> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                next_ticket: 0,
                pending: VecDeque::new(),
                results: HashMap::new(),
                leading: false,
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J, R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `job` together with the jobs of other callers waiting now, and
    /// return its own result. `run` is called (on this thread, if it leads)
    /// with a batch of jobs, oldest first, and returns one result per job in
    /// the same order. `None` when the leader of `job`'s batch panicked.
    pub(crate) fn run(&self, job: J, mut run: impl FnMut(Vec<J>) -> Vec<R>) -> Option<R> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push_back((ticket, job));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if !state.leading {
                // Lead one batch. Our job is in it unless more than a batch
                // was waiting ahead of it; then we loop and lead (or wait) again.
                state.leading = true;
                let n = state.pending.len().min(MAX_BATCH);
                let (tickets, jobs): (Vec<u64>, Vec<J>) = state.pending.drain(..n).unzip();
                drop(state);
                let mut leader = Leader {
                    group: self,
                    tickets,
                    results: Vec::new(),
                };
                leader.results = run(jobs);
                drop(leader); // posts the results and steps down
                state = self.lock();
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A batch being run. Dropping it posts the results (also when `run`
/// panicked: its callers then get `None` instead of waiting for ever) and
/// hands the lead to the next caller.
struct Leader<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    tickets: Vec<u64>,
    results: Vec<R>,
}

impl<J, R> Drop for Leader<'_, J, R> {
    fn drop(&mut self) {
        let mut results = std::mem::take(&mut self.results).into_iter();
        let mut state = self.group.lock();
        for ticket in self.tickets.drain(..) {
            state.results.insert(ticket, results.next());
        }
        state.leading = false;
        drop(state);
        self.group.done.notify_all();
    }
}

#[cfg(test)]
impl<J, R> GroupCommit<J, R> {
    /// Whether a batch is running, and how many jobs wait for the next one.
    pub(crate) fn waiting(&self) -> (bool, usize) {
        let state = self.lock();
        (state.leading, state.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_lone_caller_runs_its_job_at_once_and_concurrent_ones_share_batches() {
        let group = GroupCommit::<u32, u32>::new();
        let batches = AtomicUsize::new(0);
        let double = |jobs: Vec<u32>| {
            batches.fetch_add(1, Ordering::Relaxed);
            // Slow enough that other callers queue up behind a batch.
            std::thread::sleep(std::time::Duration::from_millis(2));
            jobs.into_iter().map(|j| j * 2).collect()
        };
        assert_eq!(group.run(21, double), Some(42));
        assert_eq!(batches.load(Ordering::Relaxed), 1);
        std::thread::scope(|s| {
            for t in 0..16u32 {
                let (group, double) = (&group, &double);
                s.spawn(move || {
                    for i in 0..20 {
                        let job = t * 1000 + i;
                        assert_eq!(group.run(job, double), Some(job * 2));
                    }
                });
            }
        });
        let batches = batches.load(Ordering::Relaxed);
        assert!(batches < 1 + 16 * 20, "no batch was shared: {batches}");
    }

    #[test]
    fn when_a_leader_panics_its_batch_gets_none_and_the_next_caller_leads() {
        let group = GroupCommit::<u32, u32>::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.run(1, |_| panic!("the batch failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(group.run(2, |jobs| jobs), Some(2));
    }
}
