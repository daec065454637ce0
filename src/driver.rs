//! The driver: runs a node's rounds against an exchange, and keeps its state for operators.
//!
//! An honest node adapts, publishes, gathers until the round deadline (a longer start-up
//! grace on round 0, so nodes started seconds apart find each other), and combines. After
//! each round the driver updates the state that `GetState` and `WatchState` serve and the
//! Prometheus metrics, and appends one JSON line to the node's metrics file. A Byzantine node
//! has no rounds of its own to run: its store crafts models on request, and the driver only
//! follows its neighbours' progress.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, RoundOutcome};
use crate::exchange::{Exchange, Fetch};
use crate::metrics::{NodeMetrics, RoundFigures};
use crate::pb;
use crate::store::ModelStore;
use crate::tasks::TestMetrics;

/// What a node is, as operators see it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// `honest`, or `byzantine:<attack>`.
    pub role: String,
    /// The task's name.
    pub task: String,
    /// The rule's name.
    pub rule: String,
    /// The rounds the node runs.
    pub rounds: u64,
    /// The address the node advertises.
    pub address: String,
    /// The address the node serves Prometheus metrics at, if any.
    pub metrics_address: Option<String>,
    /// Neighbours' ids and addresses, in topology order.
    pub neighbours: Vec<(String, String)>,
}

/// How long rounds may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a round waits for neighbours.
    pub round_deadline: Duration,
    /// How long round 0 waits for neighbours to come up.
    pub startup_grace: Duration,
    /// The longest a node keeps serving after its last round.
    pub linger: Duration,
}

/// One line of a node's metrics file: what one round came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The node's id.
    pub node: String,
    /// The round, from 0.
    pub round: u64,
    /// The loss reported for the round.
    pub loss: f64,
    /// Training accuracy, for classification tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The node's score of its own adapted model.
    pub score: f64,
    /// The held-out evaluation, when one was made after this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestMetrics>,
    /// The positive combination weights, by node id (the node itself included).
    pub weights: BTreeMap<String, f64>,
    /// Neighbours the rule filtered out.
    pub filtered: Vec<String>,
    /// Neighbours whose model did not arrive in time.
    pub timeouts: Vec<String>,
    /// Neighbours whose message was rejected.
    pub rejected: Vec<String>,
    /// Milliseconds spent adapting, gathering and combining.
    pub adapt_ms: f64,
    pub gather_ms: f64,
    pub combine_ms: f64,
}

/// Appends round records to a JSON-lines file, one flushed line per round.
pub struct MetricsSink {
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl MetricsSink {
    /// A sink writing to `path` (created with its folder, truncated), or nowhere.
    pub fn create(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(std::io::BufWriter::new(std::fs::File::create(path)?))
            }
            None => None,
        };
        Ok(Self { file })
    }

    /// Writes one record.
    pub fn write(&mut self, record: &RoundRecord) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            serde_json::to_writer(&mut *file, record)?;
            file.write_all(b"\n")?;
            file.flush()?;
        }
        Ok(())
    }
}

/// The state operators read through `GetState` and `WatchState`.
///
/// The state lives in a watch channel. Watchers are woken once per finished round and when the
/// phase turns `lingering` or `done`, not on the phase changes inside a round; a watcher that
/// falls behind sees the newest state and skips the ones in between. Dropping the `Status`
/// ends every watcher's stream after it has seen the last state.
pub struct Status {
    tx: watch::Sender<pb::NodeState>,
}

impl Status {
    /// The state of a node that has not started its rounds.
    pub fn new(info: &NodeInfo) -> Self {
        let neighbours = info
            .neighbours
            .iter()
            .map(|(id, address)| pb::NeighbourState {
                node_id: id.clone(),
                address: address.clone(),
                last_round: -1,
                ..Default::default()
            })
            .collect();
        let state = pb::NodeState {
            node_id: info.id.clone(),
            role: info.role.clone(),
            task: info.task.clone(),
            rule: info.rule.clone(),
            round: -1,
            rounds: info.rounds,
            phase: "starting".into(),
            neighbours,
            address: info.address.clone(),
            metrics_address: info.metrics_address.clone().unwrap_or_default(),
            ..Default::default()
        };
        Self {
            tx: watch::Sender::new(state),
        }
    }

    /// A receiver that sees every update.
    pub fn subscribe(&self) -> watch::Receiver<pb::NodeState> {
        self.tx.subscribe()
    }

