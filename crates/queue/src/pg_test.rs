//! Tests' PostgreSQL: a fresh schema on the server `scripts/test.sh` starts
//! (`MCPPLUS_TEST_PG_URL`), dropped when the test ends. Without that server
//! the PostgreSQL tests fail, saying how to start one: they never skip.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::QueueStore;
use crate::postgres_store::{Clock, PostgresOptions, PostgresStore};

pub struct TestSchema {
    pub queue: std::sync::Arc<QueueStore>,
    pub schema: String,
    pub url: String,
}

/// The test server's URL, or a panic that says how to get one.
pub fn test_url() -> String {
    std::env::var("MCPPLUS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL backend's tests need a server: run scripts/test.sh, or \
             `scripts/postgres.sh start /tmp/mcpplus-pg` and export MCPPLUS_TEST_PG_URL=<the URL it prints>"
        )
    })
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSchema {
    /// A store driven by the test's clock (`now` as passed).
    pub fn new() -> Self {
        Self::with_clock(Clock::Passed)
    }

    pub fn with_clock(clock: Clock) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let url = test_url();
        let store = PostgresStore::open(PostgresOptions {
            url: url.clone(),
            schema: schema.clone(),
            ca_file: None,
            pool_size: 4,
            clock,
        })
        .unwrap_or_else(|e| panic!("cannot open the test schema {schema}: {e}"));
        Self {
            queue: std::sync::Arc::new(QueueStore::with_backend(Box::new(store))),
            schema,
            url,
        }
    }

    /// Another store on the same schema (a second node).
    pub fn another_node(&self, clock: Clock) -> QueueStore {
        let store = PostgresStore::open(PostgresOptions {
            url: self.url.clone(),
            schema: self.schema.clone(),
            ca_file: None,
            pool_size: 4,
            clock,
        })
        .expect("a second node on the test schema");
        QueueStore::with_backend(Box::new(store))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // A thread of its own: no tokio runtime may be running on it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("cannot drop the test schema {}: {dropped:?}", self.schema);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{Lease, NewTask, TaskState};

    fn task(tool: &str) -> NewTask {
        NewTask::new(tool, json!({}))
    }

    /// A released attempt (a worker handing its task back) goes back to the
    /// queue without using up an attempt, once; progress is fenced by attempt.
    #[test]
    fn a_release_gives_the_attempt_back_once_and_progress_is_fenced() {
        let pg = TestSchema::new();
        let one_attempt = NewTask {
            max_attempts: 1,
            ..task("t")
        };
        let (t, _) = pg.queue.submit(one_attempt, 0).unwrap();
        let claim = pg.queue.claim("w/0", None, 60_000, 0).unwrap().unwrap();
        assert!(
            pg.queue
                .progress(&t.id, claim.attempt, 1.0, Some(2.0), Some("half"))
                .unwrap()
        );
        assert!(
            !pg.queue
                .progress(&t.id, claim.attempt + 1, 2.0, None, None)
                .unwrap()
        );
        let task = pg.queue.get(&t.id).unwrap();
        assert_eq!((task.progress, task.progress_total), (Some(1.0), Some(2.0)));
        assert_eq!(task.progress_message.as_deref(), Some("half"));
        assert!(pg.queue.release(&t.id, claim.attempt).unwrap());
        assert!(
            !pg.queue.release(&t.id, claim.attempt).unwrap(),
            "a second release changes nothing"
        );
        assert_eq!(pg.queue.get(&t.id).unwrap().state, TaskState::Queued);
        assert!(
            pg.queue.claim("w/0", None, 60_000, 1).unwrap().is_some(),
            "the released attempt did not count against max_attempts"
        );
    }

    /// Two nodes claiming from one database at once never get the same task.
    #[test]
    fn nodes_claiming_at_once_each_get_different_tasks() {
        let pg = TestSchema::with_clock(Clock::Database);
        let other = pg.another_node(Clock::Database);
        let tasks = 200;
        for _ in 0..tasks {
            pg.queue.submit(task("t"), 0).unwrap();
        }
        let claimed: Vec<Vec<String>> = std::thread::scope(|s| {
            let nodes = [&*pg.queue, &other, &*pg.queue, &other];
            let handles: Vec<_> = nodes
                .into_iter()
                .enumerate()
                .map(|(n, q)| {
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        while let Some(c) = q.claim(&format!("w{n}"), None, 30_000, 0).unwrap() {
                            mine.push(c.task.id);
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<&String> = claimed.iter().flatten().collect();
        let distinct: HashSet<&&String> = all.iter().collect();
        assert_eq!(all.len(), tasks, "every task claimed");
        assert_eq!(distinct.len(), tasks, "no task claimed twice");
        assert!(
            claimed.iter().filter(|c| !c.is_empty()).count() >= 2,
            "both nodes got work"
        );
    }

    /// A submit on one node wakes the idle workers of another (LISTEN/NOTIFY).
    #[test]
    fn a_submit_on_one_node_wakes_another_nodes_workers() {
        let pg = TestSchema::with_clock(Clock::Database);
        let other = pg.another_node(Clock::Database);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // The listener has connected once it has woken everyone at start;
            // submit repeatedly until a wake-up from the other node arrives.
            let woke = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let ready = other.ready_signal().notified();
                    tokio::pin!(ready);
                    ready.as_mut().enable();
                    pg.queue.submit(task("t"), 0).unwrap();
                    if tokio::time::timeout(Duration::from_millis(500), ready)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
            })
            .await;
            assert!(woke.is_ok(), "no wake-up reached the other node in 20 s");
            // Its listener is connected now (it wakes everyone once when it
            // connects, so the first wake-up proves only that): this one
            // can only come from the other node's NOTIFY.
            let ready = other.ready_signal().notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            pg.queue.submit(task("t"), 0).unwrap();
            tokio::time::timeout(Duration::from_secs(5), ready)
                .await
                .expect("the submit's NOTIFY woke the other node");
        });
    }

    /// Leases run on the database's clock: a node whose clock is an hour
    /// ahead cannot expire a fresh lease, and its heartbeat lasts the lease's
    /// length, not until its own clock's time.
    #[test]
    fn leases_follow_the_database_clock_not_the_nodes() {
        let pg = TestSchema::with_clock(Clock::Database);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let (t, _) = pg.queue.submit(task("t"), now).unwrap();
        let claim = pg
            .queue
            .claim("w", None, now + 60_000, now)
            .unwrap()
            .expect("a ready task");
        assert_eq!(claim.task.id, t.id);
        let hour_ahead = now + 3_600_000;
        assert_eq!(
            pg.queue.expire_leases(hour_ahead).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            pg.queue
                .heartbeat(&t.id, claim.attempt, now + 60_000)
                .unwrap(),
            Lease::Renewed
        );
        let lease = pg.queue.get(&t.id).unwrap().lease_until_ms.unwrap();
        assert!(
            (lease - (now + 60_000)).abs() < 10_000,
            "lease {lease} is not one minute from the database's now {now}"
        );
        assert_eq!(pg.queue.get(&t.id).unwrap().state, TaskState::Running);
    }

    /// The same idempotency key submitted on two nodes gives one task.
    #[test]
    fn an_idempotency_key_is_one_task_across_nodes() {
        let pg = TestSchema::with_clock(Clock::Database);
        let other = pg.another_node(Clock::Database);
        let keyed = || NewTask {
            idempotency_key: Some("k-1".into()),
            ..task("t")
        };
        let (a, fresh_a) = pg.queue.submit(keyed(), 0).unwrap();
        let (b, fresh_b) = other.submit(keyed(), 0).unwrap();
        assert!(fresh_a && !fresh_b);
        assert_eq!(a.id, b.id);
        let conflicting = NewTask {
            arguments: json!({"other": true}),
            ..keyed()
        };
        assert!(other.submit(conflicting, 0).is_err());
    }

    /// A second start on the same schema applies nothing twice; a schema
    /// newer than this build is refused with a clear message.
    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let pg = TestSchema::new();
        let again = pg.another_node(Clock::Passed);
        again.submit(task("t"), 0).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let versions: i64 = client
                .query_one(
                    &format!("SELECT COUNT(*) FROM {}.schema_version", pg.schema),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(versions, 1);
            client
                .execute(
                    &format!(
                        "INSERT INTO {}.schema_version (version) VALUES (999)",
                        pg.schema
                    ),
                    &[],
                )
                .await
                .unwrap();
        });
        let refused = PostgresStore::open(PostgresOptions {
            url: pg.url.clone(),
            schema: pg.schema.clone(),
            ca_file: None,
            pool_size: 1,
            clock: Clock::Passed,
        })
        .err()
        .expect("a newer schema is refused");
        assert!(
            refused
                .to_string()
                .contains("newer than this mcpplus knows"),
            "{refused}"
        );
    }

    /// With the server unreachable, calls fail quickly with a clear error.
    #[test]
    fn an_unreachable_database_is_a_clear_error_not_a_hang() {
        let started = std::time::Instant::now();
        let refused = PostgresStore::open(PostgresOptions {
            // Port 1 on loopback: nothing listens there.
            url: "postgres://mcpplus@127.0.0.1:1/mcpplus".into(),
            schema: "mcpplus".into(),
            ca_file: None,
            pool_size: 1,
            clock: Clock::Database,
        })
        .err()
        .expect("nothing listens on port 1");
        assert!(started.elapsed() < Duration::from_secs(30));
        let message = refused.to_string();
        assert!(
            message.contains("127.0.0.1:1") || message.contains("connect"),
            "{message}"
        );
    }
}
