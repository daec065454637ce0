//! Target localization (paper, appendix B.1): estimate a target's position in the plane.
//!
//! A node at position `x` observes, every round, a noisy unit direction `u` toward its target
//! and a noisy distance `d`. Its model is the estimate `theta` in R^2 and its loss is
//! `(d - (theta - x)^T u)^2`. A neighbour's model is scored on my measurement (my position, my
//! `d` and `u`), as the paper defines it. The whole task is a handful of flops per model, so it
//! works on plain `f64` arithmetic with no tensor framework in the way.
//!
//! The local step follows the authors' reference implementation: it moves `theta` toward the
//! measured target position `q = x + d u`, `theta + mu (q - theta)`, which is the SGD step on
//! `1/2 |q - theta|^2`. The gradient of the scalar residual alone only informs `theta` along
//! `u`, which barely changes from round to round, so a node could never learn the component
//! across it; the position form keeps the problem strongly convex, as the paper's analysis
//! assumes, and has the same minimiser.

use std::sync::Arc;

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::{BatchMetrics, Init, Task, TaskContext, TaskError, TaskKind};
use crate::params::{Layout, TensorSpec};
use crate::seed::{self, Stream};

/// One node's shard: where its target is and how noisy its sensors are. The node's position
/// `x_k` is its `position` in the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetShard {
    /// The target the node observes, `theta_k^*`.
    pub target: [f64; 2],
    /// Standard deviation of the distance noise.
    #[serde(default = "default_distance_noise")]
    pub distance_noise: f64,
    /// Standard deviation of the noise added to each coordinate of the direction.
    #[serde(default = "default_direction_noise")]
    pub direction_noise: f64,
}

fn default_distance_noise() -> f64 {
    0.15
}

fn default_direction_noise() -> f64 {
    0.015
}

/// The target-localization task on one node.
pub struct TargetLocalization {
    layout: Arc<Layout>,
    position: [f64; 2],
    step_size: f64,
    rng: SmallRng,
    /// Where the initial model is drawn from when the network shares one.
    shared_init: Option<u64>,
    distance_noise: Normal<f64>,
    direction_noise: Normal<f64>,
    /// The round's measured distance `d`.
    d: f64,
    /// The round's measured direction `u`.
    u: [f64; 2],
    /// The offset from the node to its target, and the unit direction along it.
    offset: [f64; 2],
    direction: [f64; 2],
}

impl TargetLocalization {
    /// Sets the task up from the node's shard table.
    pub fn new(ctx: &TaskContext) -> Result<Self, TaskError> {
        let invalid = |reason: String| TaskError::Shard {
            node: ctx.node_id.clone(),
            reason,
        };
        let shard: TargetShard =
            serde_json::from_value(ctx.shard.clone()).map_err(|e| invalid(e.to_string()))?;
        let position = ctx
            .position
            .ok_or_else(|| invalid("target localization needs the node's `position`".into()))?;
        let finite = position.iter().chain(&shard.target).all(|v| v.is_finite());
        if !finite {
            return Err(invalid("position and target must be finite".into()));
        }
        if position == shard.target {
            return Err(invalid(
                "position and target coincide, so no direction exists".into(),
            ));
        }
        let noise = |name: &str, sd: f64| {
            let bad = || invalid(format!("`{name}` must be a number >= 0, got {sd}"));
            if !(sd.is_finite() && sd >= 0.0) {
                return Err(bad());
            }
            Normal::new(0.0, sd).map_err(|_| bad())
        };
        let (dx, dy) = (shard.target[0] - position[0], shard.target[1] - position[1]);
        let distance = dx.hypot(dy);
        Ok(Self {
            offset: [dx, dy],
            direction: [dx / distance, dy / distance],
            layout: Self::layout_of(),
            distance_noise: noise("distance_noise", shard.distance_noise)?,
            direction_noise: noise("direction_noise", shard.direction_noise)?,
            step_size: ctx.step_size,
            rng: seed::rng(ctx.seed, Stream::Task, &[]),
            shared_init: match ctx.settings.init {
                Some(Init::Shared) => Some(ctx.init_seed(Init::Shared)),
                Some(Init::Own) | None => None,
            },
            position,
            d: 0.0,
            u: [0.0; 2],
        })
    }

    /// The layout of every target-localization model: one tensor `theta` of shape [2].
    pub fn layout_of() -> Arc<Layout> {
        Layout::new(vec![TensorSpec::new("theta", &[2])])
    }

    /// The residual `d - (theta - x)^T u` of a model on the round's measurement.
    fn residual(&self, theta: &[f32]) -> f64 {
        let [x0, x1] = self.position;
        let (t0, t1) = (f64::from(theta[0]), f64::from(theta[1]));
        self.d - ((t0 - x0) * self.u[0] + (t1 - x1) * self.u[1])
    }
}

impl Task for TargetLocalization {
    fn kind(&self) -> TaskKind {
        TaskKind::TargetLocalization
    }

    fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    fn init(&mut self) -> Vec<f32> {
        // A node's own initial model comes from its measurement stream, as it always has.
        let mut shared = self.shared_init.map(|s| seed::rng(s, Stream::Task, &[]));
        let rng = shared.as_mut().unwrap_or(&mut self.rng);
        vec![rng.random::<f32>(), rng.random::<f32>()]
    }

