//! Prometheus metrics of one node, served over HTTP at `/metrics`.
//!
//! [`NodeMetrics`] owns the node's metric families. The driver updates them as rounds run:
//! every fetch, timeout and rejected message as it is sorted, and the round, losses, scores
//! and weights once the round is combined. [`serve`] answers `GET /metrics` in the
//! OpenMetrics text format on an already-bound listener until its shutdown signal completes.
//!
//! Every family is named `byzmtl_*`. Per-neighbour series carry the label `neighbour` (the
//! neighbour's node id); rejected messages also carry `reason`, the short, stable name of the
//! validation failure (`shape`, `non-finite`, `round`, ...), never the free text of a peer's
//! message, so the number of series stays bounded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::driver::NodeInfo;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge holding a float.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels of a per-neighbour series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeighbourLabels {
    neighbour: String,
}

/// The labels of a rejected-message counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    neighbour: String,
    reason: String,
}

/// The labels of the node's info series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    node: String,
    role: String,
    task: String,
    rule: String,
}

/// One neighbour's series, looked up once so that a round's updates take no locks.
struct NeighbourSeries {
    score: FloatGauge,
    weight: FloatGauge,
    accepted: Counter,
    filtered: Counter,
    timeouts: Counter,
    fetch: Histogram,
}

/// The Prometheus metrics of one node.
pub struct NodeMetrics {
    registry: Registry,
    round: Gauge,
    loss: FloatGauge,
    score: FloatGauge,
    own_weight: FloatGauge,
    accepted: Gauge,
    filtered: Gauge,
    round_seconds: FloatGauge,
    rejected: Family<RejectLabels, Counter>,
    /// Neighbours' ids and series, in topology order.
    neighbours: Vec<(String, NeighbourSeries)>,
}

