//! Times one node's round of the `digits` task: one local Adam step at batch 64 and the
//! scoring of 9 neighbour models on the round's batch, as the round engine does them.
//!
//! The data is a synthetic IDX data set written to a temporary folder (the time of a round does
//! not depend on the pixel values). Prints the mean over the measured rounds after a warm-up,
//! the split between forward pass, backward pass, optimizer and scoring, and the peak resident
//! memory of the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use byzmtl::tasks::digits::DigitsTask;
use byzmtl::tasks::{Optimizer, Task, TaskContext, TaskKind, TaskSettings};

const WARM_UP: u64 = 3;
const MEASURED: u64 = 10;
const NEIGHBOURS: usize = 9;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("byzmtl-bench-cnn-{}", std::process::id()));
    write_data_set(&dir, 2000, 400)?;
    let result = run(&dir);
    std::fs::remove_dir_all(&dir)?;
    result
}

fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = TaskContext {
        node_id: "bench".into(),
        node_index: 0,
        seed: 1,
        network_seed: 1,
        step_size: 1e-3,
        rounds: WARM_UP + MEASURED,
        position: None,
        settings: TaskSettings {
            kind: TaskKind::Digits,
            batch_size: 64,
            optimizer: Optimizer::Adam,
            test_every: 0,
            data: Some(PathBuf::from(dir)),
            init: None,
        },
        shard: serde_json::json!({ "train_images": 2000, "test_images": 400 }),
    };
    let mut task = DigitsTask::new(&ctx)?;
    let mut model = task.init();
    let mut adapted = vec![0.0; model.len()];

    // Neighbour models: the initial model, shifted a little each.
    let neighbours: Vec<Vec<f32>> = (0..NEIGHBOURS)
        .map(|l| model.iter().map(|v| v + 1e-3 * l as f32).collect())
        .collect();
    let refs: Vec<&[f32]> = neighbours.iter().map(Vec::as_slice).collect();
    let mut losses = vec![0.0; NEIGHBOURS];

    let (mut round_time, mut scoring) = (Duration::ZERO, Duration::ZERO);
    let (mut forward, mut backward, mut optimizer) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..WARM_UP + MEASURED {
        let started = Instant::now();
        task.next_batch(round)?;
        task.adapt(&model, &mut adapted)?;
        let scoring_started = Instant::now();
        task.losses(&refs, &mut losses)?;
        let now = Instant::now();
        std::mem::swap(&mut model, &mut adapted);

        if round >= WARM_UP {
            round_time += now - started;
            scoring += now - scoring_started;
            let t = task.timings();
            forward += t.forward;
            backward += t.backward;
            optimizer += t.optimizer;
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3 / MEASURED as f64;
    println!("cnn round: adam step at batch 64 + {NEIGHBOURS} neighbour scores, {MEASURED} rounds");
    println!("  round      {:8.1} ms", ms(round_time));
    println!("  forward    {:8.1} ms", ms(forward));
    println!("  backward   {:8.1} ms", ms(backward));
    println!("  optimizer  {:8.1} ms", ms(optimizer));
    println!(
        "  scoring    {:8.1} ms ({:.1} ms per model)",
        ms(scoring),
        ms(scoring) / NEIGHBOURS as f64
    );
    println!(
        "  other      {:8.1} ms",
        ms(round_time) - ms(forward + backward + optimizer + scoring)
    );
    println!(
        "  peak rss   {}",
        peak_rss().unwrap_or_else(|| "unknown".into())
    );

    plain_candle(&model, &refs)?;
    Ok(())
}

/// The same round with candle's own conv2d and max_pool2d in NCHW order and candle's
/// cross-entropy, for comparison (its max-pool gradients are wrong; only the time counts).
fn plain_candle(model: &[f32], neighbours: &[&[f32]]) -> Result<(), Box<dyn std::error::Error>> {
    use byzmtl::tasks::classify::{Model, param_tensors};
    use candle_core::{Device, Tensor, Var};

    let layout = byzmtl::tasks::cnn::Cnn::new().layout().clone();
    let forward = |params: &[Tensor], images: &Tensor| -> candle_core::Result<Tensor> {
        let mut x = images.clone();
        for layer in 0..3 {
            let bias = params[2 * layer + 1].reshape((1, (), 1, 1))?;
            let y = x
                .conv2d(&params[2 * layer], 1, 1, 1, 1)?
                .broadcast_add(&bias)?;
            x = y.relu()?.max_pool2d(2)?;
        }
        let x = x.flatten_from(1)?;
        let x = x
            .matmul(&params[6].t()?)?
            .broadcast_add(&params[7])?
            .relu()?;
        x.matmul(&params[8].t()?)?.broadcast_add(&params[9])
    };
    let images = Tensor::rand(0f32, 1.0, (64, 1, 28, 28), &Device::Cpu)?;
    let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, 64, &Device::Cpu)?;

    let (mut step, mut scoring) = (Duration::ZERO, Duration::ZERO);
    for round in 0..WARM_UP + MEASURED {
        let started = Instant::now();
        let vars = layout
            .ranges()
            .map(|(spec, range)| {
                Var::from_slice(&model[range], spec.shape.as_slice(), &Device::Cpu)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = candle_nn::loss::cross_entropy(&forward(&params, &images)?, &labels)?;
        let grads = loss.backward()?;
        for var in &vars {
            if let Some(g) = grads.get(var) {
                g.flatten_all()?.to_vec1::<f32>()?;
            }
        }

        let scoring_started = Instant::now();
        for neighbour in neighbours {
            let params = param_tensors(&layout, neighbour)?;
            candle_nn::loss::cross_entropy(&forward(&params, &images)?, &labels)?
                .to_scalar::<f32>()?;
        }
        if round >= WARM_UP {
            step += scoring_started - started;
            scoring += scoring_started.elapsed();
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3 / MEASURED as f64;
    println!("plain candle (conv2d, max_pool2d, autograd), the same round for comparison:");
    println!("  round      {:8.1} ms", ms(step + scoring));
    println!("  step       {:8.1} ms (forward and backward)", ms(step));
    println!("  scoring    {:8.1} ms", ms(scoring));
    Ok(())
}

/// The process's peak resident set size, as the kernel reports it.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}

/// Writes an IDX data set of random images and labels in `dir`.
fn write_data_set(dir: &Path, train: u32, test: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (prefix, count) in [("train", train), ("t10k", test)] {
        let mut images = Vec::new();
        for word in [0x0803u32, count, 28, 28] {
            images.extend_from_slice(&word.to_be_bytes());
        }
        images.extend((0..count * 784).map(|_| next() as u8));
        let mut labels = Vec::new();
        for word in [0x0801u32, count] {
            labels.extend_from_slice(&word.to_be_bytes());
        }
        labels.extend((0..count).map(|_| (next() % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images)?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels)?;
    }
    Ok(())
}
