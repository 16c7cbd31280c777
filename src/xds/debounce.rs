//! Push requests and the debounce that batches them (istiod's `PILOT_DEBOUNCE_AFTER` /
//! `PILOT_DEBOUNCE_MAX`): a push happens once events have been quiet for `after`, or `max` after
//! the first event of a batch, whichever comes first; requests in a batch are merged.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a push was triggered (istiod's `TriggerReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TriggerReason {
    ConfigUpdate,
    EndpointUpdate,
}

impl TriggerReason {
    /// istiod's `pilot_push_triggers` label.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::ConfigUpdate => "config",
            TriggerReason::EndpointUpdate => "endpoint",
        }
    }
}

/// A request to recompute and push config (istiod's `PushRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushRequest {
    /// Full push (all types recomputed); false = endpoints only.
    pub full: bool,
    /// How many events of each reason this request stands for.
    pub reason: BTreeMap<TriggerReason, u32>,
    /// When the first merged event happened (for convergence metrics).
    pub start: Option<Instant>,
}

impl PushRequest {
    pub fn full(reason: TriggerReason) -> Self {
        PushRequest {
            full: true,
            reason: BTreeMap::from([(reason, 1)]),
            start: Some(Instant::now()),
        }
    }

    /// An endpoint-only request (istiod's incremental EDS push): `full` false, one
    /// `EndpointUpdate` event.
    pub fn endpoints_only() -> Self {
        PushRequest {
            full: false,
            ..PushRequest::full(TriggerReason::EndpointUpdate)
        }
    }

    /// istiod's `Merge`: full is ORed, reasons are summed, and the earliest start is kept.
    /// (Which configs changed is not carried: a full push rebuilds the snapshot, and an
    /// endpoint-only batch says so with `full == false`.)
    pub fn merge(mut self, other: PushRequest) -> PushRequest {
        self.full |= other.full;
        for (reason, n) in other.reason {
            *self.reason.entry(reason).or_default() += n;
        }
        self.start = match (self.start, other.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    /// Number of events merged into this request.
    pub fn event_count(&self) -> u32 {
        self.reason.values().sum()
    }
}

/// Debounce settings.
#[derive(Debug, Clone, Copy)]
pub struct DebounceOptions {
    /// Quiet period: push once no event arrived for this long.
    pub after: Duration,
    /// Upper bound from the first event of a batch to its push.
    pub max: Duration,
    /// Whether endpoint-only batches wait like config ones (istiod's
    /// PILOT_ENABLE_EDS_DEBOUNCE, on by default). Off: an endpoint-only batch is pushed
    /// `after` from its first event however busy the churn, so endpoints reach proxies within
    /// about that (a batch that turns full waits as usual).
    pub eds_debounce: bool,
}

impl Default for DebounceOptions {
    fn default() -> Self {
        DebounceOptions {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            eds_debounce: true,
        }
    }
}

/// Runs until `events` closes, calling `push` with each merged batch. A push finishes before
/// the next batch is released, so at most one is in flight (as in istiod).
pub async fn debounce<F, Fut>(
    mut events: mpsc::Receiver<PushRequest>,
    opts: DebounceOptions,
    mut push: F,
) where
    F: FnMut(PushRequest) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let Some(first) = events.recv().await else {
            return;
        };
        let batch_start = Instant::now();
        let mut last_event = batch_start;
        let mut pending = first;
        let mut closed = false;
        loop {
            let deadline = if !pending.full && !opts.eds_debounce {
                batch_start + opts.after
            } else {
                (last_event + opts.after).min(batch_start + opts.max)
            };
            tokio::select! {
                ev = events.recv(), if !closed => match ev {
                    Some(ev) => {
                        pending = pending.merge(ev);
                        last_event = Instant::now();
                    }
                    None => closed = true,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        tracing::debug!(
            events = pending.event_count(),
            full = pending.full,
            waited_ms = batch_start.elapsed().as_millis() as u64,
            "debounced push"
        );
        push(pending).await;
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Pushes = Arc<Mutex<Vec<(Duration, u32)>>>;

    fn spawn_debouncer(opts: DebounceOptions) -> (mpsc::Sender<PushRequest>, Pushes, Instant) {
        let (tx, rx) = mpsc::channel(1024);
        let pushes: Pushes = Arc::default();
        let p = pushes.clone();
        let t0 = Instant::now();
        tokio::spawn(debounce(rx, opts, move |req| {
            p.lock().unwrap().push((t0.elapsed(), req.event_count()));
            async {}
        }));
        (tx, pushes, t0)
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_after_quiet_period() {
        let (tx, pushes, _) = spawn_debouncer(DebounceOptions::default());
        for _ in 0..3 {
            tx.send(PushRequest::full(TriggerReason::ConfigUpdate))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Last event at 100ms; quiet period ends at 200ms.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            pushes.lock().unwrap().is_empty(),
            "no push before the quiet period ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = pushes.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Duration::from_millis(200));
        assert_eq!(got[0].1, 3, "three events merged into one push");
    }

    #[tokio::test(start_paused = true)]
    async fn continuous_events_push_at_max() {
        let opts = DebounceOptions {
            after: Duration::from_millis(100),
            max: Duration::from_secs(1),
            eds_debounce: true,
        };
        let (tx, pushes, _) = spawn_debouncer(opts);
        // An event every 30 ms never leaves a 100 ms quiet period.
        for _ in 0..40 {
            tx.send(PushRequest::full(TriggerReason::EndpointUpdate))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = pushes.lock().unwrap().clone();
        assert_eq!(
            got[0].0,
            Duration::from_secs(1),
            "first batch capped at max"
        );
        assert_eq!(got[0].1, 34, "the events at 0..=990 ms");
        assert_eq!(got.iter().map(|p| p.1).sum::<u32>(), 40, "no event lost");
    }

    /// Without EDS debounce, continuous endpoint-only events are pushed every `after`; a
    /// config event in the batch makes it wait as usual.
    #[tokio::test(start_paused = true)]
    async fn endpoint_only_batches_skip_the_debounce_when_asked() {
        let opts = DebounceOptions {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            eds_debounce: false,
        };
        let (tx, pushes, _) = spawn_debouncer(opts);
        let eds = PushRequest::endpoints_only;
        for _ in 0..20 {
            tx.send(eds()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = pushes.lock().unwrap().clone();
        assert!(
            got.len() >= 5,
            "pushed every ~100 ms, not once at max: {got:?}"
        );
        assert_eq!(got[0].0, Duration::from_millis(100));
        assert_eq!(got.iter().map(|p| p.1).sum::<u32>(), 20, "no event lost");
        // A config change among them: the batch waits for the quiet period.
        let before = pushes.lock().unwrap().len();
        for i in 0..10 {
            if i == 0 {
                tx.send(PushRequest::full(TriggerReason::ConfigUpdate))
                    .await
                    .unwrap();
            } else {
                tx.send(eds()).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(
            pushes.lock().unwrap().len(),
            before,
            "a full batch is debounced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pushes.lock().unwrap().len(), before + 1);
    }

    #[test]
    fn merge_rules() {
        let mut a = PushRequest::full(TriggerReason::ConfigUpdate);
        a.full = false;
        let b = PushRequest::full(TriggerReason::EndpointUpdate);
        let m = a.clone().merge(b.clone());
        assert!(m.full, "a full request makes the batch full");
        assert_eq!(m.reason[&TriggerReason::ConfigUpdate], 1);
        assert_eq!(m.reason[&TriggerReason::EndpointUpdate], 1);
        assert_eq!(m.event_count(), 2);
        assert_eq!(m.start, a.start.min(b.start));
    }
}
