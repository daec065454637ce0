//! An exchange inside one process: neighbours' stores are read directly.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Exchange, Fetch, Gathered};
use crate::store::ModelStore;

/// Links a node to its neighbours' [`ModelStore`]s in the same process.
pub struct MemoryExchange {
    me: String,
    own: Arc<ModelStore>,
    neighbours: Vec<Arc<ModelStore>>,
}

impl MemoryExchange {
    /// An exchange for node `me` publishing into `own` and reading from `neighbours`, in
    /// topology order.
    pub fn new(me: String, own: Arc<ModelStore>, neighbours: Vec<Arc<ModelStore>>) -> Self {
        Self {
            me,
            own,
            neighbours,
        }
    }
}

impl Exchange for MemoryExchange {
    fn publish(&self, round: u64, model: Arc<[f32]>) {
        self.own.publish(round, model);
    }

    async fn gather(&self, round: u64, deadline: Instant) -> Vec<Gathered> {
        let start = Instant::now();
        let requests = self.neighbours.iter().map(|store| async move {
            let got = tokio::time::timeout_at(deadline, store.get(round, &self.me)).await;
            let fetch = match got {
                Ok(Ok(model)) => Fetch::Model(model.to_vec()),
                Ok(Err(e)) => Fetch::Rejected {
                    kind: "unavailable",
                    reason: e.to_string(),
                },
                Err(_) => Fetch::Timeout,
            };
            Gathered {
                fetch,
                latency: start.elapsed(),
            }
        });
        futures::future::join_all(requests).await
    }
}
