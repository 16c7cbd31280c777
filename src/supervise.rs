//! Supervision of the long-lived tasks of `navarch discovery` (push loop, debouncer, sources,
//! ADS server, debug servers, leader election).
//!
//! Owns three things: [`supervise`], which runs a task under a name, catches its panic or early
//! exit, logs the cause, counts it and restarts the task with backoff; [`Health`], which keeps
//! what failed (for `/ready`, 503 while a part is down, with the reason) and the counters (for
//! `/metrics`, `navarch_task_failures_total{task=...}`); and [`TaskGroup`], for a task that owns
//! sub-tasks (a source's watchers): a sub-task that dies fails its owner, and dropping the owner
//! aborts every sub-task, so a restart never leaves the previous incarnation's tasks behind.
//!
//! Must not know what a task does: no config, no xDS, no Kubernetes here. Whether a restart is
//! safe is the caller's decision (it chooses to supervise a task with a factory that can be
//! called again).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::Instrument;

/// One part's state.
#[derive(Debug, Default, Clone)]
struct TaskHealth {
    failures: u64,
    restarts: u64,
    /// Why the part is down now; `None` while it is healthy.
    down: Option<String>,
}

/// What failed and how often: read by `/ready` and `/metrics`, written by supervisors and by
/// parts that fail without ending (a snapshot build that panicked).
#[derive(Debug, Default)]
pub struct Health {
    tasks: Mutex<BTreeMap<String, TaskHealth>>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, TaskHealth>) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while it was held; the map stays usable.
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut tasks)
    }

    /// Makes `task` known, so that its counters are exported (as 0) before it ever fails.
    pub fn register(&self, task: &str) {
        self.with(|t| {
            t.entry(task.to_string()).or_default();
        });
    }

    /// Records a failure of `task`: counted, and the part is down (on `/ready`, with `cause`)
    /// until [`Health::recover`]. Returns how often it failed so far. The caller logs it (so
    /// that the log line says what the part does about it).
    pub fn fail(&self, task: &str, cause: &str) -> u64 {
        self.with(|t| {
            let h = t.entry(task.to_string()).or_default();
            h.failures += 1;
            h.down = Some(cause.to_string());
            h.failures
        })
    }

    /// `task` works again: it no longer keeps `/ready` at 503.
    pub fn recover(&self, task: &str) {
        let was_down = self.with(|t| t.get_mut(task).and_then(|h| h.down.take()));
        if let Some(cause) = was_down {
            tracing::info!(task, previous = %cause, "task recovered");
        }
    }

    fn count_restart(&self, task: &str) {
        self.with(|t| t.entry(task.to_string()).or_default().restarts += 1);
    }

    /// The parts that are down now, with why: `(task, cause)`, by task name.
    pub fn down(&self) -> Vec<(String, String)> {
        self.with(|t| {
            t.iter()
                .filter_map(|(k, h)| Some((k.clone(), h.down.clone()?)))
                .collect()
        })
    }

    /// How often `task` failed so far.
    pub fn failures(&self, task: &str) -> u64 {
        self.with(|t| t.get(task).map_or(0, |h| h.failures))
    }

    /// Appends the supervision metrics in Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        let tasks = self.with(|t| t.clone());
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&TaskHealth) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (task, h) in &tasks {
                    let _ = writeln!(
                        out,
                        "{name}{{task=\"{}\"}} {}",
                        escape_label(task),
                        value(h)
                    );
                }
            };
        family(
            "navarch_task_failures_total",
            "counter",
            "Panics, errors and early exits of a supervised part (a task, or a snapshot build).",
            &|h| h.failures,
        );
        family(
            "navarch_task_restarts_total",
            "counter",
            "Restarts of a supervised task after a failure.",
            &|h| h.restarts,
        );
        family(
            "navarch_task_up",
            "gauge",
            "1 while the part works, 0 while it is down (then /ready answers 503).",
            &|h| u64::from(h.down.is_none()),
        );
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a supervised task is restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Wait before the first restart; doubled after each failure that came soon after a start.
    pub initial_backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// A restarted task that has run this long without failing counts as healthy again (its
    /// failure leaves `/ready`, and the backoff starts over).
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(5),
        }
    }
}

