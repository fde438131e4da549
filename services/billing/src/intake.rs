//! `billing.usage` into the ledger: batches of what has arrived, one transaction each,
//! committed on the bus only after the ledger's commit. An event that comes again (a
//! redelivery after a crash, a replay, a duplicate) finds its entry there and changes
//! nothing; one that is malformed goes to `billing.usage.dlq`, never into the ledger.

use somagent_common::infra::events::{
    BatchHandler, ConsumeOptions, Delivery, EventBus, EventsError, HandleError, consume_batches,
    topics,
};

use crate::domain::entry::LedgerEntry;
use crate::ledger::Ledger;

/// The consumer group: every billing replica shares the topic's partitions.
pub const GROUP: &str = "billing-ledger";

/// Events per batch: one transaction's worth.
pub const BATCH: usize = 1000;
/// How long a batch waits for more events after its first: the ledger and the
/// warehouse hold figures, which may arrive that much later, and under load a batch
/// then costs its commits once for many events.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// Enters usage events into the ledger.
pub struct Intake {
    pub ledger: Ledger,
}

impl BatchHandler for Intake {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let entries = deliveries
            .iter()
            .map(|d| LedgerEntry::from_event(&d.event))
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandleError::Poison)?;
        self.ledger
            .enter(&entries)
            .await
            .map(|_| ())
            .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

/// Joins the group on `billing.usage`: the loop to spawn.
pub async fn consumer(
    events: &EventBus,
    ledger: Ledger,
    options: ConsumeOptions,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, EventsError> {
    consume_batches(
        events,
        GROUP,
        &[topics::BILLING_USAGE],
        Intake { ledger },
        BATCH,
        options.linger(LINGER),
    )
    .await
}
