//! Attacks: each does what it says, on small networks in the simulator.

use std::sync::Arc;

use byzmtl::attacks::{AttackSpec, Attacker, Crafted, Malformation, NAMES};
use byzmtl::driver::RoundRecord;
use byzmtl::rules::Rule;
use byzmtl::simulate::{SimOptions, SimResult, simulate};
use byzmtl::store::ModelStore;
use byzmtl::tasks::target::TargetLocalization;
use byzmtl::topology::Topology;

/// Six nodes on a complete graph, all observing the target (10, 10) from near the origin;
/// `b` (index 5) is Byzantine with `attack`.
fn network(rule: Rule, attack: &str, rounds: u64) -> Topology {
    let mut text = format!(
        "name = \"atk\"\nseed = 5\nrounds = {rounds}\nrule = \"{rule}\"\nround_deadline_ms = 500\n"
    );
    for k in 0..6 {
        let role = if k == 5 {
            format!("role = \"byzantine\"\nattack = {attack}\n")
        } else {
            String::new()
        };
        text += &format!(
            "[[nodes]]\nid = \"{}\"\naddress = \"127.0.0.1:{}\"\nposition = [{}, {}]\n\
             shard = {{ target = [10.0, 10.0] }}\n{role}",
            if k == 5 { "b".into() } else { format!("h{k}") },
            7900 + k,
            0.3 * k as f64,
            0.2 * (k % 2) as f64,
        );
    }
    Topology::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn run(t: &Topology) -> SimResult {
    simulate(t, SimOptions { records: true }).unwrap_or_else(|e| panic!("{e}"))
}

/// Mean over honest nodes of the last 50 rounds' loss.
fn tail(result: &SimResult) -> f64 {
    let honest: Vec<&Vec<f64>> = result.losses.iter().filter(|l| !l.is_empty()).collect();
    let per_node = honest
        .iter()
        .map(|l| l[l.len() - 50..].iter().sum::<f64>() / 50.0);
    per_node.sum::<f64>() / honest.len() as f64
}

/// Mean over honest nodes and the last `last` rounds of the weight on `b`.
fn weight_on_b(result: &SimResult, last: usize) -> f64 {
    let records: Vec<&RoundRecord> = result
        .records
        .iter()
        .flat_map(|r| &r[r.len().saturating_sub(last)..])
        .collect();
    let total: f64 = records
        .iter()
        .map(|r| r.weights.get("b").copied().unwrap_or(0.0))
        .sum();
    total / records.len() as f64
}

/// The attacker of `b` in `t`, having observed the honest models `seen` in `round`.
fn attacker(t: &Topology, seen: &[[f32; 2]], round: u64) -> Attacker {
    let spec = t.attack_of(5).unwrap_or_else(|| panic!("b is Byzantine"));
    let mut a = Attacker::for_node(t, &t.adjacency(), 5, spec, 2).unwrap_or_else(|e| panic!("{e}"));
    a.observe(
        round,
        seen.iter()
            .enumerate()
            .map(|(k, m)| (k, m.to_vec()))
            .collect(),
    );
    a
}

fn model(c: Crafted) -> Vec<f32> {
    match c {
        Crafted::Model(m) => m,
        other => panic!("expected a model, got {other:?}"),
    }
}

#[test]
fn every_attack_is_filtered_by_the_loss_rule() {
    for name in NAMES {
        if name == "filter-evasion" {
            continue; // Checked on its own below: it is built to pass the filter.
        }
        let spec = AttackSpec::named(name, byzmtl::tasks::TaskKind::TargetLocalization)
            .unwrap_or_else(|e| panic!("{e}"));
        let table = toml::to_string(&spec)
            .unwrap_or_default()
            .replace('\n', ", ");
        let attack = format!("{{ {} }}", table.trim_end_matches(", "));
        let filtered = tail(&run(&network(Rule::LossFiltered, &attack, 300)));
        let alone = tail(&run(&network(Rule::None, &attack, 300)));
        assert!(filtered.is_finite(), "{name}");
        assert!(
            filtered <= 1.1 * alone,
            "{name}: {filtered} vs alone {alone}"
        );
    }
}

#[test]
fn uniform_breaks_the_average() {
    let attack = "{ kind = \"uniform\", low = 15.0, high = 16.0 }";
    let average = tail(&run(&network(Rule::Average, attack, 200)));
    let alone = tail(&run(&network(Rule::None, attack, 200)));
    assert!(average > 10.0 * alone, "average {average}, alone {alone}");
}

#[test]
fn equivocate_tells_requesters_different_things() {
    let t = network(Rule::LossFiltered, "{ kind = \"equivocate\" }", 10);
    let mut a = attacker(&t, &[[10.0, 10.0], [10.2, 9.8]], 3);
    let to_h0 = model(a.craft(3, "h0"));
    let to_h1 = model(a.craft(3, "h1"));
    assert_ne!(to_h0, to_h1);
    assert_eq!(
        to_h0,
        model(a.craft(3, "h0")),
        "the same requester hears the same"
    );
}

// The lure sits closer to each victim's previous model than the victim's own adapted model, so
// the distance rule gives it the largest single weight (each honest node keeps itself and
// four honest neighbours) and the victims drift toward the goal (0, 0); the loss rule
// filters it out.
#[test]
fn distance_lure_wins_the_distance_rule() {
    let attack = "{ kind = \"distance-lure\", goal = 0.0 }";
    let lured = run(&network(Rule::Distance, attack, 300));
    let w = weight_on_b(&lured, 100);
    assert!(w > 0.3, "weight on the lure {w}");
    let alone = tail(&run(&network(Rule::None, attack, 300)));
    // Here four honest neighbours on the same target pull back, so the damage stays moderate;
    // on the paper's network (clusters apart) the lure takes the distance rule far off.
    assert!(tail(&lured) > 1.5 * alone, "{} vs {alone}", tail(&lured));

    let filtered = run(&network(Rule::LossFiltered, attack, 300));
    assert!(tail(&filtered) <= 1.1 * alone);
}

// The evading model is far from the victim's target, yet the loss rule keeps it in a good
// share of rounds: the loss only sees errors along the measurement direction.
#[test]
fn filter_evasion_passes_the_filter_far_from_the_target() {
    let attack = "{ kind = \"filter-evasion\" }";
    let t = network(Rule::LossFiltered, attack, 300);
    // A victim still 0.7 off its target leaves room: the model goes further, across the
    // victim's measurement direction.
    let mut a = attacker(&t, &[[10.5, 10.5]; 5], 0);
    let m = model(a.craft(0, "h0"));
    let off = (f64::from(m[0]) - 10.0).hypot(f64::from(m[1]) - 10.0);
    assert!(off > 1.0, "{m:?}");

    let result = run(&t);
    let kept = result
        .records
        .iter()
        .flatten()
        .filter(|r| r.weights.get("b").is_some_and(|&w| w > 0.0))
        .count();
    assert!(kept > 100, "kept in {kept} node-rounds");
}

#[test]
fn on_off_mimics_then_bursts() {
    let spec = "{ kind = \"on-off\", warmup = 10, on = 2, off = 3 }";
    let t = network(Rule::LossFiltered, spec, 20);
    let seen = [[10.0, 10.0], [12.0, 8.0]];
    // Warm-up and off rounds copy h0; rounds 10, 11 and 15 are bursts of minus the mean.
    for (round, bad) in [(5, false), (10, true), (11, true), (12, false), (15, true)] {
        let m = model(attacker(&t, &seen, round).craft(round, "h1"));
        let expected = if bad {
            vec![-11.0, -9.0]
        } else {
            vec![10.0, 10.0]
        };
        assert_eq!(m, expected, "round {round}");
    }
}

#[test]
fn mimic_copies_and_names_must_be_honest_neighbours() {
    let t = network(
        Rule::LossFiltered,
        "{ kind = \"mimic\", neighbour = \"h1\" }",
        10,
    );
    let m = model(attacker(&t, &[[1.0, 2.0], [3.0, 4.0]], 0).craft(0, "h0"));
    assert_eq!(m, vec![3.0, 4.0]);

    let t = network(
        Rule::LossFiltered,
        "{ kind = \"mimic\", neighbour = \"zz\" }",
        10,
    );
    let err = simulate(&t, SimOptions::default())
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("`b`") && e.contains("zz")));
}

