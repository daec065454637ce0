//! The in-process simulator: a whole topology in one process, with no sockets.
//!
//! Every node gets the very [`Engine`] (or [`Attacker`]) that the daemon runs, seeded the same
//! way, and all nodes step through the rounds in lockstep: every honest node adapts and
//! publishes its adapted model into one shared table, every Byzantine node observes its honest
//! neighbours' entries and crafts its answers (one for all, or one per requester), and every
//! honest node then gathers its neighbours' entries or answers and combines. An answer that a
//! real node would reject or receive too late (silence, a malformed message, a delay past the
//! round deadline) counts as missing. This is the memory exchange in its synchronous form: no
//! model ever misses a deadline, so a topology run here gives the same per-round numbers as
//! the same topology run as real processes that miss no deadline.
//!
//! Both phases run in parallel across nodes with rayon. Each node's computation reads only the
//! shared table and writes only its own engine and its own entry of a second table, so the
//! result does not depend on the number of threads or their order. A node adapts for the next
//! round right after it combines, into that second table, which then becomes the shared one:
//! a large network's node state is read from memory once a round instead of twice.

use std::path::Path;
use std::time::Duration;

use rayon::prelude::*;

use crate::attacks::{AttackError, Attacker, Crafted};
use crate::driver::{self, MetricsSink, RoundRecord};
use crate::engine::{Engine, RuleSettings};
use crate::tasks::{self, TaskError};
use crate::topology::Topology;

/// What can stop a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node's task could not be set up or failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A Byzantine node's attack does not fit the network.
    #[error(transparent)]
    Attack(#[from] AttackError),
    /// A metrics file could not be written.
    #[error("cannot write metrics to `{path}`: {source}")]
    Metrics {
        path: String,
        source: std::io::Error,
    },
}

/// A simulated node.
enum SimNode {
    Honest(Box<Engine>),
    Byzantine(Box<Attacker>),
}

/// What a simulation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Per node, the loss reported in each round; empty for Byzantine nodes.
    pub losses: Vec<Vec<f64>>,
    /// Per node, the full round records, when they were asked for; empty otherwise.
    pub records: Vec<Vec<RoundRecord>>,
}

/// How much a simulation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimOptions {
    /// Keep every node's full round records (weights, filtered neighbours), not only losses.
    pub records: bool,
}

/// Runs every round of `topology` in this process.
pub fn simulate(topology: &Topology, options: SimOptions) -> Result<SimResult, SimError> {
    // Run on a pool thread: the per-phase parallel loops then fork from inside the pool
    // instead of handing each phase to it from outside and sleeping until it is done, which
    // costs two context switches a phase. A small network runs on one thread: its phases take
    // microseconds, less than keeping a second thread busy costs.
    let threads = (topology.nodes.len() / NODES_PER_THREAD).clamp(1, rayon::current_num_threads());
    if threads == rayon::current_num_threads() {
        return rayon::scope(|_| run(topology, options));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(|| run(topology, options)),
        Err(_) => rayon::scope(|_| run(topology, options)),
    }
}

/// How many nodes a thread needs before another thread pays for itself.
const NODES_PER_THREAD: usize = 256;