    /// Changes the state in place and tells subscribers if `notify` is set.
    pub fn update(&self, notify: bool, f: impl FnOnce(&mut pb::NodeState)) {
        if notify {
            self.tx.send_modify(f);
        } else {
            self.tx.send_if_modified(|s| {
                f(s);
                false
            });
        }
    }

    /// Sets the phase without waking watchers.
    pub fn phase(&self, phase: &str) {
        self.update(false, |s| s.phase = phase.to_string());
    }
}

/// What can stop a node's rounds.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The task failed.
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
    /// The metrics file could not be written.
    #[error("cannot write metrics: {0}")]
    Metrics(#[from] std::io::Error),
}

/// Runs CPU-bound work without stalling other tasks on a multi-threaded runtime.
pub(crate) fn compute<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The record of a round an engine has just combined, with no timeouts, rejections or
/// timings filled in.
pub fn round_record(
    id: &str,
    neighbours: &[(String, String)],
    round: u64,
    outcome: &RoundOutcome,
    engine: &Engine,
) -> RoundRecord {
    let mut record = RoundRecord {
        node: id.to_string(),
        round,
        loss: outcome.loss,
        accuracy: outcome.accuracy,
        score: engine.scores()[0],
        test: outcome.test,
        weights: BTreeMap::new(),
        filtered: Vec::new(),
        timeouts: Vec::new(),
        rejected: Vec::new(),
        adapt_ms: 0.0,
        gather_ms: 0.0,
        combine_ms: 0.0,
    };
    let (weights, filtered) = (engine.weights(), engine.filtered());
    for (l, &w) in weights.iter().enumerate() {
        let id = if l == 0 { id } else { &neighbours[l - 1].0 };
        if w > 0.0 {
            record.weights.insert(id.to_string(), w);
        }
        if filtered[l] {
            record.filtered.push(id.to_string());
        }
    }
    record
}

/// Where a node's rounds are reported: the state operators read, the Prometheus metrics, and
/// the JSON-lines metrics file.
pub struct Reports<'a> {
    /// The state `GetState` and `WatchState` serve.
    pub status: &'a Status,
    /// The Prometheus metrics.
    pub metrics: &'a NodeMetrics,
    /// The per-round metrics file.
    pub sink: &'a mut MetricsSink,
}

