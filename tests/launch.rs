//! End to end: the operator's tool launching whole networks as processes.
//!
//! `byzmtl launch` starts every node, collects the metrics and prints the table, and leaves
//! nothing running; killing the launcher outright stops every node it started.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{CLI_BIN, NODE_BIN, Network, wait_until};

/// Process ids of running processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| {
            // A zombie has exited; only its parent's bookkeeping is left.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        })
        .collect()
}

/// Four nodes on a ring, one of them Byzantine.
fn ring(rounds: u64) -> String {
    let mut text = format!(
        "name = \"ring\"\nrounds = {rounds}\nround_deadline_ms = 2000\nlinger_ms = 2000\n\
         [edges]\nkind = \"ring\"\n"
    );
    for k in 0..4 {
        text += &format!(
            "[[nodes]]\nid = \"r{k}\"\naddress = \"127.0.0.1:{}\"\nposition = [{k}.0, 0.0]\n\
             shard = {{ target = [10.0, 10.0] }}\n{}",
            7700 + k,
            if k == 2 { "role = \"byzantine\"\n" } else { "" }
        );
    }
    text
}

/// `byzmtl launch` of the network's topology into `out`, with this build's node binary.
fn launch_command(network: &Network, out: &Path) -> Command {
    let mut command = Command::new(CLI_BIN);
    command
        .arg("launch")
        .arg(&network.topology)
        .arg("--out")
        .arg(out)
        .env("BYZMTL_NODE_BIN", NODE_BIN);
    command
}

#[test]
fn launch_runs_every_node_and_leaves_nothing_running() {
    let network = Network::new("launch", &ring(150));
    let out = network.dir.join("run");
    let output = launch_command(&network, &out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run byzmtl: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // The table names the rule and counts the three honest nodes.
    let row = stdout.lines().find(|l| l.starts_with("loss-filtered"));
    assert!(
        row.is_some_and(|r| r.split_whitespace().nth(1) == Some("3")),
        "{stdout}"
    );

    // The run folder holds the topology as run, every honest node's metrics with every round,
    // and every node's log.
    assert!(out.join("topology.toml").is_file());
    for k in [0, 1, 3] {
        let lines = std::fs::read_to_string(out.join(format!("r{k}.jsonl"))).unwrap_or_default();
        assert_eq!(lines.lines().count(), 150, "r{k}");
    }
    for k in 0..4 {
        assert!(out.join("logs").join(format!("r{k}.log")).is_file());
    }
    assert!(
        !out.join("r2.jsonl").exists(),
        "a Byzantine node writes no metrics"
    );

    // No node outlives the launcher.
    let needle = out.join("topology.toml").display().to_string();
    assert_eq!(processes_with(&needle), Vec::<u32>::new());
}

#[test]
fn a_node_that_dies_is_reported_with_its_log() {
    // A shard with a negative noise level makes node r1 exit with an error at start-up.
    let text = ring(50).replace(
        "position = [1.0, 0.0]\nshard = { target = [10.0, 10.0] }",
        "position = [1.0, 0.0]\nshard = { target = [10.0, 10.0], distance_noise = -1.0 }",
    );
    let network = Network::new("dies", &text);
    let out = network.dir.join("run");
    let output = launch_command(&network, &out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run byzmtl: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("node `r1` ended with exit status: 1"),
        "{stderr}"
    );
    assert!(stderr.contains("distance_noise"), "{stderr}");
    assert!(stderr.contains("stopping the other nodes"), "{stderr}");
    assert!(!stderr.contains("node `r0` ended"), "{stderr}");
}

#[tokio::test]
async fn killing_the_launcher_stops_every_node() {
    let network = Network::new("kill", &ring(1_000_000));
    let out = network.dir.join("run");
    let mut launcher = launch_command(&network, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run byzmtl: {e}"));

    // Wait until all four nodes run and have done some rounds.
    let needle = out.join("topology.toml").display().to_string();
    wait_until("four running nodes", Duration::from_secs(30), || async {
        let running = processes_with(&needle).len() == 4;
        let progressed =
            std::fs::read_to_string(out.join("r0.jsonl")).is_ok_and(|t| t.lines().count() > 20);
        (running && progressed).then_some(())
    })
    .await;

    // SIGKILL gives the launcher no chance to clean up; the nodes must stop by themselves.
    launcher.kill().ok();
    launcher.wait().ok();
    wait_until("every node to stop", Duration::from_secs(15), || async {
        processes_with(&needle).is_empty().then_some(())
    })
    .await;
    assert!(Path::new(&out).join("r0.jsonl").is_file());
}

// `--rounds` and `--seed` on the command line override the topology file: the simulator then
// runs that many rounds, and another seed gives other numbers.
#[test]
fn rounds_and_seed_flags_override_the_file() {
    let network = Network::new("flags", &ring(40));
    let simulate = |out: &str, seed: &str| {
        let out = network.dir.join(out);
        let status = Command::new(CLI_BIN)
            .arg("simulate")
            .arg(&network.topology)
            .args(["--rounds", "7", "--seed", seed, "--out"])
            .arg(&out)
            .env_remove("BYZMTL_ROUNDS")
            .env_remove("BYZMTL_SEED")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()));
        std::fs::read_to_string(out.join("r0.jsonl")).unwrap_or_default()
    };
    let (first, same, other) = (
        simulate("a", "11"),
        simulate("b", "11"),
        simulate("c", "12"),
    );
    assert_eq!(first.lines().count(), 7, "{first}");
    assert_eq!(first, same);
    assert_ne!(first, other);
}
