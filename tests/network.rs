//! End to end: networks of real `byzmtl-node` processes on 127.0.0.1.
//!
//! An 8-node network with two target clusters and two Byzantine nodes runs 200 rounds under
//! each rule through the launcher; honest nodes are judged on their mean loss over the last
//! 50 rounds. A node fed malformed models by a fake peer keeps running and reports them.

mod common;

use std::time::Duration;

use byzmtl::launcher::{self, LaunchOptions};
use byzmtl::pb;
use byzmtl::report::{self, RunData, Summary};
use byzmtl::rules::Rule;
use byzmtl::topology::Topology;
use common::{NODE_BIN, Network, free_address, wait_until};

/// Two clusters of three honest nodes (targets (10, 10) and (20, 20)) and one Byzantine node
/// in each, all connected.
fn eight_nodes(rounds: u64, addresses: &[String]) -> String {
    let mut text = format!(
        "name = \"eight\"\nseed = 5\nrounds = {rounds}\nround_deadline_ms = 3000\n\
         linger_ms = 3000\n"
    );
    for (k, address) in addresses.iter().enumerate() {
        let cluster = k / 4;
        let target = if cluster == 0 { 10.0 } else { 20.0 };
        let byzantine = k % 4 == 3;
        text += &format!(
            "[[nodes]]\nid = \"n{k}\"\naddress = \"{address}\"\nposition = [{}, {}]\n\
             cluster = {cluster}\nshard = {{ target = [{target:?}, {target:?}], \
             distance_noise = 0.15, direction_noise = 0.02 }}\n",
            0.3 * k as f64,
            0.5 + 0.1 * (k % 3) as f64,
        );
        if byzantine {
            text +=
                "role = \"byzantine\"\nattack = { kind = \"uniform\", low = 15.0, high = 16.0 }\n";
        }
    }
    text
}

fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|_| free_address()).collect()
}

/// Launches `topology` under `rule` as processes and reads the run back.
async fn launch(topology: &Topology, rule: Rule, dir: &std::path::Path) -> RunData {
    let mut t = topology.clone();
    t.rule = rule;
    let options = LaunchOptions {
        node_bin: NODE_BIN.into(),
        out: dir.join(rule.name()),
        progress: false,
    };
    let ran = launcher::launch(&t, &options, std::future::pending()).await;
    if let Err(e) = &ran {
        panic!("launch under {rule} failed: {e}");
    }
    RunData::load(&options.out).unwrap_or_else(|e| panic!("cannot read the run: {e}"))
}

fn tail_of(summary: &Summary, id: &str) -> f64 {
    summary
        .node_tail
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, v)| *v)
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_filtered_resists_byzantine_nodes_that_pull_average_away() {
    let text = eight_nodes(200, &addresses(8));
    let network = Network::new("eight", &text);
    let topology = Topology::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));

    let mut summaries = Vec::new();
    for rule in [
        Rule::LossFiltered,
        Rule::None,
        Rule::Average,
        Rule::Distance,
        Rule::Loss,
    ] {
        let run = launch(&topology, rule, &network.dir).await;
        summaries.push(report::summarize(rule.name(), &run));
    }
    println!("{}", report::table(&summaries));
    let [filtered, none, average, ..] = &summaries[..] else {
        unreachable!()
    };

    // Every honest node does no worse with loss-filtered than alone (same seed, so the same
    // measurements), within 10%.
    for (id, alone) in &none.node_tail {
        let cooperating = tail_of(filtered, id);
        assert!(
            cooperating <= 1.1 * alone,
            "node {id}: loss-filtered {cooperating} vs none {alone}"
        );
    }

    // The Byzantine nodes drag the average rule far off.
    assert!(
        average.tail_mean >= 10.0 * filtered.tail_mean,
        "average {} vs loss-filtered {}",
        average.tail_mean,
        filtered.tail_mean
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_state_shows_byzantine_neighbours_with_weight_zero() {
    let addresses = addresses(8);
    let text = eight_nodes(100_000, &addresses);
    let mut network = Network::new("state", &text);
    for k in 0..8 {
        network.spawn(&format!("n{k}"));
    }

    // Once rounds have run, node n0 gives its Byzantine neighbours n3 and n7 no weight.
    let state: pb::NodeState =
        wait_until("n0 to pass round 30", Duration::from_secs(60), || async {
            let s = byzmtl::status::get_state(&addresses[0], Duration::from_secs(2))
                .await
                .ok()?;
            (s.round >= 30).then_some(s)
        })
        .await;
    assert_eq!(state.node_id, "n0");
    assert_eq!(state.role, "honest");
    assert_eq!(state.neighbours.len(), 7);
    for n in &state.neighbours {
        if n.node_id == "n3" || n.node_id == "n7" {
            assert_eq!(n.weight, 0.0, "{n:?}");
            assert!(n.filtered, "{n:?}");
            assert!(n.score > state.score, "{n:?}");
        }
    }
    let byzantine = byzmtl::status::get_state(&addresses[3], Duration::from_secs(2)).await;
    assert!(byzantine.is_ok_and(|s| s.role == "byzantine:uniform"));
}

/// A fake peer that answers every model request with something malformed, chosen by round.
struct MalformedPeer {
    id: String,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for MalformedPeer {
    async fn get_model(
        &self,
        request: tonic::Request<pb::GetModelRequest>,
    ) -> Result<tonic::Response<pb::GetModelResponse>, tonic::Status> {
        let round = request.into_inner().round;
        let theta = |values: &[f32], shape: Vec<u64>| pb::Tensor {
            name: "theta".into(),
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let (answer_round, tensors) = match round % 4 {
            0 => (round, vec![theta(&[1.0, 2.0, 3.0], vec![3])]),
            1 => (round, vec![theta(&[f32::NAN, 1.0], vec![2])]),
            2 => (round + 7, vec![theta(&[1.0, 1.0], vec![2])]),
            _ => (round, vec![theta(&[1.0], vec![2])]),
        };
        Ok(tonic::Response::new(pb::GetModelResponse {
            node_id: self.id.clone(),
            round: answer_round,
            tensors,
        }))
    }

    async fn get_state(
        &self,
        _request: tonic::Request<pb::GetStateRequest>,
    ) -> Result<tonic::Response<pb::NodeState>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake peer"))
    }

    type WatchStateStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::NodeState, tonic::Status>> + Send>,
    >;

    async fn watch_state(
        &self,
        _request: tonic::Request<pb::WatchStateRequest>,
    ) -> Result<tonic::Response<Self::WatchStateStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake peer"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_models_are_rejected_and_counted() {
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fake_address = fake.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let service = pb::peer_server::PeerServer::new(MalformedPeer { id: "bad".into() });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(fake)),
    );

    let node_address = free_address();
    let text = format!(
        "rounds = 40\nround_deadline_ms = 2000\nlinger_ms = 500\n\
         [[nodes]]\nid = \"good\"\naddress = \"{node_address}\"\nposition = [0.0, 0.0]\n\
         shard = {{ target = [10.0, 10.0] }}\n\
         [[nodes]]\nid = \"bad\"\naddress = \"{fake_address}\"\nposition = [1.0, 0.0]\n\
         shard = {{ target = [10.0, 10.0] }}\n"
    );
    let mut network = Network::new("malformed", &text);
    network.spawn("good");

    // Watch the node while it runs: it rejects the fake peer's models and keeps going.
    let state = wait_until(
        "the node to reject four kinds of model",
        Duration::from_secs(30),
        || async {
            let s = byzmtl::status::get_state(&node_address, Duration::from_secs(2))
                .await
                .ok()?;
            (s.round >= 8).then_some(s)
        },
    )
    .await;
    let bad = &state.neighbours[0];
    assert_eq!(bad.node_id, "bad");
    assert!(bad.rejected >= 8, "{bad:?}");
    assert_eq!(bad.weight, 0.0);
    assert!(!bad.last_reject_reason.is_empty());

    // It finishes every round and exits cleanly.
    let status = network.wait_exit("good", Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        network.log("good")
    );
    let log = network.log("good");
    for reason in ["shape", "non-finite", "round", "bytes"] {
        assert!(
            log.contains(reason),
            "no `{reason}` rejection logged:\n{log}"
        );
    }
    server.abort();
}

