//! The model store: the adapted models a node has published, as its neighbours see them.
//!
//! An honest node publishes one adapted model per round and keeps a short history of them. A
//! request for a round not yet published waits until it is; a round that has left the history
//! is refused. A Byzantine node's store crafts a model per request instead. The store also
//! notes which neighbours have fetched which round, so a finished node knows when the
//! neighbours that depend on it are done.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::attacks::Attacker;

/// Why a request for a model cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The round has left the history.
    #[error("round {round} has left the history (oldest kept is {oldest})")]
    Evicted { round: u64, oldest: u64 },
    /// The node never runs that round.
    #[error("round {round} is past the last round ({last})")]
    BeyondLastRound { round: u64, last: u64 },
    /// The node stopped before publishing the round.
    #[error("node stopped before round {round}")]
    Stopped { round: u64 },
}

struct Inner {
    models: BTreeMap<u64, Arc<[f32]>>,
    /// The highest round each neighbour has fetched.
    fetched: HashMap<String, u64>,
}

/// A node's published adapted models.
pub struct ModelStore {
    inner: Mutex<Inner>,
    /// The latest published round, `None` before round 0 and after a stop.
    latest: watch::Sender<Option<u64>>,
    stopped: watch::Sender<bool>,
    fetch_seen: Notify,
    history: usize,
    rounds: u64,
    neighbours: HashSet<String>,
    attacker: Option<Attacker>,
}

impl ModelStore {
    /// A store that keeps `history` rounds of a run of `rounds` rounds, for a node whose
    /// neighbours are `neighbours`. An `attacker` makes it a Byzantine node's store.
    pub fn new(
        history: usize,
        rounds: u64,
        neighbours: impl IntoIterator<Item = String>,
        attacker: Option<Attacker>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                models: BTreeMap::new(),
                fetched: HashMap::new(),
            }),
            latest: watch::Sender::new(None),
            stopped: watch::Sender::new(false),
            fetch_seen: Notify::new(),
            history: history.max(1),
            rounds,
            neighbours: neighbours.into_iter().collect(),
            attacker,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated, so a poisoned
        // lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes my adapted model of `round`, dropping rounds that leave the history.
    pub fn publish(&self, round: u64, model: Arc<[f32]>) {
        {
            let mut inner = self.lock();
            inner.models.insert(round, model);
            while inner.models.len() > self.history {
                inner.models.pop_first();
            }
        }
        self.latest.send_replace(Some(round));
    }

    /// Marks the node as stopped: waiting requests for unpublished rounds fail.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// The model of `round` for `requester`, waiting until it is published.
    ///
    /// The caller bounds the wait with its own deadline.
    pub async fn get(&self, round: u64, requester: &str) -> Result<Arc<[f32]>, StoreError> {
        if round >= self.rounds {
            return Err(StoreError::BeyondLastRound {
                round,
                last: self.rounds.saturating_sub(1),
            });
        }
        let model = match &self.attacker {
            Some(attacker) => Arc::from(attacker.craft(round, requester)),
            None => self.wait_for(round).await?,
        };
        self.note_fetch(round, requester);
        Ok(model)
    }

    async fn wait_for(&self, round: u64) -> Result<Arc<[f32]>, StoreError> {
        let mut latest = self.latest.subscribe();
        let mut stopped = self.stopped.subscribe();
        loop {
            {
                let inner = self.lock();
                if let Some(model) = inner.models.get(&round) {
                    return Ok(model.clone());
                }
                if let Some((&oldest, _)) = inner.models.first_key_value()
                    && round < oldest
                {
                    return Err(StoreError::Evicted { round, oldest });
                }
            }
            if *stopped.borrow_and_update() {
                return Err(StoreError::Stopped { round });
            }
            tokio::select! {
                changed = latest.changed() => if changed.is_err() {
                    return Err(StoreError::Stopped { round });
                },
                _ = stopped.changed() => {}
            }
        }
    }

    fn note_fetch(&self, round: u64, requester: &str) {
        if !self.neighbours.contains(requester) {
            return;
        }
        let mut inner = self.lock();
        let seen = inner.fetched.entry(requester.to_string()).or_insert(round);
        *seen = (*seen).max(round);
        drop(inner);
        self.fetch_seen.notify_waiters();
    }

    /// The highest round any neighbour has fetched, if any has.
    pub fn highest_fetched(&self) -> Option<u64> {
        self.lock().fetched.values().copied().max()
    }

    /// Whether every neighbour that has fetched anything has fetched the last round (and at
    /// least one has fetched something).
    pub fn dependants_done(&self) -> bool {
        let last = self.rounds.saturating_sub(1);
        let inner = self.lock();
        !inner.fetched.is_empty() && inner.fetched.values().all(|&r| r >= last)
    }

    /// Waits until the fetch log changes.
    pub async fn fetch_changed(&self) {
        self.fetch_seen.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_a_round_and_evicts_old_ones() {
        let store = ModelStore::new(2, 10, ["b".to_string()], None);
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move { store.get(1, "b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.publish(0, Arc::from(vec![0.0f32]));
        store.publish(1, Arc::from(vec![1.0f32]));
        let got = waiting.await.ok().and_then(Result::ok);
        assert_eq!(got.as_deref(), Some(&[1.0f32][..]));

        store.publish(2, Arc::from(vec![2.0f32]));
        assert_eq!(
            store.get(0, "b").await,
            Err(StoreError::Evicted {
                round: 0,
                oldest: 1
            })
        );
        assert!(matches!(
            store.get(10, "b").await,
            Err(StoreError::BeyondLastRound { .. })
        ));
        assert_eq!(store.highest_fetched(), Some(1));
    }

    #[tokio::test]
    async fn stop_releases_waiters() {
        let store = ModelStore::new(2, 10, Vec::<String>::new(), None);
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move { store.get(3, "x").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.stop();
        let got = waiting.await.ok();
        assert_eq!(got, Some(Err(StoreError::Stopped { round: 3 })));
    }
}
