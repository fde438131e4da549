//! The analytics service: every event of the platform counted per tenant, and the
//! questions asked of them.
//!
//! Layout:
//! - `domain/`: events as rows, periods, anomaly scores, the governance report; no I/O.
//! - `warehouse/`: the tables on the service's database or on ClickHouse
//!   (`SOMAGENT_ANALYTICS_URL`), one SQL for both.
//! - `intake`: every topic into the warehouse, in batches, each event once.
//! - `reports`: usage, sessions, decisions, models, tools, workflows, governance,
//!   exports.
//! - `anomalies`: hourly checks of each tenant against its own week.
//! - `api/grpc`: the `somagent.analytics.v1` service the gateway calls.

pub mod anomalies;
mod api;
pub mod domain;
pub mod intake;
pub mod reports;
pub mod warehouse;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::config::AnalyticsUrl;
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::ConsumeOptions;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;

use crate::warehouse::Warehouse;

pub use somagent_common::service::ANALYTICS as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = &[warehouse::local::MIGRATION, anomalies::MIGRATION];

/// The warehouse `SOMAGENT_ANALYTICS_URL` names, over `db` for the local one.
pub async fn open_warehouse(
    url: &AnalyticsUrl,
    db: somagent_common::infra::db::Db,
) -> anyhow::Result<Warehouse> {
    let warehouse = match url {
        AnalyticsUrl::Local => Warehouse::Local(warehouse::local::Local::new(db)),
        AnalyticsUrl::ClickHouse(raw) => {
            Warehouse::ClickHouse(warehouse::clickhouse::ClickHouse::from_url(raw)?)
        }
    };
    warehouse
        .prepare()
        .await
        .context("the analytics warehouse cannot be prepared")?;
    Ok(warehouse)
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("analytics needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let cache = shared.cache.clone().context("analytics needs the cache")?;
    let events = shared
        .events
        .clone()
        .context("analytics needs the event bus")?;
    let warehouse = open_warehouse(&config.analytics_url, db.clone()).await?;
    tracing::info!(warehouse = warehouse.engine(), "analytics warehouse ready");
    let builder = match &warehouse {
        Warehouse::ClickHouse(c) => builder.ready_when("warehouse", WarehouseProbe(c.clone())),
        Warehouse::Local(_) => builder,
    };
    let options = ConsumeOptions::new(builder.stopping()).metrics(builder.consumer_metrics());
    builder.spawn(intake::consumer(&events, warehouse.clone(), options).await?);
    let outbox = Outbox::new(db.clone(), events);
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let detector = anomalies::Detector {
        warehouse: warehouse.clone(),
        db,
        outbox,
    };
    builder.spawn(detector.run(builder.stopping()));
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service = AnalyticsServiceServer::new(api::grpc::AnalyticsGrpc { warehouse });
    Ok(builder.authenticated_grpc(verifier, service).build())
}

/// ClickHouse answering, for `/readyz`.
#[derive(Clone)]
struct WarehouseProbe(warehouse::clickhouse::ClickHouse);

impl somagent_common::readiness::Probe for WarehouseProbe {
    async fn probe(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}