/// The text of a panic's payload (what `panic!` was given).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Why a spawned task ended, in words; `None` when it was cancelled (shutdown).
pub fn join_error_cause(e: JoinError) -> Option<String> {
    if e.is_panic() {
        Some(format!("panicked: {}", panic_message(&*e.into_panic())))
    } else {
        None
    }
}

/// A task handle that aborts its task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Runs `factory()`'s future as task `task`, and again after every panic, error or exit, with
/// backoff; every failure is logged with its cause, counted and shown on `/ready` (through
/// `health`) until the restarted task has run for `policy.healthy_after`. Each incarnation runs
/// in a `task` span (`name`, `incarnation`), so everything it logs says which task it is.
///
/// Runs until the returned handle is aborted, which also aborts the running incarnation.
pub fn supervise<F, Fut, E>(
    health: Arc<Health>,
    task: &'static str,
    policy: RestartPolicy,
    mut factory: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    health.register(task);
    tokio::spawn(async move {
        let mut backoff = policy.initial_backoff;
        let mut restarted = false;
        let mut incarnation: u64 = 0;
        loop {
            let started = Instant::now();
            incarnation += 1;
            let span = tracing::info_span!("task", name = task, incarnation);
            let mut running = AbortOnDrop(tokio::spawn(factory().instrument(span)));
            let mut healthy = !restarted;
            let outcome = loop {
                tokio::select! {
                    res = &mut running => break res,
                    _ = tokio::time::sleep(policy.healthy_after), if !healthy => {
                        healthy = true;
                        health.recover(task);
                    }
                }
            };
            let cause = match outcome {
                Ok(Ok(())) => "exited early (it should run until shutdown)".to_string(),
                Ok(Err(e)) => format!("failed: {e:#}"),
                Err(e) => match join_error_cause(e) {
                    Some(cause) => cause,
                    None => return,
                },
            };
            if started.elapsed() >= policy.healthy_after {
                backoff = policy.initial_backoff;
            }
            let cause = format!(
                "{cause}; restarting in {}",
                humantime::format_duration(backoff)
            );
            let failures = health.fail(task, &cause);
            tracing::error!(task, failures, cause, "task failed");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.max_backoff);
            health.count_restart(task);
            tracing::info!(task, "restarting task");
            restarted = true;
        }
    })
}

/// A sub-task of a [`TaskGroup`] that ended: its name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{task} {cause}")]
pub struct TaskEnded {
    pub task: String,
    pub cause: String,
}

#[derive(Debug, Default)]
struct Handles {
    closed: bool,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
struct SpawnerInner {
    handles: Mutex<Handles>,
    ended: mpsc::UnboundedSender<TaskEnded>,
}

/// Spawns sub-tasks into a [`TaskGroup`]; cheap to clone, so a sub-task can start more.
#[derive(Debug, Clone)]
pub struct Spawner {
    inner: Arc<SpawnerInner>,
}

impl Spawner {
    /// A sub-task that runs until its group is dropped: it ending at all is a failure.
    pub fn spawn<F>(&self, task: impl Into<String>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_inner(task.into(), fut, true);
    }

    /// A sub-task that may finish (a one-off job): only a panic is a failure.
    pub fn spawn_finite<F>(&self, task: impl Into<String>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_inner(task.into(), fut, false);
    }

    fn spawn_inner<F>(&self, task: String, fut: F, forever: bool)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A child of the current span: a sub-task's logs name its owner too.
        let handle = tokio::spawn(fut.instrument(tracing::info_span!("subtask", name = %task)));
        {
            let mut handles = self.inner.handles.lock().unwrap_or_else(|e| e.into_inner());
            if handles.closed {
                handle.abort();
                return;
            }
            handles.tasks.retain(|h| !h.is_finished());
            handles.tasks.push(handle.abort_handle());
        }
        let ended = self.inner.ended.clone();
        tokio::spawn(async move {
            let cause = match handle.await {
                Ok(()) if forever => "exited early".to_string(),
                Ok(()) => return,
                Err(e) => match join_error_cause(e) {
                    Some(cause) => cause,
                    None => return,
                },
            };
            let _ = ended.send(TaskEnded { task, cause });
        });
    }
}