/// Runs all rounds of an honest node.
///
/// A misbehaving neighbour is logged once per condition (missed deadline, or each kind of
/// rejected message); every later occurrence is only counted, in the state and the metrics.
pub async fn run_honest<E: Exchange>(
    engine: &mut Engine,
    exchange: &E,
    info: &NodeInfo,
    timing: Timing,
    reports: Reports<'_>,
) -> Result<(), DriverError> {
    let Reports {
        status,
        metrics,
        sink,
    } = reports;
    let mut warned: HashSet<(usize, &'static str)> = HashSet::new();
    let mut received: Vec<Option<Vec<f32>>> = vec![None; info.neighbours.len()];

    for round in 0..info.rounds {
        // Adapt and publish.
        status.phase("adapt");
        let started = Instant::now();
        let adapted: Arc<[f32]> = compute(|| engine.adapt(round).map(Arc::from))?;
        exchange.publish(round, adapted);
        let adapt_time = started.elapsed();

        // Gather until the round deadline.
        status.phase("gather");
        let wait = if round == 0 {
            timing.startup_grace
        } else {
            timing.round_deadline
        };
        let gathered = exchange.gather(round, Instant::now() + wait).await;
        let gather_time = started.elapsed() - adapt_time;

        // Sort what arrived; note what did not.
        status.phase("combine");
        let mut timeouts = Vec::new();
        let mut rejected = Vec::new();
        for (l, g) in gathered.into_iter().enumerate() {
            let id = &info.neighbours[l].0;
            received[l] = match g.fetch {
                Fetch::Model(values) => {
                    metrics.fetched(l, g.latency);
                    let ms = millis(g.latency);
                    status.update(false, |s| {
                        s.neighbours[l].last_round = round as i64;
                        s.neighbours[l].fetch_millis = ms;
                    });
                    Some(values)
                }
                Fetch::Timeout => {
                    if warned.insert((l, "timeout")) {
                        tracing::warn!(
                            round,
                            neighbour = %id,
                            "neighbour missed the round deadline; further misses are only counted"
                        );
                    }
                    metrics.timed_out(l);
                    status.update(false, |s| s.neighbours[l].timeouts += 1);
                    timeouts.push(id.clone());
                    None
                }
                Fetch::Rejected { kind, reason } => {
                    if warned.insert((l, kind)) {
                        tracing::warn!(
                            round,
                            neighbour = %id,
                            kind,
                            %reason,
                            "rejected a neighbour's model; further rejections of this kind are \
                             only counted"
                        );
                    }
                    metrics.rejected(l, kind);
                    status.update(false, |s| {
                        s.neighbours[l].rejected += 1;
                        s.neighbours[l].last_reject_reason = reason;
                    });
                    rejected.push(id.clone());
                    None
                }
            };
        }

        // Score, weigh, combine.
        let combine_start = Instant::now();
        let views: Vec<Option<&[f32]>> = received.iter().map(|m| m.as_deref()).collect();
        let outcome = compute(|| engine.combine(round, &views))?;
        let combine_time = combine_start.elapsed();

        // Report.
        let (scores, weights, filtered) = (engine.scores(), engine.weights(), engine.filtered());
        let mut record = round_record(&info.id, &info.neighbours, round, &outcome, engine);
        record.timeouts = timeouts;
        record.rejected = rejected;
        record.adapt_ms = millis(adapt_time);
        record.gather_ms = millis(gather_time);
        record.combine_ms = millis(combine_time);
        let round_time = started.elapsed();
        metrics.round_done(RoundFigures {
            round,
            loss: outcome.loss,
            scores,
            weights,
            filtered,
            duration: round_time,
        });
        status.update(true, |s| {
            s.round = round as i64;
            s.loss = outcome.loss;
            s.score = scores[0];
            s.weight = weights[0];
            s.accuracy = outcome.accuracy;
            if let Some(t) = outcome.test {
                s.test = Some(pb::TestMetrics {
                    round: t.round,
                    loss: t.loss,
                    accuracy: t.accuracy,
                });
            }
            s.round_millis = millis(round_time);
            for (l, n) in s.neighbours.iter_mut().enumerate() {
                n.score = scores[l + 1];
                n.weight = weights[l + 1];
                n.filtered = filtered[l + 1];
                n.received = views[l].is_some();
            }
        });
        sink.write(&record)?;

        // Log: every round at debug, milestones at info. The counts are of neighbours, as in
        // `byzmtl status`.
        let accepted = weights[1..].iter().filter(|&&w| w > 0.0).count();
        let filtered = record.filtered.len();
        let missing = record.timeouts.len() + record.rejected.len();
        tracing::debug!(
            round,
            loss = outcome.loss,
            score = scores[0],
            accepted,
            filtered,
            missing,
            "round done"
        );
        if round == 0 || (round + 1) % 100 == 0 || round + 1 == info.rounds {
            tracing::info!(
                round,
                loss = outcome.loss,
                score = scores[0],
                accepted,
                filtered,
                missing,
                "round milestone"
            );
        }
    }
    Ok(())
}

/// Follows a Byzantine node's neighbours until they no longer need it.
///
/// The node's store crafts models on request. It is done when every neighbour that has asked
/// it for anything has asked for the last round, or when no neighbour has asked for anything
/// for a whole `idle` period.
pub async fn run_byzantine(
    store: &ModelStore,
    status: &Status,
    metrics: &NodeMetrics,
    idle: Duration,
) {
    status.phase("serving");
    let mut last_change = Instant::now();
    let mut last_seen = None;
    loop {
        if store.dependants_done() {
            break;
        }
        let seen = store.highest_fetched();
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
            if let Some(r) = seen {
                metrics.round_seen(r);
                status.update(true, |s| s.round = r as i64);
            }
        }
        let quiet_until = last_change + idle;
        if Instant::now() >= quiet_until {
            tracing::info!("no neighbour asked for a model for a while");
            break;
        }
        tokio::select! {
            _ = store.fetch_changed() => {}
            _ = tokio::time::sleep_until(quiet_until) => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Keeps a finished node serving until every neighbour that has fetched from it has fetched
/// the last round, or `linger` has passed.
pub async fn linger(store: &ModelStore, status: &Status, linger: Duration) {
    status.update(true, |s| s.phase = "lingering".into());
    let until = Instant::now() + linger;
    while !store.dependants_done() && Instant::now() < until {
        tokio::select! {
            _ = store.fetch_changed() => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