    fn next_batch(&mut self, _round: u64) -> Result<(), TaskError> {
        // A noisy unit direction toward the target, then the distance along it, plus noise.
        let [e0, e1] = self.direction;
        self.u = [
            e0 + self.direction_noise.sample(&mut self.rng),
            e1 + self.direction_noise.sample(&mut self.rng),
        ];
        let [dx, dy] = self.offset;
        self.d = dx * self.u[0] + dy * self.u[1] + self.distance_noise.sample(&mut self.rng);
        Ok(())
    }

    fn adapt(&mut self, model: &[f32], adapted: &mut [f32]) -> Result<BatchMetrics, TaskError> {
        // Step toward the measured target position q = x + d u.
        let e = self.residual(model);
        let [x0, x1] = self.position;
        let q = [x0 + self.d * self.u[0], x1 + self.d * self.u[1]];
        for j in 0..2 {
            let t = f64::from(model[j]);
            adapted[j] = (t + self.step_size * (q[j] - t)) as f32;
        }
        Ok(BatchMetrics {
            loss: e * e,
            accuracy: None,
        })
    }

    fn losses(&mut self, models: &[&[f32]], out: &mut [f64]) -> Result<(), TaskError> {
        for (model, loss) in models.iter().zip(out.iter_mut()) {
            let e = self.residual(model);
            *loss = e * e;
        }
        Ok(())
    }

    fn round_metrics(
        &mut self,
        _adapt: BatchMetrics,
        combined: &[f32],
    ) -> Result<BatchMetrics, TaskError> {
        let e = self.residual(combined);
        Ok(BatchMetrics {
            loss: e * e,
            accuracy: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskSettings;

    fn task(distance_noise: f64, direction_noise: f64) -> TargetLocalization {
        let ctx = TaskContext {
            node_id: "n".into(),
            node_index: 0,
            seed: 1,
            network_seed: 1,
            step_size: 0.1,
            rounds: 10,
            position: Some([1.0, 2.0]),
            settings: TaskSettings::default(),
            shard: serde_json::json!({
                "target": [4.0, 6.0],
                "distance_noise": distance_noise,
                "direction_noise": direction_noise,
            }),
        };
        match TargetLocalization::new(&ctx) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    // Without noise, x = (1, 2) and target (4, 6) give u = (0.6, 0.8), d = 5 and
    // q = x + d u = (4, 6). From theta = (1, 2) the residual is 5, the loss 25, and one step
    // with mu = 0.1 moves theta by 0.1 * (q - theta) = (0.3, 0.4), to (1.3, 2.4).
    #[test]
    fn step_and_loss_by_hand() {
        let mut t = task(0.0, 0.0);
        t.next_batch(0).ok();
        assert!((t.d - 5.0).abs() < 1e-12);
        let mut adapted = [0.0f32; 2];
        let m = t.adapt(&[1.0, 2.0], &mut adapted).ok();
        assert_eq!(m.map(|m| m.loss), Some(25.0));
        assert!((adapted[0] - 1.3).abs() < 1e-6 && (adapted[1] - 2.4).abs() < 1e-6);

        // The target itself has zero loss; a model 1 beyond it along u has loss 1.
        let mut out = [0.0; 2];
        t.losses(&[&[4.0, 6.0], &[4.6, 6.8]], &mut out).ok();
        assert!(out[0] < 1e-10 && (out[1] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn learning_alone_converges_to_the_target() {
        let mut t = task(0.15, 0.015);
        let mut model = t.init();
        let mut adapted = vec![0.0; 2];
        let mut tail = 0.0;
        for round in 0..500 {
            t.next_batch(round).ok();
            t.adapt(&model, &mut adapted).ok();
            model.copy_from_slice(&adapted);
            if round >= 400 {
                tail += t
                    .round_metrics(BatchMetrics::default(), &model)
                    .map_or(f64::NAN, |m| m.loss);
            }
        }
        // Distance noise alone has variance 0.0225; the tail's mean loss must be near it, and
        // the model must sit near the target in both coordinates.
        let mean = tail / 100.0;
        assert!(mean < 0.1, "mean loss {mean}");
        assert!(
            (model[0] - 4.0).abs() < 0.5 && (model[1] - 6.0).abs() < 0.5,
            "{model:?}"
        );
    }

    #[test]
    fn rejects_bad_shards() {
        let ctx = |shard| TaskContext {
            node_id: "node-3".into(),
            node_index: 0,
            seed: 1,
            network_seed: 1,
            step_size: 0.1,
            rounds: 1,
            position: Some([0.0, 0.0]),
            settings: TaskSettings::default(),
            shard,
        };
        let cases = [
            serde_json::json!({}),
            serde_json::json!({ "target": [0.0, 0.0] }),
            serde_json::json!({ "target": [1.0, 0.0], "distance_noise": -1.0 }),
            serde_json::json!({ "target": [1.0, 0.0], "colour": "red" }),
        ];
        for shard in cases {
            let err = TargetLocalization::new(&ctx(shard))
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("node-3")));
        }
    }
}
