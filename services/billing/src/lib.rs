//! The billing service: the usage ledger, and what usage adds up to.
//!
//! Layout:
//! - `domain/`: a usage event as a ledger entry, and usage's groupings; no I/O.
//! - `ledger`: the append-only ledger in the service's database, and its sums.
//! - `intake`: `billing.usage` into the ledger, in batches, each event once.
//! - `counters`: budgets' spent and reserved amounts, in process or in Redis.
//! - `budgets`: budget definitions, reservations, settlements and their notices.
//! - `invoices`: a month's usage per model and tool, closed and final after the month.
//! - `api/grpc`: the `somagent.billing.v1` service the gateway calls.

mod api;
pub mod budgets;
pub mod counters;
pub mod domain;
pub mod intake;
pub mod invoices;
pub mod ledger;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::infra::cache::Cache;
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::ConsumeOptions;
use somagent_common::infra::outbox::Outbox;

use crate::counters::{Counters, RedisCounters};
use somagent_common::proto::billing::v1::billing_service_server::BillingServiceServer;

pub use somagent_common::service::BILLING as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = &[
    ledger::MIGRATIONS[0],
    ledger::MIGRATIONS[1],
    budgets::MIGRATION,
    invoices::MIGRATION,
];

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("billing needs its database")?.clone();
    let shared = &builder.context().backends;
    let cache = shared.cache.clone().context("billing needs the cache")?;
    let events = shared
        .events
        .clone()
        .context("billing needs the event bus")?;
    let ledger = ledger::Ledger::new(db.clone());
    let invoices = invoices::Invoices::new(db.clone());
    let options = ConsumeOptions::new(builder.stopping()).metrics(builder.consumer_metrics());
    let consumer = intake::consumer(&events, ledger.clone(), options).await?;
    builder.spawn(consumer);
    let counters = match &cache {
        Cache::Redis(redis) => Counters::Redis(RedisCounters::new(redis.clone())),
        Cache::Memory(_) => Counters::Local(Arc::default()),
    };
    let outbox = Outbox::new(db.clone(), events.clone());
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let budgets =
        budgets::Budgets::new(db, counters, outbox, cache.clone()).observed_by(builder.metrics());
    tracing::info!(counters = budgets.engine(), "budget counters ready");
    builder.spawn(budgets.expiry(builder.stopping()));
    builder.spawn(budgets.follow_changes(builder.stopping()));
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    builder.spawn(invoices.closing(builder.stopping()));
    let service = BillingServiceServer::new(api::grpc::BillingGrpc {
        ledger,
        budgets,
        invoices,
    });
    Ok(builder.authenticated_grpc(verifier, service).build())
}