/// Sub-tasks owned by one task: [`TaskGroup::ended`] reports the first that died, and dropping
/// the group aborts them all.
#[derive(Debug)]
pub struct TaskGroup {
    spawner: Spawner,
    ended: mpsc::UnboundedReceiver<TaskEnded>,
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskGroup {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        TaskGroup {
            spawner: Spawner {
                inner: Arc::new(SpawnerInner {
                    handles: Mutex::default(),
                    ended: tx,
                }),
            },
            ended: rx,
        }
    }

    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Waits for the first sub-task that panicked or (for [`Spawner::spawn`]) ended; pending
    /// for as long as all of them run.
    pub async fn ended(&mut self) -> TaskEnded {
        match self.ended.recv().await {
            Some(e) => e,
            // Unreachable while `self.spawner` holds a sender; wait forever rather than lie.
            None => std::future::pending().await,
        }
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        let mut handles = self
            .spawner
            .inner
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        handles.closed = true;
        for h in handles.tasks.drain(..) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            healthy_after: Duration::from_millis(200),
        }
    }

    fn metrics(health: &Health) -> String {
        let mut out = String::new();
        health.write_metrics(&mut out);
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_counted_shown_down_restarted_and_recovers() {
        let health = Arc::new(Health::default());
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let handle = supervise(health.clone(), "worker", fast(), move || {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                std::future::pending::<()>().await;
                Ok::<(), std::io::Error>(())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "restarted after each panic"
        );
        assert_eq!(health.failures("worker"), 2);
        let down = health.down();
        assert_eq!(down.len(), 1, "{down:?}");
        assert!(
            down[0].1.contains("panicked: boom 1"),
            "the latest cause: {down:?}"
        );
        let m = metrics(&health);
        assert!(
            m.contains("navarch_task_failures_total{task=\"worker\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("navarch_task_restarts_total{task=\"worker\"} 2"),
            "{m}"
        );
        assert!(m.contains("navarch_task_up{task=\"worker\"} 0"), "{m}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(health.down().is_empty(), "healthy after running 200ms");
        assert!(metrics(&health).contains("navarch_task_up{task=\"worker\"} 1"));
        handle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_early_exits_are_failures_with_their_cause() {
        let health = Arc::new(Health::default());
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let handle = supervise(health.clone(), "source", fast(), move || {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(std::io::Error::other("disk on fire")),
                    1 => Ok(()),
                    _ => std::future::pending().await,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            health.down()[0].1.contains("failed: disk on fire"),
            "{:?}",
            health.down()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            health.down()[0].1.contains("exited early"),
            "{:?}",
            health.down()
        );
        assert_eq!(health.failures("source"), 2);
        handle.abort();
    }

    #[tokio::test]
    async fn aborting_the_supervisor_aborts_the_task() {
        let health = Arc::new(Health::default());
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let handle = supervise(health.clone(), "holder", fast(), move || {
            let tx = tx.clone();
            async move {
                let _tx = tx;
                std::future::pending::<()>().await;
                Ok::<(), std::io::Error>(())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        handle.abort();
        // The incarnation held the only sender clone: it is dropped once the task is aborted.
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed, Ok(None));
        assert_eq!(health.failures("holder"), 0, "a shutdown is not a failure");
    }

    #[tokio::test]
    async fn a_group_reports_the_first_dead_sub_task_and_aborts_the_rest_on_drop() {
        let mut group = TaskGroup::new();
        let sp = group.spawner();
        let (tx, mut rx) = mpsc::channel::<()>(1);
        sp.spawn("long", async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        sp.spawn_finite("one-off", async {});
        sp.spawn("watcher", async { panic!("watch stream broke") });
        let ended = tokio::time::timeout(Duration::from_secs(5), group.ended())
            .await
            .unwrap();
        assert_eq!(ended.task, "watcher");
        assert_eq!(ended.cause, "panicked: watch stream broke");
        drop(group);
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed, Ok(None), "the long task was aborted with its group");
        // Spawning into a dropped group aborts at once.
        let (tx2, mut rx2) = mpsc::channel::<()>(1);
        sp.spawn("late", async move {
            let _tx = tx2;
            std::future::pending::<()>().await
        });
        let closed = tokio::time::timeout(Duration::from_secs(5), rx2.recv()).await;
        assert_eq!(closed, Ok(None));
    }
}
