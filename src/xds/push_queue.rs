//! A connection's push queue: pending pushes for one proxy merge into a single request, so a
//! slow proxy never accumulates a backlog and always receives the newest state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::xds::debounce::PushRequest;

#[derive(Debug, Default)]
pub struct PushQueue {
    /// The merged pending push, and when the first of it was queued.
    pending: Mutex<Option<(PushRequest, Instant)>>,
    notify: Notify,
}

impl PushQueue {
    /// Adds a push, merging it with one not yet taken.
    pub fn enqueue(&self, req: PushRequest) {
        let mut slot = self.pending.lock().expect("push queue lock");
        *slot = Some(match slot.take() {
            Some((existing, since)) => (existing.merge(req), since),
            None => (req, Instant::now()),
        });
        drop(slot);
        self.notify.notify_one();
    }

    /// Waits for and takes the merged pending push, with how long it waited in the queue
    /// (istiod's `pilot_proxy_queue_time`).
    pub async fn next(&self) -> (PushRequest, Duration) {
        loop {
            if let Some((req, since)) = self.pending.lock().expect("push queue lock").take() {
                return (req, since.elapsed());
            }
            self.notify.notified().await;
        }
    }

    pub fn is_pending(&self) -> bool {
        self.pending.lock().expect("push queue lock").is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::debounce::TriggerReason;

    #[tokio::test]
    async fn pending_pushes_merge() {
        let q = PushQueue::default();
        q.enqueue(PushRequest::endpoints_only());
        q.enqueue(PushRequest::full(TriggerReason::ConfigUpdate));
        assert!(q.is_pending());
        let (got, _) = q.next().await;
        assert!(got.full, "a full push absorbs an EDS-only one");
        assert_eq!(got.event_count(), 2);
        assert!(!q.is_pending());
    }

    #[tokio::test]
    async fn next_wakes_on_enqueue() {
        let q = std::sync::Arc::new(PushQueue::default());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.enqueue(PushRequest::full(TriggerReason::ConfigUpdate));
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(got.0.full);
    }
}
