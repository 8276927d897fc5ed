//! [`crate::QueueStore::transaction`] on PostgreSQL: one database
//! transaction held open while a synchronous body (the workflow controller)
//! runs its statements and submits.
//!
//! tokio-postgres is async and the body is not, so the transaction lives in
//! a task on the store's runtime that executes one [`Op`] at a time for the
//! body's thread, which waits for each answer on a channel (the same way
//! every call of the store waits: safe from any thread). Dropping the
//! [`PgTxn`] without committing closes the channel; the task then drops
//! the transaction, which rolls it back.

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use super::{begin, clock_and_room, get, get_for_update, insert, notify, pg_error};
use crate::sql::{
    Dialect, Sql, SqlRow, SqlValue, postgres_params, postgres_placeholders, postgres_row,
};
use crate::store::{Result, StoreError, TxnBackend};
use crate::{NewTask, Task};
use mcpplus_policy::config::queue::Quotas;

enum Op {
    Execute(String, Vec<SqlValue>),
    Query(String, Vec<SqlValue>),
    Batch(String),
    Submit(Box<NewTask>),
    Get(String),
    Cancel(String, String),
}

enum Answer {
    Changed(u64),
    Rows(Vec<SqlRow>),
    Done,
    Submitted(Task, bool, u64),
    Task(Option<Task>),
}

enum Command {
    Run(Op, std::sync::mpsc::SyncSender<Result<Answer>>),
    /// Commit; answers whether tasks were submitted and whether any changed.
    Commit(std::sync::mpsc::SyncSender<Result<(bool, bool)>>),
}

/// What the transaction's task needs from the store.
pub(super) struct Opening {
    pub pool: Pool,
    pub passed: Option<i64>,
    pub quotas: Quotas,
    pub ready_channel: String,
    pub changed_channel: String,
}

/// The body's side of an open transaction.
pub(super) struct PgTxn {
    commands: mpsc::UnboundedSender<Command>,
    now: i64,
    room: u64,
}

impl PgTxn {
    /// Open a transaction on `runtime`. Its clock ([`TxnBackend::now`]) is
    /// the store's: the database's `now()`, so that every node's controller
    /// stamps workflows on one clock, or the passed one in tests.
    pub fn open(runtime: &tokio::runtime::Runtime, opening: Opening) -> Result<Self> {
        let (opened, opened_answer) = std::sync::mpsc::sync_channel(1);
        let (commands, receiver) = mpsc::unbounded_channel();
        runtime.spawn(serve(opening, opened, receiver));
        let (now, room) = opened_answer
            .recv()
            .map_err(|_| pg_error("the transaction's task ended before it began"))??;
        Ok(Self {
            commands,
            now,
            room,
        })
    }

    fn call(&self, op: Op) -> Result<Answer> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.commands
            .send(Command::Run(op, reply))
            .map_err(|_| pg_error("the transaction's task ended"))?;
        answer
            .recv()
            .map_err(|_| pg_error("the transaction's task ended before it answered"))?
    }

    /// Commit; returns (tasks were submitted, tasks changed).
    pub fn commit(self) -> Result<(bool, bool)> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.commands
            .send(Command::Commit(reply))
            .map_err(|_| pg_error("the transaction's task ended"))?;
        answer
            .recv()
            .map_err(|_| pg_error("the commit was dropped before it answered"))?
    }
}

fn unexpected() -> StoreError {
    pg_error("the transaction's task answered another request")
}