#[test]
fn replay_sends_an_old_round() {
    let t = network(Rule::LossFiltered, "{ kind = \"replay\", lag = 2 }", 10);
    let spec = t.attack_of(5).unwrap_or_else(|| panic!("byzantine"));
    let mut a =
        Attacker::for_node(&t, &t.adjacency(), 5, spec, 2).unwrap_or_else(|e| panic!("{e}"));
    for round in 0..5u64 {
        a.observe(round, vec![(0, vec![round as f32, 0.0])]);
    }
    assert_eq!(model(a.craft(4, "h0")), vec![2.0, 0.0]);
}

#[test]
fn crash_straggle_and_malformed_count_as_missing() {
    for (attack, silent) in [
        ("{ kind = \"crash\", from_round = 50 }", 50),
        ("{ kind = \"straggle\", delay_ms = 1000 }", 0),
        ("{ kind = \"malformed\" }", 0),
    ] {
        let result = run(&network(Rule::Average, attack, 100));
        for records in result.records.iter().filter(|r| !r.is_empty()) {
            for r in &records[silent..] {
                assert!(!r.weights.contains_key("b"), "{attack}: round {}", r.round);
            }
        }
        assert!(tail(&result).is_finite());
    }
    // A straggler within the deadline takes part.
    let result = run(&network(
        Rule::Average,
        "{ kind = \"straggle\", delay_ms = 100 }",
        60,
    ));
    assert!(weight_on_b(&result, 10) > 0.1);
}

// On the wire, every malformed form fails the receiver's validation.
#[tokio::test]
async fn malformed_messages_fail_validation() {
    let layout = TargetLocalization::layout_of();
    let t = network(Rule::LossFiltered, "{ kind = \"malformed\" }", 8);
    let spec = t.attack_of(5).unwrap_or_else(|| panic!("byzantine"));
    let a = Attacker::for_node(&t, &t.adjacency(), 5, spec, 2).unwrap_or_else(|e| panic!("{e}"));
    let store = ModelStore::new(4, 8, ["h0".to_string()], Some(a));
    let mut kinds = Vec::new();
    for round in 0..4 {
        let wire = store.get_wire(round, "h0", &layout).await;
        let wire = wire.unwrap_or_else(|e| panic!("{e}"));
        let err = layout.from_wire(&wire).err();
        kinds.push(err.map(|e| e.kind()));
    }
    assert!(kinds.iter().all(Option::is_some), "{kinds:?}");
    assert_eq!(Malformation::ALL.len(), kinds.len());
    drop(Arc::clone(&store));
}

#[test]
fn bad_parameters_name_the_node() {
    let text = network(Rule::LossFiltered, "{ kind = \"zero\" }", 10)
        .to_toml()
        .unwrap_or_default()
        .replace("kind = \"zero\"", "kind = \"distance-lure\"\nstep = -1.0");
    let err = Topology::from_toml(&text).err().map(|e| e.to_string());
    assert!(
        err.is_some_and(|e| e.contains("`b`") && e.contains("step")),
        "{text}"
    );
}
