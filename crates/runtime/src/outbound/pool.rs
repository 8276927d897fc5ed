//! Idle HTTP/1.1 connections kept for reuse (keep-alive).
//!
//! A connection is filed under exactly what was checked before it was opened:
//! the scheme, the socket address that passed the address guard, and the host
//! name the request asked for (the TLS server name for https). A request takes
//! one only after its own grant and address check passed for that very address,
//! so a pooled connection is never a way around the guard: reusing it reaches
//! the same place a new connection would. DNS is still resolved for every
//! request; an answer that changes lands on another key.
//!
//! Bounded: at most `idle_per_key` idle connections per key and `idle_total` in
//! all (the oldest idle one goes first), none idle longer than `idle_timeout`
//! and none used past `max_lifetime` from its opening. The client returns a
//! connection only after reading its response whole without an error and when
//! neither side asked to close it; anything else drops it (closing the socket).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use super::guard::Target;
use mcpplus_policy::Scheme;

/// How many idle connections are kept and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub idle_per_key: usize,
    pub idle_total: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            idle_per_key: 8,
            idle_total: 256,
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(300),
        }
    }
}

/// What a connection was opened for and checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    tls: bool,
    addr: SocketAddr,
    /// The request's host (lower case): the TLS server name for https; for
    /// http, kept apart too, so no server sees two names on one connection.
    host: String,
}

impl PoolKey {
    pub fn new(target: &Target, addr: SocketAddr) -> Self {
        Self {
            tls: target.scheme == Scheme::Https,
            addr,
            host: target.host.clone(),
        }
    }
}

/// A live HTTP/1.1 connection. Dropping it closes the socket.
pub struct Conn {
    pub key: PoolKey,
    pub sender: SendRequest<Full<Bytes>>,
    pub created: Instant,
    _driver: AbortOnDrop,
}

impl Conn {
    /// `driver` runs the connection (hyper's `Connection` future); it is
    /// aborted when the connection is dropped.
    pub fn new(
        key: PoolKey,
        sender: SendRequest<Full<Bytes>>,
        driver: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            key,
            sender,
            created: Instant::now(),
            _driver: AbortOnDrop(driver),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one [`super::Outbound`].
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    limits: PoolLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per key, oldest first; taken from the back (the most recently used).
    idle: HashMap<PoolKey, Vec<Idle>>,
    total: usize,
    /// Closes expired connections while any are idle.
    reaper: Option<tokio::task::JoinHandle<()>>,
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn limits(&self) -> PoolLimits {
        self.inner.limits
    }

    /// Idle connections kept now, in all.
    pub fn idle(&self) -> usize {
        self.inner.state().total
    }

    /// Idle connections kept now under `key`.
    pub fn idle_for(&self, key: &PoolKey) -> usize {
        self.inner.state().idle.get(key).map_or(0, Vec::len)
    }

    /// An idle connection for one of `keys` (tried in order) that is still
    /// open, ready, not idle too long and not too old. Connections found
    /// unusable on the way are closed.
    pub fn checkout(&self, keys: impl IntoIterator<Item = PoolKey>) -> Option<Conn> {
        let now = Instant::now();
        let limits = self.inner.limits;
        let mut closed = Vec::new();
        let found = {
            let mut state = self.inner.state();
            let mut found = None;
            'keys: for key in keys {
                let Some(list) = state.idle.get_mut(&key) else {
                    continue;
                };
                let mut taken = 0;
                let mut hit = None;
                while let Some(idle) = list.pop() {
                    taken += 1;
                    if usable(&idle, now, &limits) {
                        hit = Some(idle.conn);
                        break;
                    }
                    closed.push(idle);
                }
                if list.is_empty() {
                    state.idle.remove(&key);
                }
                state.total -= taken;
                if hit.is_some() {
                    found = hit;
                    break 'keys;
                }
            }
            found
        };
        drop(closed);
        found
    }

    /// Keep `conn` for reuse, within the bounds. The caller read its last
    /// response whole and nobody asked to close it.
    pub fn checkin(&self, conn: Conn) {
        let limits = self.inner.limits;
        if limits.idle_per_key == 0
            || limits.idle_total == 0
            || conn.sender.is_closed()
            || conn.created.elapsed() >= limits.max_lifetime
        {
            return;
        }
        if !conn.sender.is_ready() {
            // hyper marks the connection ready once its task has finished the
            // exchange; normally that already happened. Otherwise wait for it a
            // little, off the request's path.
            let pool = Arc::downgrade(&self.inner);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut conn = conn;
                    let ready = tokio::time::timeout(Duration::from_secs(1), conn.sender.ready());
                    if let (Ok(Ok(())), Some(inner)) = (ready.await, pool.upgrade()) {
                        Inner::keep(&inner, conn);
                    }
                });
            }
            return;
        }
        Inner::keep(&self.inner, conn);
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn keep(inner: &Arc<Inner>, conn: Conn) {
        let limits = inner.limits;
        let mut evicted = Vec::new();
        {
            let mut state = inner.state();
            let list = state.idle.entry(conn.key.clone()).or_default();
            if list.len() >= limits.idle_per_key {
                evicted.push(list.remove(0));
                state.total -= 1;
            }
            if state.total >= limits.idle_total {
                // The connection idle longest, over all keys: the first of some list.
                let oldest = state
                    .idle
                    .iter()
                    .filter_map(|(key, list)| list.first().map(|i| (i.since, key.clone())))
                    .min_by_key(|(since, _)| *since)
                    .map(|(_, key)| key);
                if let Some(key) = oldest {
                    let list = state.idle.get_mut(&key).expect("just seen");
                    evicted.push(list.remove(0));
                    if list.is_empty() {
                        state.idle.remove(&key);
                    }
                    state.total -= 1;
                }
            }
            let key = conn.key.clone();
            state.idle.entry(key).or_default().push(Idle {
                conn,
                since: Instant::now(),
            });
            state.total += 1;
            if state.reaper.as_ref().is_none_or(|r| r.is_finished())
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let every = (limits.idle_timeout / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(5));
                state.reaper = Some(runtime.spawn(reap(Arc::downgrade(inner), every)));
            }
        }
        drop(evicted);
    }
}

fn usable(idle: &Idle, now: Instant, limits: &PoolLimits) -> bool {
    !idle.conn.sender.is_closed()
        && idle.conn.sender.is_ready()
        && now.duration_since(idle.since) < limits.idle_timeout
        && now.duration_since(idle.conn.created) < limits.max_lifetime
}

/// Every `every`, close the idle connections that expired or that the server
/// closed; stop when none is left (the next one kept starts it again).
async fn reap(pool: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let limits = inner.limits;
        let mut expired = Vec::new();
        let done = {
            let mut state = inner.state();
            let state = &mut *state;
            state.idle.retain(|_, list| {
                let (keep, gone): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|i| usable(i, now, &limits));
                *list = keep;
                expired.extend(gone);
                !list.is_empty()
            });
            state.total -= expired.len();
            let done = state.total == 0;
            if done {
                // Under the lock: a connection kept after this sees no reaper
                // and starts one.
                state.reaper = None;
            }
            done
        };
        drop(expired);
        if done {
            return;
        }
    }
}
