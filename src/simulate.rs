//! The in-process simulator: a whole topology in one process, with no sockets.
//!
//! Every node gets the very [`Engine`] (or [`Attacker`]) that the daemon runs, seeded the same
//! way, and all nodes step through the rounds in lockstep: every honest node adapts, every
//! adapted or crafted model is published into one shared table, and every honest node then
//! gathers its neighbours' entries from that table and combines. This is the memory exchange
//! in its synchronous form: no model ever misses a deadline, so a topology run here gives the
//! same per-round numbers as the same topology run as real processes that miss no deadline.
//!
//! Both phases run in parallel across nodes with rayon. Each node's computation reads only the
//! shared table and writes only its own engine, so the result does not depend on the number
//! of threads or their order.

use std::path::Path;

use rayon::prelude::*;

use crate::attacks::Attacker;
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
    Byzantine(Attacker),
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
                    SimNode::Byzantine(Attacker::new(spec, topology.seed, k, len))
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

    // Attackers that answer each requester differently craft during the gather phase.
    let crafters: Vec<Option<Attacker>> = nodes
        .iter()
        .map(|n| match n {
            SimNode::Byzantine(a) if a.per_requester() => Some(a.clone()),
            _ => None,
        })
        .collect();
    let equivocation = crafters.iter().any(Option::is_some);

    for round in 0..topology.rounds {
        // Adapt (or craft) and publish into the shared table.
        nodes
            .par_iter_mut()
            .zip(published.par_chunks_mut(len.max(1)))
            .with_min_len(64)
            .try_for_each(|(node, slot)| -> Result<(), TaskError> {
                match node {
                    SimNode::Honest(engine) => slot.copy_from_slice(engine.adapt(round)?),
                    SimNode::Byzantine(attacker) => {
                        if !attacker.per_requester() {
                            slot.copy_from_slice(&attacker.craft(round, ""));
                        }
                    }
                }
                Ok(())
            })?;

        // Gather from the table (or, from an equivocating attacker, the model crafted for
        // this requester), score, weigh and combine.
        let table = &published;
        nodes
            .par_iter_mut()
            .zip(losses.par_iter_mut())
            .zip(records.par_iter_mut())
            .enumerate()
            .with_min_len(16)
            .try_for_each(|(k, ((node, losses), records))| -> Result<(), TaskError> {
                let SimNode::Honest(engine) = node else {
                    return Ok(());
                };
                let crafted: Vec<Option<Vec<f32>>> = if equivocation {
                    adjacency[k]
                        .iter()
                        .map(|&l| crafters[l].as_ref().map(|a| a.craft(round, &ids[k])))
                        .collect()
                } else {
                    Vec::new()
                };
                let views: Vec<Option<&[f32]>> = adjacency[k]
                    .iter()
                    .enumerate()
                    .map(|(j, &l)| {
                        let crafted = crafted.get(j).and_then(Option::as_deref);
                        let start = l * len;
                        Some(crafted.unwrap_or(&table[start..start + len]))
                    })
                    .collect();
                let outcome = engine.combine(round, &views)?;
                losses.push(outcome.loss);
                if options.records {
                    let record =
                        driver::round_record(&ids[k], &neighbour_info[k], round, &outcome, engine);
                    records.push(record);
                }
                Ok(())
            })?;
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