fn run(topology: &Topology, options: SimOptions) -> Result<SimResult, SimError> {
    let adjacency = topology.adjacency();
    let ids: Vec<String> = topology.nodes.iter().map(|n| n.id.clone()).collect();
    let settings = RuleSettings {
        rule: topology.rule,
        forgetting_factor: topology.forgetting_factor,
        initial_score: topology.initial_score,
    };

    // Set every node up exactly as the daemon would.
    let mut nodes = (0..topology.nodes.len())
        .into_par_iter()
        .map(|k| {
            let ctx = topology.task_context(k);
            Ok(match topology.attack_of(k) {
                Some(spec) => {
                    let len = tasks::layout(&ctx)?.len();
                    SimNode::Byzantine(Box::new(Attacker::for_node(
                        topology, &adjacency, k, spec, len,
                    )?))
                }
                None => {
                    let task = tasks::build(&ctx)?;
                    SimNode::Honest(Box::new(Engine::new(task, settings, adjacency[k].len())))
                }
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let len = nodes
        .iter()
        .find_map(|n| match n {
            SimNode::Honest(e) => Some(e.layout().len()),
            SimNode::Byzantine(_) => None,
        })
        .unwrap_or(0);
    let deadline = Duration::from_millis(topology.round_deadline_ms);

    let rounds = topology.rounds as usize;
    // One flat table of every node's published model, `len` values per node.
    let mut published = vec![0.0f32; nodes.len() * len.max(1)];
    let mut losses: Vec<Vec<f64>> = nodes
        .iter()
        .map(|n| match n {
            SimNode::Honest(_) => Vec::with_capacity(rounds),
            SimNode::Byzantine(_) => Vec::new(),
        })
        .collect();
    let mut records: Vec<Vec<RoundRecord>> = vec![Vec::new(); nodes.len()];
    let neighbour_info: Vec<Vec<(String, String)>> = adjacency
        .iter()
        .map(|ns| {
            ns.iter()
                .map(|&l| (ids[l].clone(), String::new()))
                .collect()
        })
        .collect();

    // What each Byzantine node answers this round: one answer for everyone, or one per honest
    // neighbour (by node index).
    let mut crafted: Vec<Vec<(usize, Crafted)>> = vec![Vec::new(); nodes.len()];

    // Round 0's adaptation; every later one follows its node's combination at once, while
    // the node's state is still in cache, into the other table.
    let mut next = vec![0.0f32; published.len()];
    if topology.rounds > 0 {
        nodes
            .par_iter_mut()
            .zip(published.par_chunks_mut(len.max(1)))
            .with_min_len(64)
            .try_for_each(|(node, slot)| -> Result<(), TaskError> {
                if let SimNode::Honest(engine) = node {
                    slot.copy_from_slice(engine.adapt(0)?);
                }
                Ok(())
            })?;
    }

    for round in 0..topology.rounds {
        // Byzantine nodes observe their honest neighbours' entries and craft.
        let table = &published;
        nodes
            .par_iter_mut()
            .zip(crafted.par_iter_mut())
            .with_min_len(64)
            .for_each(|(node, answers)| {
                let SimNode::Byzantine(attacker) = node else {
                    return;
                };
                if attacker.observes() {
                    let seen = attacker
                        .honest_neighbours()
                        .iter()
                        .map(|&l| (l, table[l * len..(l + 1) * len].to_vec()))
                        .collect();
                    attacker.observe(round, seen);
                }
                answers.clear();
                if attacker.per_requester() {
                    for l in attacker.honest_neighbours().to_vec() {
                        answers.push((l, attacker.craft(round, &ids[l])));
                    }
                } else {
                    answers.push((usize::MAX, attacker.craft(round, "")));
                }
            });

        // Gather from the table (or what a Byzantine neighbour crafted for this requester),
        // score, weigh and combine; then adapt for the next round.
        let crafted = &crafted;
        let last = round + 1 == topology.rounds;
        nodes
            .par_iter_mut()
            .zip(losses.par_iter_mut())
            .zip(records.par_iter_mut())
            .zip(next.par_chunks_mut(len.max(1)))
            .enumerate()
            .with_min_len(16)
            .try_for_each(
                |(k, (((node, losses), records), slot))| -> Result<(), TaskError> {
                    let SimNode::Honest(engine) = node else {
                        return Ok(());
                    };
                    let views: Vec<Option<&[f32]>> = adjacency[k]
                        .iter()
                        .map(|&l| {
                            if crafted[l].is_empty() {
                                return Some(&table[l * len..(l + 1) * len]);
                            }
                            crafted[l]
                                .iter()
                                .find(|(to, _)| *to == k || *to == usize::MAX)
                                .and_then(|(_, answer)| answer.received(deadline))
                        })
                        .collect();
                    let outcome = engine.combine(round, &views)?;
                    losses.push(outcome.loss);
                    if options.records {
                        let record = driver::round_record(
                            &ids[k],
                            &neighbour_info[k],
                            round,
                            &outcome,
                            engine,
                        );
                        records.push(record);
                    }
                    if !last {
                        slot.copy_from_slice(engine.adapt(round + 1)?);
                    }
                    Ok(())
                },
            )?;
        std::mem::swap(&mut published, &mut next);
    }
    Ok(SimResult { losses, records })
}

/// Writes a simulation's records as one `<id>.jsonl` file per honest node in `dir`, the same
/// files a launched run leaves.
pub fn write_records(dir: &Path, result: &SimResult) -> Result<(), SimError> {
    for node_records in &result.records {
        let Some(first) = node_records.first() else {
            continue;
        };
        let path = dir.join(format!("{}.jsonl", first.node));
        let error = |source| SimError::Metrics {
            path: path.display().to_string(),
            source,
        };
        let mut sink = MetricsSink::create(Some(&path)).map_err(error)?;
        for record in node_records {
            sink.write(record).map_err(error)?;
        }
    }
    Ok(())
}
