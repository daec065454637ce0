//! Attacks: what a Byzantine node sends its neighbours.
//!
//! A Byzantine node takes part in every round like an honest one, but instead of its adapted
//! model it serves whatever its attack crafts. Crafting is a pure function of the topology's
//! seed, the attacker, the round and the requester, so a network gives the same numbers in
//! every run and in every exchange.

use serde::{Deserialize, Serialize};

use crate::seed::{self, Stream};
use crate::tasks::TaskKind;

/// An attack and its parameters, as written in a node's `attack` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AttackSpec {
    /// Every coordinate drawn uniformly from `[low, high]`, afresh each round (the paper's
    /// target-localization attack uses [15, 16]).
    Uniform { low: f64, high: f64 },
    /// Every coordinate uniform in [0, 0.1] (the paper's classification attack).
    SmallNoise,
}

impl AttackSpec {
    /// The paper's attack for a task: uniform [15, 16] for target localization, small noise
    /// for the classification tasks.
    pub fn default_for(task: TaskKind) -> Self {
        match task {
            TaskKind::TargetLocalization => Self::Uniform {
                low: 15.0,
                high: 16.0,
            },
            TaskKind::Har | TaskKind::Digits => Self::SmallNoise,
        }
    }

    /// The attack's name, as written in a topology.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Uniform { .. } => "uniform",
            Self::SmallNoise => "small-noise",
        }
    }

    /// Checks the parameters; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Uniform { low, high } => {
                if low.is_finite() && high.is_finite() && low <= high {
                    Ok(())
                } else {
                    Err(format!(
                        "uniform attack needs finite low <= high, got [{low}, {high}]"
                    ))
                }
            }
            Self::SmallNoise => Ok(()),
        }
    }
}

/// A Byzantine node's attack, ready to craft models of a given length.
#[derive(Debug, Clone)]
pub struct Attacker {
    spec: AttackSpec,
    seed: u64,
    node_index: usize,
    len: usize,
}

impl Attacker {
    /// An attacker for node `node_index` under the topology seed `seed`, crafting models of
    /// `len` parameters.
    pub fn new(spec: AttackSpec, seed: u64, node_index: usize, len: usize) -> Self {
        Self {
            spec,
            seed,
            node_index,
            len,
        }
    }

    /// The attack.
    pub fn spec(&self) -> &AttackSpec {
        &self.spec
    }

    /// Whether the attack answers each requester with a different model.
    pub fn per_requester(&self) -> bool {
        false
    }

    /// The model served to `requester` for `round`.
    pub fn craft(&self, round: u64, _requester: &str) -> Vec<f32> {
        let (low, high) = match self.spec {
            AttackSpec::Uniform { low, high } => (low, high),
            AttackSpec::SmallNoise => (0.0, 0.1),
        };
        let mut rng = seed::rng(self.seed, Stream::Attack, &[self.node_index as u64, round]);
        (0..self.len)
            .map(|_| rand::Rng::random_range(&mut rng, low..=high) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_repeats() {
        let spec = AttackSpec::Uniform {
            low: 15.0,
            high: 16.0,
        };
        let a = Attacker::new(spec, 3, 7, 1000);
        let m = a.craft(4, "x");
        assert!(m.iter().all(|&v| (15.0..=16.0).contains(&v)));
        assert_eq!(m, a.craft(4, "y"));
        assert_ne!(m, a.craft(5, "x"));
        let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!((mean - 15.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn rejects_inverted_range() {
        let spec = AttackSpec::Uniform {
            low: 2.0,
            high: 1.0,
        };
        assert!(spec.validate().is_err());
    }
}