impl Sql for PgTxn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64> {
        match self.call(Op::Execute(sql.to_string(), params.to_vec()))? {
            Answer::Changed(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<SqlRow>> {
        match self.call(Op::Query(sql.to_string(), params.to_vec()))? {
            Answer::Rows(rows) => Ok(rows),
            _ => Err(unexpected()),
        }
    }

    fn batch(&self, sql: &str) -> Result<()> {
        match self.call(Op::Batch(sql.to_string()))? {
            Answer::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }
}

impl TxnBackend for PgTxn {
    fn sql(&self) -> &dyn Sql {
        self
    }

    fn now(&self) -> i64 {
        self.now
    }

    fn room(&self) -> u64 {
        self.room
    }

    fn submit(&mut self, new: NewTask) -> Result<(Task, bool)> {
        match self.call(Op::Submit(Box::new(new)))? {
            Answer::Submitted(task, new, room) => {
                self.room = room;
                Ok((task, new))
            }
            _ => Err(unexpected()),
        }
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        match self.call(Op::Get(id.to_string()))? {
            Answer::Task(task) => Ok(task),
            _ => Err(unexpected()),
        }
    }

    fn cancel(&mut self, id: &str, reason: &str) -> Result<Option<Task>> {
        match self.call(Op::Cancel(id.to_string(), reason.to_string()))? {
            Answer::Task(task) => Ok(task),
            _ => Err(unexpected()),
        }
    }
}

/// The transaction's task: begin, answer the body's ops in order, commit
/// when asked; roll back when the body's side goes away.
async fn serve(
    opening: Opening,
    opened: std::sync::mpsc::SyncSender<Result<(i64, u64)>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut client = match opening.pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let _ = opened.send(Err(e.into()));
            return;
        }
    };
    let tx = match begin(&mut client).await {
        Ok(tx) => tx,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let (now, mut room) = match clock_and_room(&tx, opening.passed, opening.quotas).await {
        Ok(found) => found,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    if opened.send(Ok((now, room))).is_err() {
        return;
    }
    let (mut submitted, mut changed) = (false, false);
    while let Some(command) = commands.recv().await {
        match command {
            Command::Run(op, reply) => {
                let answer = match op {
                    Op::Submit(new) => insert(&tx, *new, now, &mut room, opening.quotas).await.map(
                        |(task, new)| {
                            submitted |= new;
                            Answer::Submitted(task, new, room)
                        },
                    ),
                    Op::Cancel(id, reason) => cancel(&tx, &id, &reason, now).await.map(|task| {
                        changed |= task.is_some();
                        Answer::Task(task)
                    }),
                    op => run(&tx, op).await,
                };
                let _ = reply.send(answer);
            }
            Command::Commit(reply) => {
                let committed = async {
                    if submitted {
                        notify(&tx, &opening.ready_channel).await?;
                    }
                    if changed {
                        notify(&tx, &opening.changed_channel).await?;
                    }
                    tx.commit().await?;
                    Ok((submitted, changed))
                }
                .await;
                let _ = reply.send(committed);
                return;
            }
        }
    }
    // The body's side dropped without committing: `tx` rolls back on drop.
}

/// Statements of the controller's own tables, and reads of tasks.
async fn run(tx: &Transaction<'_>, op: Op) -> Result<Answer> {
    Ok(match op {
        Op::Execute(sql, params) => Answer::Changed(
            tx.execute(&*postgres_placeholders(&sql), &postgres_params(&params))
                .await?,
        ),
        Op::Query(sql, params) => {
            let rows = tx
                .query(&*postgres_placeholders(&sql), &postgres_params(&params))
                .await?;
            Answer::Rows(rows.iter().map(postgres_row).collect::<Result<_>>()?)
        }
        Op::Batch(sql) => {
            tx.batch_execute(&sql).await?;
            Answer::Done
        }
        Op::Get(id) => Answer::Task(match get(tx, &id).await {
            Ok(task) => Some(task),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        }),
        Op::Submit(_) | Op::Cancel(..) => return Err(unexpected()),
    })
}

/// Cancel a task that is not finished yet, as `TaskStore::cancel` does;
/// one already finished (or gone) is left as it is (`None`).
async fn cancel(tx: &Transaction<'_>, id: &str, reason: &str, now: i64) -> Result<Option<Task>> {
    let task = match get_for_update(tx, id).await {
        Ok(task) => task,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if task.state.is_terminal() {
        return Ok(None);
    }
    tx.execute(
        "UPDATE tasks SET state = 'cancelled', error = $2, finished_at = $3, lease_until = NULL
          WHERE id = $1",
        &[&id, &reason, &now],
    )
    .await?;
    Ok(Some(get(tx, id).await?))
}
