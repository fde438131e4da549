//! Anomaly alerts: once an hour, each tenant's last complete hour against its own week
//! before (a robust z-score, `domain::anomaly`), for token usage and for the share of
//! turns that failed. An anomalous hour starts an incident and tells the tenant's
//! admins (`agent.notifications`, `analytics.anomaly`) once; the hours after it that
//! are anomalous too only extend it. Tenants with no activity that hour are skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use somagent_common::CancellationToken;
use somagent_common::clock::{rfc3339_ms, unix_now_ms};
use somagent_common::infra::db::{Db, DbError, Migration};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;
use sqlx::Row;

use crate::domain::anomaly;
use crate::warehouse::{Col, Query, Warehouse};

pub const MIGRATION: Migration = Migration::portable(
    2,
    "incidents",
    include_str!("../migrations/0002_incidents.sql"),
);

const HOUR: i64 = 3_600_000;
/// The baseline: the week before the hour.
const BASELINE_HOURS: i64 = 7 * 24;

/// One metric of one hour.
struct Metric {
    name: &'static str,
    what: &'static str,
    floor: f64,
    min_scale: f64,
}

const TOKENS: Metric = Metric {
    name: "tokens",
    what: "token usage",
    floor: 10_000.0,
    min_scale: 1.0,
};
const FAILURES: Metric = Metric {
    name: "turn_failure_rate",
    what: "share of failed turns",
    floor: 0.2,
    min_scale: 0.02,
};

#[derive(Clone)]
pub struct Detector {
    pub warehouse: Warehouse,
    pub db: Db,
    pub outbox: Outbox,
}

impl Detector {
    /// Checks the hour before the one `now_ms` is in; the notifications it published.
    pub async fn check(&self, now_ms: i64) -> anyhow::Result<Vec<Envelope>> {
        let hour = (now_ms / HOUR) * HOUR - HOUR;
        let from = hour - BASELINE_HOURS * HOUR;
        let bucket = self.warehouse.bucket("time_ms", HOUR);
        let f = self.warehouse.fin();
        let tokens = self
            .warehouse
            .fetch(
                &Query::new(
                    format!(
                        "SELECT tenant, {bucket} AS h, sum(prompt_tokens + completion_tokens) FROM an_usage{f} \
                         WHERE time_ms >= ? AND time_ms < ? GROUP BY tenant, h"
                    ),
                    &[Col::Text, Col::Int, Col::Int],
                )
                .int(from)
                .int(hour + HOUR),
            )
            .await?;
        let turns = self
            .warehouse
            .fetch(
                &Query::new(
                    format!(
                        "SELECT tenant, {bucket} AS h, count(*), sum(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) \
                         FROM an_turns{f} WHERE time_ms >= ? AND time_ms < ? GROUP BY tenant, h"
                    ),
                    &[Col::Text, Col::Int, Col::Int, Col::Int],
                )
                .int(from)
                .int(hour + HOUR),
            )
            .await?;
        // tenant -> hour -> value
        let mut series: BTreeMap<(&str, String), BTreeMap<i64, f64>> = BTreeMap::new();
        for r in &tokens {
            series
                .entry((TOKENS.name, r[0].text()))
                .or_default()
                .insert(r[1].int(), r[2].int() as f64);
        }
        for r in &turns {
            let (total, failed) = (r[2].int(), r[3].int());
            // Too few turns to speak of a rate.
            if total >= 5 {
                series
                    .entry((FAILURES.name, r[0].text()))
                    .or_default()
                    .insert(r[1].int(), failed as f64 / total as f64);
            }
        }
        let mut published = Vec::new();
        for ((name, tenant), hours) in &series {
            let metric = if *name == TOKENS.name {
                &TOKENS
            } else {
                &FAILURES
            };
            let Some(value) = hours.get(&hour).copied() else {
                continue;
            };
            // Only the hours the tenant was active: a tenant that works by day is
            // compared with its days, not with its silent nights (which would make every
            // morning an anomaly). Without a day of such hours there is no verdict.
            let baseline: Vec<f64> = hours.range(from..hour).map(|(_, v)| *v).collect();
            let Some(z) = anomaly::is_anomalous(&baseline, value, metric.floor, metric.min_scale)
            else {
                continue;
            };
            let Ok(tenant_id) = TenantId::parse(tenant.clone()) else {
                continue;
            };
            if self.incident_goes_on(tenant, metric.name, hour).await? {
                continue;
            }
            let mut sorted = baseline.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let mut event = Envelope::new(
                "analytics.anomaly",
                "analytics",
                tenant_id.clone(),
                json!({
                    "audience": "tenant_admins",
                    "severity": "warning",
                    "title": format!("Unusual {} in the hour from {}", metric.what, rfc3339_ms(hour)),
                    "body": format!(
                        "The {} was {value:.2} against a usual {median:.2} (robust z-score {z:.1}).",
                        metric.what
                    ),
                    "metric": metric.name,
                    "hour": rfc3339_ms(hour),
                    "value": value,
                    "baseline_median": median,
                    "z": z,
                }),
            );
            // The same hour checked again is the same event.
            event.id = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("anomaly|{tenant}|{}|{hour}", metric.name).as_bytes(),
            );
            // Published before the incident is recorded: a crash in between publishes the
            // same event (the same id) again on the next check, never nothing.
            self.outbox
                .publish(topics::NOTIFICATIONS, tenant, &event)
                .await?;
            self.record_incident(tenant, metric.name, hour).await?;
            tracing::warn!(
                tenant,
                metric = metric.name,
                value,
                z,
                "an anomaly: the tenant's admins are told"
            );
            published.push(event);
        }
        Ok(published)
    }

    /// Whether `hour` continues an incident of the hour before (or was recorded
    /// already); if so it is recorded as its last hour.
    async fn incident_goes_on(
        &self,
        tenant: &str,
        metric: &str,
        hour: i64,
    ) -> Result<bool, DbError> {
        let last: Option<i64> =
            sqlx::query("SELECT last_ms FROM an_incidents WHERE tenant = $1 AND metric = $2")
                .bind(tenant)
                .bind(metric)
                .fetch_optional(self.db.pool())
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        let goes_on = matches!(last, Some(last) if last >= hour - HOUR);
        if goes_on {
            sqlx::query(
                "UPDATE an_incidents SET last_ms = $3 WHERE tenant = $1 AND metric = $2 AND last_ms < $3",
            )
            .bind(tenant)
            .bind(metric)
            .bind(hour)
            .execute(self.db.pool())
            .await?;
        }
        Ok(goes_on)
    }

    /// Records `hour` as the start of an incident.
    async fn record_incident(&self, tenant: &str, metric: &str, hour: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO an_incidents (tenant, metric, started_ms, last_ms) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (tenant, metric) DO UPDATE SET started_ms = excluded.started_ms, last_ms = excluded.last_ms",
        )
        .bind(tenant)
        .bind(metric)
        .bind(hour)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Checks every hour, a few minutes past it (late events have arrived by then).
    pub async fn run(self, stopping: CancellationToken) {
        loop {
            let now = unix_now_ms();
            let next = (now / HOUR + 1) * HOUR + 5 * 60_000;
            let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(60_000));
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.check(unix_now_ms()).await {
                tracing::warn!(error = %e, "the anomaly check failed; the next hour tries again");
            }
        }
    }
}