// Byzantine neighbours that crash, straggle past the deadline or send malformed models never
// hold an honest node up: every round of every honest node ends within the round deadline
// (plus scheduling slack), the run finishes, and each misbehaving neighbour shows up in the
// rounds' timeouts or rejections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_neighbours_cannot_slow_honest_rounds_past_the_deadline() {
    let deadline_ms = 600.0;
    let rounds = 12;
    let attacks = [
        ("crash", "{ kind = \"crash\", from_round = 3 }"),
        ("straggle", "{ kind = \"straggle\", delay_ms = 5000 }"),
        ("malformed", "{ kind = \"malformed\" }"),
    ];
    let mut text = format!(
        "name = \"pace\"\nseed = 2\nrounds = {rounds}\nround_deadline_ms = {deadline_ms}\n\
         startup_grace_ms = 20000\nlinger_ms = 1000\n"
    );
    for k in 0..2 {
        text += &format!(
            "[[nodes]]\nid = \"h{k}\"\naddress = \"{}\"\nposition = [{k}.0, 0.0]\n\
             shard = {{ target = [10.0, 10.0] }}\n",
            free_address()
        );
    }
    for (name, attack) in attacks {
        text += &format!(
            "[[nodes]]\nid = \"{name}\"\naddress = \"{}\"\nposition = [0.5, 1.0]\n\
             role = \"byzantine\"\nattack = {attack}\n",
            free_address()
        );
    }
    let network = Network::new("pace", &text);
    let topology = Topology::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let out = network.dir.join("run");
    let options = LaunchOptions {
        node_bin: NODE_BIN.into(),
        out: out.clone(),
        progress: false,
    };
    let started = std::time::Instant::now();
    if let Err(e) = launcher::launch(&topology, &options, std::future::pending()).await {
        panic!("launch failed: {e}");
    }
    let elapsed = started.elapsed();

    for id in ["h0", "h1"] {
        let path = out.join(format!("{id}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(records.len(), rounds, "{id} did not finish every round");
        let listed = |r: &serde_json::Value, key: &str, who: &str| {
            r[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(who)))
        };
        // Round 0 waits out the start-up grace for peers that are still starting.
        for r in &records[1..] {
            let gather = r["gather_ms"].as_f64().unwrap_or(f64::NAN);
            assert!(
                gather <= deadline_ms + 400.0,
                "{id} round {}: gathering took {gather} ms",
                r["round"]
            );
            assert!(listed(r, "timeouts", "straggle"), "{r}");
            assert!(listed(r, "rejected", "malformed"), "{r}");
            let weighed = |who: &str| r["weights"].get(who).is_some();
            assert!(!weighed("straggle") && !weighed("malformed"), "{r}");
        }
        // The crash node answers (with the honest mean) until round 3, then never again.
        for r in &records {
            let crashed = r["round"].as_u64().is_some_and(|round| round >= 3);
            assert_eq!(listed(r, "timeouts", "crash"), crashed, "{r}");
            if crashed {
                assert!(r["weights"].get("crash").is_none(), "{r}");
            }
        }
    }
    // A straggler's 5 s per round would have made this run take a minute.
    assert!(
        elapsed < Duration::from_secs(45),
        "the run took {elapsed:?}"
    );
}
