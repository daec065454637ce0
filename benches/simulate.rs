//! Simulator benchmark: the paper's experiment, and how the cost grows with the network.
//!
//! Run with `cargo bench --bench simulate`. It prints, for the paper's target-localization
//! network (100 nodes, 20 Byzantine, 500 rounds), the time of one run per rule and of all
//! four; then a scaling series of geometric networks (1,000 to 20,000 nodes, about 10
//! neighbours each), with the time per node-neighbour-round (flat when the cost is linear in
//! nodes x neighbours) and the process's peak memory. For reference, the authors' Python
//! simulation loop takes about 5 s for the four rules of the paper's experiment on this kind
//! of machine.

use std::time::{Duration, Instant};

use byzmtl::generate::PaperSetup;
use byzmtl::rules::Rule;
use byzmtl::simulate::{SimOptions, simulate};
use byzmtl::topology::Topology;

/// The best of `repeats` runs of `f`.
fn best_of(repeats: usize, mut f: impl FnMut()) -> Duration {
    (0..repeats)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn run(topology: &Topology) {
    if let Err(e) = simulate(topology, SimOptions::default()) {
        eprintln!("simulation failed: {e}");
        std::process::exit(1);
    }
}

/// The process's peak resident memory in MiB, from /proc.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("threads: {threads}");

    // The paper's experiment, once per rule and all four together.
    let paper = PaperSetup::paper().build();
    println!("\npaper experiment: 100 nodes, 20 Byzantine, 500 rounds");
    let mut total = Duration::ZERO;
    for rule in Rule::PAPER {
        let mut t = paper.clone();
        t.rule = rule;
        let time = best_of(20, || run(&t));
        total += time;
        println!("  {:<14} {:>9.2} ms", rule.name(), time.as_secs_f64() * 1e3);
    }
    println!(
        "  {:<14} {:>9.2} ms  ({:.0}x faster than the 5 s Python reference)",
        "all four",
        total.as_secs_f64() * 1e3,
        5.0 / total.as_secs_f64()
    );

    // Scaling: ~10 neighbours per node, 500 rounds, loss-filtered.
    println!("\nscaling (loss-filtered, 500 rounds, ~10 neighbours, 20% Byzantine)");
    println!(
        "  {:>7} {:>11} {:>10} {:>12} {:>14} {:>10}",
        "nodes", "neighbours", "time s", "node-rounds", "ns/nbr-round", "peak MiB"
    );
    for nodes in [1_000, 2_000, 5_000, 10_000, 20_000] {
        let setup = PaperSetup {
            name: format!("scale-{nodes}"),
            nodes,
            byzantine: nodes / 5,
            // About 16 nodes fall within radius 1 at this density; with the cap at 14 (self
            // included) and only mutual choices kept, a node ends with about 10 neighbours.
            side: (nodes as f64 * std::f64::consts::PI / 16.0).sqrt(),
            max_neighbours: 14,
            ..PaperSetup::paper()
        };
        let t = setup.build();
        let degree: usize = t.adjacency().iter().map(Vec::len).sum();
        let mean_degree = degree as f64 / nodes as f64;
        let time = best_of(2, || run(&t));
        let node_rounds = nodes as f64 * 500.0;
        let per = time.as_secs_f64() * 1e9 / (node_rounds * (mean_degree + 1.0));
        println!(
            "  {:>7} {:>11.1} {:>10.3} {:>12.0} {:>14.1} {:>10.0}",
            nodes,
            mean_degree,
            time.as_secs_f64(),
            node_rounds,
            per,
            peak_rss_mib()
        );
    }
}
