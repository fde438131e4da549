//! Every topic into the warehouse: batches through the one consumer loop, each batch's
//! rows in one insert per table, acknowledged only after the warehouse took them; an
//! event that comes again is the same row (its id is the key).

use somagent_common::infra::events::{
    BatchHandler, ConsumeOptions, Delivery, EventBus, EventsError, HandleError, consume_batches,
    topics,
};

use crate::domain::rows::rows_of;
use crate::warehouse::Warehouse;

/// The consumer group: every analytics replica shares the topics' partitions.
pub const GROUP: &str = "analytics-warehouse";
/// Events per batch: one round trip to the warehouse per table.
pub const BATCH: usize = 2000;
/// How long a batch waits for more events after its first: the ledger and the
/// warehouse hold figures, which may arrive that much later, and under load a batch
/// then costs its commits once for many events.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

pub struct Intake {
    pub warehouse: Warehouse,
}

impl BatchHandler for Intake {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let rows: Vec<_> = deliveries
            .iter()
            .flat_map(|d| rows_of(&d.topic, &d.event))
            .collect();
        self.warehouse
            .insert(&rows)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

/// Joins the group on every topic: the loop to spawn.
pub async fn consumer(
    events: &EventBus,
    warehouse: Warehouse,
    options: ConsumeOptions,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, EventsError> {
    consume_batches(
        events,
        GROUP,
        topics::ALL,
        Intake { warehouse },
        BATCH,
        options.linger(LINGER),
    )
    .await
}
