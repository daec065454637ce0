//! One node learning Fashion-MNIST alone: 2000 training images, 400 held out, Adam at 1e-3,
//! batch 64, a few epochs. Prints the held-out metrics after each epoch.

use std::time::Instant;

use byzmtl::tasks::digits::DigitsTask;
use byzmtl::tasks::{Optimizer, Task, TaskContext, TaskKind, TaskSettings};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or("/usr/share/datasets/fashion-mnist".into());
    let epochs: u64 = std::env::args()
        .nth(2)
        .and_then(|e| e.parse().ok())
        .unwrap_or(8);
    let transform = std::env::args().nth(3).unwrap_or("none".into());
    let rounds_per_epoch = 2000u64.div_ceil(64);
    let rounds = epochs * rounds_per_epoch;
    let ctx = TaskContext {
        node_id: "alone".into(),
        node_index: 0,
        seed: 2020,
        network_seed: 2020,
        step_size: 1e-3,
        rounds,
        position: None,
        settings: TaskSettings {
            kind: TaskKind::Digits,
            batch_size: 64,
            optimizer: Optimizer::Adam,
            test_every: rounds_per_epoch,
            data: Some(dir.into()),
            init: None,
        },
        shard: serde_json::json!({
            "train_images": 2000, "test_images": 400, "transform": transform
        }),
    };
    let started = Instant::now();
    let mut task = DigitsTask::new(&ctx)?;
    println!("loaded in {:.2} s", started.elapsed().as_secs_f64());
    let mut model = task.init();
    let mut adapted = vec![0.0; model.len()];
    let started = Instant::now();
    for round in 0..rounds {
        task.next_batch(round)?;
        let train = task.adapt(&model, &mut adapted)?;
        std::mem::swap(&mut model, &mut adapted);
        if let Some(test) = task.test(round, &model)? {
            println!(
                "epoch {:2} (round {:4}): batch loss {:.3}, test loss {:.3}, test accuracy {:.1}%",
                (round + 1) / rounds_per_epoch,
                round,
                train.loss,
                test.loss,
                100.0 * test.accuracy
            );
        }
    }
    println!(
        "{rounds} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
