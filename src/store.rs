//! The model store: the adapted models a node has published, as its neighbours see them.
//!
//! An honest node publishes one adapted model per round and keeps a short history of them. A
//! request for a round not yet published waits until it is; a round that has left the history
//! is refused. A Byzantine node's store crafts an answer per request instead, once the node
//! has observed its honest neighbours' models of the round if its attack looks at them
//! ([`observe_neighbours`] gathers them); the answer may be silence, a late model or a
//! malformed message ([`ModelStore::get_wire`] is what the server sends). The store also
//! notes which neighbours have fetched which round (for a Byzantine node, asked for it), so a
//! finished node knows when the neighbours that depend on it are done.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::attacks::{Attacker, Crafted, Malformation};
use crate::driver::Timing;
use crate::exchange::grpc::{BadEndpoint, GrpcExchange};
use crate::exchange::{Exchange, Fetch};
use crate::params::Layout;
use crate::pb;
use crate::topology::Topology;

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
    attacker: Option<Mutex<Attacker>>,
    /// The latest round a Byzantine node has observed its honest neighbours in.
    observed: watch::Sender<Option<u64>>,
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
            attacker: attacker.map(Mutex::new),
            observed: watch::Sender::new(None),
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
    /// The caller bounds the wait with its own deadline. A Byzantine node's answer is crafted;
    /// silence waits until the node stops, and a malformed message that a flat model cannot
    /// carry comes out as NaN values ([`ModelStore::get_wire`] sends the real thing).
    pub async fn get(&self, round: u64, requester: &str) -> Result<Arc<[f32]>, StoreError> {
        match self.answer(round, requester).await? {
            Answer::Model(model) => Ok(model),
            Answer::Malformed(form) => {
                let len = self.attacker_len();
                let value = match form {
                    Malformation::Infinite => f32::INFINITY,
                    _ => f32::NAN,
                };
                Ok(Arc::from(vec![value; len]))
            }
        }
    }

    /// The message for `round` and `requester` as tensors of `layout`, waiting as
    /// [`ModelStore::get`] does. This is what goes on the wire.
    pub async fn get_wire(
        &self,
        round: u64,
        requester: &str,
        layout: &Layout,
    ) -> Result<Vec<pb::Tensor>, StoreError> {
        match self.answer(round, requester).await? {
            Answer::Model(model) => Ok(layout.to_wire(&model)),
            Answer::Malformed(form) => {
                let limit = self
                    .attacker
                    .as_ref()
                    .map_or(16 << 20, |a| lock(a).message_limit());
                Ok(form.to_wire(layout, limit))
            }
        }
    }

    async fn answer(&self, round: u64, requester: &str) -> Result<Answer, StoreError> {
        if round >= self.rounds {
            return Err(StoreError::BeyondLastRound {
                round,
                last: self.rounds.saturating_sub(1),
            });
        }
        match &self.attacker {
            Some(attacker) => {
                // A Byzantine node counts a request when it arrives: it owes nobody an answer,
                // and silence or a late answer to the last round must not keep it running.
                self.note_fetch(round, requester);
                self.craft(attacker, round, requester).await
            }
            None => {
                let model = self.wait_for(round).await?;
                self.note_fetch(round, requester);
                Ok(Answer::Model(model))
            }
        }
    }

    /// Crafts a Byzantine node's answer, after observing the round if the attack needs to.
    async fn craft(
        &self,
        attacker: &Mutex<Attacker>,
        round: u64,
        requester: &str,
    ) -> Result<Answer, StoreError> {
        let observes = lock(attacker).observes();
        if observes {
            let mut observed = self.observed.subscribe();
            let mut stopped = self.stopped.subscribe();
            while observed.borrow_and_update().is_none_or(|r| r < round) {
                if *stopped.borrow_and_update() {
                    return Err(StoreError::Stopped { round });
                }
                tokio::select! {
                    changed = observed.changed() => if changed.is_err() {
                        return Err(StoreError::Stopped { round });
                    },
                    _ = stopped.changed() => {}
                }
            }
        }
        let crafted = if lock(attacker).trains() {
            crate::driver::compute(|| lock(attacker).craft(round, requester))
        } else {
            lock(attacker).craft(round, requester)
        };
        match crafted {
            Crafted::Model(model) => Ok(Answer::Model(Arc::from(model))),
            Crafted::Delayed { after, model } => {
                tokio::time::sleep(after).await;
                Ok(Answer::Model(Arc::from(model)))
            }
            Crafted::Malformed(form) => Ok(Answer::Malformed(form)),
            Crafted::Silent => {
                let mut stopped = self.stopped.subscribe();
                stopped.wait_for(|&s| s).await.ok();
                Err(StoreError::Stopped { round })
            }
        }
    }

    fn attacker_len(&self) -> usize {
        self.attacker.as_ref().map_or(0, |a| lock(a).len())
    }

    /// Records a Byzantine node's observation of its honest neighbours' adapted models of
    /// `round` (by node index), releasing the requests that wait for it.
    pub fn observe(&self, round: u64, models: Vec<(usize, Vec<f32>)>) {
        if let Some(attacker) = &self.attacker {
            lock(attacker).observe(round, models);
            self.observed.send_replace(Some(round));
        }
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

/// What a store answers a request with.
enum Answer {
    Model(Arc<[f32]>),
    Malformed(Malformation),
}

fn lock(attacker: &Mutex<Attacker>) -> std::sync::MutexGuard<'_, Attacker> {
    // Crafting never leaves an attacker half-updated in a way that matters, so a poisoned
    // lock is still safe to use.
    attacker.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a Byzantine node's observations: every round, gathers its honest neighbours' adapted
/// models through `exchange` (which asks `honest`, node indices in the same order) until all
/// have answered or the start-up grace has passed, and records them in `store`. Ends after
/// the last round, or when the store stops.
pub async fn observe_rounds<E: Exchange>(
    store: &ModelStore,
    exchange: &E,
    honest: &[usize],
    timing: Timing,
) {
    let mut stopped = store.stopped.subscribe();
    // Honest nodes publish round `r` only when they begin it, which can be long after this
    // node has observed round `r - 1` (when they wait out a slow neighbour, say). So every
    // round waits as long as the first: a round deadline counted from here would expire
    // before the round has begun, and the attack would go blind.
    let wait = timing.startup_grace.max(timing.round_deadline);
    for round in 0..store.rounds {
        let gathered = tokio::select! {
            g = exchange.gather(round, Instant::now() + wait) => g,
            _ = stopped.wait_for(|&s| s) => return,
        };
        let models = honest
            .iter()
            .zip(gathered)
            .filter_map(|(&l, g)| match g.fetch {
                Fetch::Model(m) => Some((l, m)),
                Fetch::Timeout | Fetch::Rejected { .. } => None,
            })
            .collect();
        store.observe(round, models);
    }
}

/// For Byzantine node `index` of `topology` whose store is `store`: gathers its honest
/// neighbours' models over gRPC every round, as [`observe_rounds`], if its attack observes
/// them; returns at once otherwise.
pub async fn observe_neighbours(
    topology: &Topology,
    index: usize,
    store: Arc<ModelStore>,
    layout: Arc<Layout>,
    timing: Timing,
) -> Result<(), BadEndpoint> {
    let honest: Vec<usize> = match &store.attacker {
        Some(a) if lock(a).observes() => lock(a).honest_neighbours().to_vec(),
        _ => return Ok(()),
    };
    let neighbours: Vec<(String, String)> = honest
        .iter()
        .map(|&l| {
            let node = &topology.nodes[l];
            (node.id.clone(), node.address.clone())
        })
        .collect();
    let exchange = GrpcExchange::new(
        topology.nodes[index].id.clone(),
        store.clone(),
        layout,
        &neighbours,
        topology.max_message_bytes,
    )?;
    observe_rounds(&store, &exchange, &honest, timing).await;
    Ok(())
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