/// Buckets for fetch latencies: 0.25 ms doubling up to about 8 s.
fn fetch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl NodeMetrics {
    /// The metrics of the node `info` describes, with every per-neighbour series present
    /// from the start (at zero), so that dashboards see each neighbour before its first round.
    pub fn new(info: &NodeInfo) -> Self {
        let mut registry = Registry::with_prefix("byzmtl");
        let info_labels = InfoLabels {
            node: info.id.clone(),
            role: info.role.clone(),
            task: info.task.clone(),
            rule: info.rule.clone(),
        };
        registry.register(
            "node",
            "The node's id, role, task and rule",
            Info::new(info_labels),
        );

        // The node's own numbers.
        let round = Gauge::default();
        round.set(-1);
        registry.register(
            "round",
            "The last finished round, counted from 0, or -1 before the first",
            round.clone(),
        );
        let loss = FloatGauge::default();
        registry.register(
            "loss",
            "The loss of the node's model on its own batch of the last round",
            loss.clone(),
        );
        let score = FloatGauge::default();
        registry.register(
            "score",
            "The node's score of its own adapted model (moving average of its loss)",
            score.clone(),
        );
        let own_weight = FloatGauge::default();
        registry.register(
            "own_weight",
            "The weight of the node's own adapted model in the last combination",
            own_weight.clone(),
        );
        let accepted = Gauge::default();
        registry.register(
            "neighbours_accepted",
            "Neighbours whose model had a positive weight in the last round",
            accepted.clone(),
        );
        let filtered = Gauge::default();
        registry.register(
            "neighbours_filtered",
            "Neighbours the rule filtered out in the last round",
            filtered.clone(),
        );
        let round_seconds = FloatGauge::default();
        registry.register_with_unit(
            "round_duration",
            "How long the last round took, from adapt to combine",
            Unit::Seconds,
            round_seconds.clone(),
        );

        // Per-neighbour families.
        let neighbour_score = Family::<NeighbourLabels, FloatGauge>::default();
        registry.register(
            "neighbour_score",
            "A neighbour's score: moving average of its models' loss on this node's data",
            neighbour_score.clone(),
        );
        let neighbour_weight = Family::<NeighbourLabels, FloatGauge>::default();
        registry.register(
            "neighbour_weight",
            "A neighbour's weight in the last combination",
            neighbour_weight.clone(),
        );
        let accepted_rounds = Family::<NeighbourLabels, Counter>::default();
        registry.register(
            "neighbour_accepted_rounds",
            "Rounds in which a neighbour's model had a positive weight",
            accepted_rounds.clone(),
        );
        let filtered_rounds = Family::<NeighbourLabels, Counter>::default();
        registry.register(
            "neighbour_filtered_rounds",
            "Rounds in which the rule filtered a neighbour out",
            filtered_rounds.clone(),
        );
        let timeouts = Family::<NeighbourLabels, Counter>::default();
        registry.register(
            "timeouts",
            "Rounds in which a neighbour's model did not arrive before the round deadline",
            timeouts.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected",
            "A neighbour's messages that failed validation or could not be fetched, by reason",
            rejected.clone(),
        );
        let fetch = Family::<NeighbourLabels, Histogram>::new_with_constructor(
            fetch_buckets as fn() -> Histogram,
        );
        registry.register_with_unit(
            "fetch",
            "Time from asking a neighbour for its model to a valid answer",
            Unit::Seconds,
            fetch.clone(),
        );

        let neighbours = info
            .neighbours
            .iter()
            .map(|(id, _)| {
                let labels = NeighbourLabels {
                    neighbour: id.clone(),
                };
                let series = NeighbourSeries {
                    score: neighbour_score.get_or_create_owned(&labels),
                    weight: neighbour_weight.get_or_create_owned(&labels),
                    accepted: accepted_rounds.get_or_create_owned(&labels),
                    filtered: filtered_rounds.get_or_create_owned(&labels),
                    timeouts: timeouts.get_or_create_owned(&labels),
                    fetch: fetch.get_or_create_owned(&labels),
                };
                (id.clone(), series)
            })
            .collect();

        Self {
            registry,
            round,
            loss,
            score,
            own_weight,
            accepted,
            filtered,
            round_seconds,
            rejected,
            neighbours,
        }
    }

    /// Neighbour `l`'s model arrived, valid, `latency` after it was asked for.
    pub fn fetched(&self, l: usize, latency: Duration) {
        if let Some((_, n)) = self.neighbours.get(l) {
            n.fetch.observe(latency.as_secs_f64());
        }
    }

    /// Neighbour `l`'s model did not arrive before the round deadline.
    pub fn timed_out(&self, l: usize) {
        if let Some((_, n)) = self.neighbours.get(l) {
            n.timeouts.inc();
        }
    }

    /// Neighbour `l`'s message was rejected for the reason named `kind`.
    pub fn rejected(&self, l: usize, kind: &str) {
        if let Some((id, _)) = self.neighbours.get(l) {
            let labels = RejectLabels {
                neighbour: id.clone(),
                reason: kind.to_string(),
            };
            self.rejected.get_or_create(&labels).inc();
        }
    }

    /// A round is combined. `scores`, `weights` and `filtered` are indexed by neighbourhood
    /// position, with the node itself at 0, as the engine keeps them.
    pub fn round_done(&self, round: RoundFigures<'_>) {
        self.round
            .set(i64::try_from(round.round).unwrap_or(i64::MAX));
        self.loss.set(round.loss);
        self.round_seconds.set(round.duration.as_secs_f64());
        if let Some(&own) = round.scores.first() {
            self.score.set(own);
        }
        if let Some(&own) = round.weights.first() {
            self.own_weight.set(own);
        }

        let (mut accepted, mut filtered) = (0, 0);
        for (l, (_, n)) in self.neighbours.iter().enumerate() {
            let at = l + 1;
            let weight = round.weights.get(at).copied().unwrap_or(0.0);
            n.score.set(round.scores.get(at).copied().unwrap_or(0.0));
            n.weight.set(weight);
            if weight > 0.0 {
                n.accepted.inc();
                accepted += 1;
            }
            if round.filtered.get(at).copied().unwrap_or(false) {
                n.filtered.inc();
                filtered += 1;
            }
        }
        self.accepted.set(accepted);
        self.filtered.set(filtered);
    }

    /// Sets the round alone, for a Byzantine node that runs no rounds of its own: the highest
    /// round any neighbour has asked it for.
    pub fn round_seen(&self, round: u64) {
        self.round.set(i64::try_from(round).unwrap_or(i64::MAX));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What one combined round came to, as the metrics take it.
#[derive(Debug, Clone, Copy)]
pub struct RoundFigures<'a> {
    /// The round, from 0.
    pub round: u64,
    /// The loss reported for the round.
    pub loss: f64,
    /// Scores by neighbourhood position (0 is the node itself).
    pub scores: &'a [f64],
    /// Weights by neighbourhood position.
    pub weights: &'a [f64],
    /// Whether the rule filtered each position out.
    pub filtered: &'a [bool],
    /// How long the round took.
    pub duration: Duration,
}

/// Serves `metrics` at `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<NodeMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers one scrape.
async fn scrape(State(metrics): State<Arc<NodeMetrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            id: "a".into(),
            role: "honest".into(),
            task: "target-localization".into(),
            rule: "loss-filtered".into(),
            rounds: 10,
            address: "127.0.0.1:1".into(),
            metrics_address: None,
            neighbours: vec![
                ("b".into(), "127.0.0.1:2".into()),
                ("z".into(), "127.0.0.1:3".into()),
            ],
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_neighbour_is_listed_before_the_first_round() {
        let text = NodeMetrics::new(&info()).encode().unwrap();
        assert!(text.contains("byzmtl_round -1"), "{text}");
        assert!(text.contains("byzmtl_neighbour_weight{neighbour=\"b\"} 0.0"));
        assert!(text.contains("byzmtl_timeouts_total{neighbour=\"z\"} 0"));
        assert!(text.contains(
            "byzmtl_node_info{node=\"a\",role=\"honest\",task=\"target-localization\",\
             rule=\"loss-filtered\"} 1"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_round_sets_weights_scores_and_counts() {
        let metrics = NodeMetrics::new(&info());
        metrics.fetched(0, Duration::from_micros(600));
        metrics.timed_out(1);
        metrics.rejected(1, "non-finite");
        metrics.rejected(1, "non-finite");
        metrics.round_done(RoundFigures {
            round: 3,
            loss: 0.5,
            scores: &[1.0, 0.5, 9.0],
            weights: &[0.25, 0.75, 0.0],
            filtered: &[false, false, true],
            duration: Duration::from_millis(20),
        });
        let text = metrics.encode().unwrap();

        assert_eq!(line(&text, "byzmtl_round "), Some("byzmtl_round 3"));
        assert_eq!(line(&text, "byzmtl_score "), Some("byzmtl_score 1.0"));
        assert_eq!(
            line(&text, "byzmtl_own_weight "),
            Some("byzmtl_own_weight 0.25")
        );
        assert!(text.contains("byzmtl_neighbour_weight{neighbour=\"b\"} 0.75"));
        assert!(text.contains("byzmtl_neighbour_weight{neighbour=\"z\"} 0.0"));
        assert!(text.contains("byzmtl_neighbour_score{neighbour=\"z\"} 9.0"));
        assert!(text.contains("byzmtl_neighbours_accepted 1"));
        assert!(text.contains("byzmtl_neighbours_filtered 1"));
        assert!(text.contains("byzmtl_neighbour_filtered_rounds_total{neighbour=\"z\"} 1"));
        assert!(text.contains("byzmtl_timeouts_total{neighbour=\"z\"} 1"));
        assert!(text.contains("byzmtl_rejected_total{neighbour=\"z\",reason=\"non-finite\"} 2"));
        // 0.6 ms falls in the bucket ending at 1 ms (0.25 ms * 2^2), not the one below it.
        assert!(text.contains("byzmtl_fetch_seconds_bucket{le=\"0.0005\",neighbour=\"b\"} 0"));
        assert!(text.contains("byzmtl_fetch_seconds_bucket{le=\"0.001\",neighbour=\"b\"} 1"));
        assert!(text.contains("byzmtl_fetch_seconds_count{neighbour=\"b\"} 1"));
    }

    #[tokio::test]
    async fn serves_the_text_over_http_until_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(NodeMetrics::new(&info()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, async {
            stopped.await.ok();
        }));

        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("application/openmetrics-text"));
        assert!(answer.contains("byzmtl_neighbour_weight{neighbour=\"z\"}"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
