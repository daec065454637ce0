//! Determinism: one seed gives the same numbers on every run, with any number of threads,
//! and the simulator gives the same per-round losses as real processes.

mod common;

use byzmtl::launcher::{self, LaunchOptions};
use byzmtl::report::RunData;
use byzmtl::rules::Rule;
use byzmtl::simulate::{SimOptions, simulate};
use byzmtl::topology::Topology;
use common::{NODE_BIN, Network};

/// Ten nodes in two clusters on a geometric graph, two of them Byzantine.
fn topology(rule: Rule) -> Topology {
    let mut text = format!(
        "name = \"det\"\nseed = 11\nrounds = 120\nrule = \"{rule}\"\nround_deadline_ms = 10000\n\
         linger_ms = 3000\n[edges]\nkind = \"geometric\"\nradius = 1.2\nmax_neighbours = 6\n"
    );
    for k in 0..10 {
        let target = if k % 2 == 0 {
            "[10.0, 10.0]"
        } else {
            "[20.0, 10.0]"
        };
        text += &format!(
            "[[nodes]]\nid = \"d{k}\"\naddress = \"127.0.0.1:{}\"\nposition = [{}, {}]\n\
             shard = {{ target = {target} }}\n{}",
            7800 + k,
            0.4 * (k % 5) as f64,
            0.5 * (k / 5) as f64,
            if k == 3 || k == 8 {
                "role = \"byzantine\"\n"
            } else {
                ""
            },
        );
    }
    Topology::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn losses(topology: &Topology, threads: usize) -> Vec<Vec<f64>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    pool.install(|| simulate(topology, SimOptions::default()))
        .unwrap_or_else(|e| panic!("{e}"))
        .losses
}

#[test]
fn the_same_seed_gives_the_same_numbers() {
    for rule in [Rule::LossFiltered, Rule::Distance] {
        let t = topology(rule);
        let once = losses(&t, 1);
        assert_eq!(once, losses(&t, 2), "{rule}: one thread and two differ");
        assert_eq!(once, losses(&t, 2), "{rule}: two runs differ");

        let mut other = t.clone();
        other.seed += 1;
        assert_ne!(once, losses(&other, 2), "{rule}: the seed changes nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_and_simulator_agree_round_by_round() {
    let t = topology(Rule::LossFiltered);
    let network = Network::new("det", &t.to_toml().unwrap_or_default());
    let options = LaunchOptions {
        node_bin: NODE_BIN.into(),
        out: network.dir.join("run"),
        progress: false,
    };
    if let Err(e) = launcher::launch(&t, &options, std::future::pending()).await {
        panic!("launch failed: {e}");
    }
    let launched = RunData::load(&options.out).unwrap_or_else(|e| panic!("{e}"));
    let simulated = losses(&t, 2);

    // Every honest node's every round matches to the bit.
    let honest: Vec<usize> = t.honest().collect();
    assert_eq!(honest.len(), 8);
    for k in honest {
        assert_eq!(launched.losses[k].len(), 120);
        assert_eq!(launched.losses[k], simulated[k], "node d{k}");
    }
}
