//! Analytics' gRPC surface: mapping only. Every call verifies the token it carries
//! and reads the caller's tenant alone, in a bounded period.

use std::pin::Pin;

use futures::Stream;
use serde_json::{Map, Value};
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::error::ApiError;
use somagent_common::proto::analytics::v1 as pb;
use somagent_common::proto::analytics::v1::analytics_service_server::AnalyticsService;
use tonic::{Request, Response, Status};

use crate::domain::period::{Period, interval};
use crate::reports;
use crate::warehouse::{Cell, Col, Warehouse, tables};

/// Rows per page of an export, one chunk each.
const EXPORT_PAGE: usize = 5000;

pub struct AnalyticsGrpc {
    pub warehouse: Warehouse,
}

fn reader<T>(request: &Request<T>) -> Result<Principal, Status> {
    let principal = caller(request)?;
    principal.require(Capability::AnalyticsRead)?;
    Ok(principal)
}

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

/// A CSV field: quoted when it holds a separator, a quote or a line break (RFC 4180),
/// and a leading `=`, `+`, `-`, `@`, tab, carriage return or full-width `＝` of text
/// defused so a spreadsheet does not run it.
fn csv_field(cell: &Cell, kind: Col) -> String {
    match (cell, kind) {
        (Cell::Int(n), _) => n.to_string(),
        (Cell::Text(t), _) => {
            let mut t = t.clone();
            if t.starts_with(['=', '+', '-', '@', '\t', '\r', '\u{FF1D}']) {
                t.insert(0, '\'');
            }
            if t.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t
            }
        }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsGrpc {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let principal = reader(&request)?;
        let r = request.into_inner();
        let period = Period::new(r.from_ms, r.to_ms)?;
        let every = interval(&r.interval, &period)?;
        let tenant = principal.tenant.as_str();
        let wh = &self.warehouse;
        let mut markdown = String::new();
        let json = match r.report.as_str() {
            "usage" => reports::usage(wh, tenant, &period, every, &r.group_by).await?,
            "sessions" => reports::sessions(wh, tenant, &period, every).await?,
            "decisions" => reports::decisions(wh, tenant, &period).await?,
            "models" => reports::models(wh, tenant, &period).await?,
            "tools" => reports::tools(wh, tenant, &period).await?,
            "workflows" => reports::workflows(wh, tenant, &period).await?,
            "governance" => {
                principal.require(Capability::TenantAdmin)?;
                let report = reports::governance(wh, tenant, &period).await?;
                markdown = report.to_markdown();
                serde_json::to_value(&report).map_err(ApiError::internal)?
            }
            other => {
                return Err(ApiError::not_found(format!("analytics report `{other}`")).into());
            }
        };
        Ok(Response::new(pb::ReportResponse {
            json: json.to_string(),
            markdown,
        }))
    }

    type ExportStream = Chunks;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let principal = reader(&request)?;
        principal.require(Capability::TenantAdmin)?;
        let r = request.into_inner();
        let table = tables::by_dataset(&r.dataset).ok_or_else(|| {
            ApiError::validation(
                "dataset",
                format!(
                    "is one of {}",
                    tables::TABLES
                        .iter()
                        .map(|t| t.dataset)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let csv = match r.format.as_str() {
            "csv" | "" => true,
            "jsonl" => false,
            _ => return Err(ApiError::validation("format", "is csv or jsonl").into()),
        };
        let period = Period::new(r.from_ms, r.to_ms)?;
        let tenant = principal.tenant.as_str().to_owned();
        let warehouse = self.warehouse.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ExportChunk, Status>>(4);
        tokio::spawn(async move {
            let names: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            if csv {
                let header = format!("{}\n", names.join(","));
                if tx
                    .send(Ok(pb::ExportChunk {
                        data: header.into_bytes(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let mut after: Option<(i64, String)> = None;
            loop {
                let page = match reports::export_page(
                    &warehouse,
                    table,
                    &tenant,
                    &period,
                    after.clone(),
                    EXPORT_PAGE,
                )
                .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let mut data = String::with_capacity(page.len() * 128);
                for row in &page {
                    if csv {
                        let fields: Vec<String> = row
                            .iter()
                            .zip(table.columns)
                            .map(|(cell, (_, kind))| csv_field(cell, *kind))
                            .collect();
                        data.push_str(&fields.join(","));
                    } else {
                        let object: Map<String, Value> = names
                            .iter()
                            .zip(row)
                            .map(|(name, cell)| {
                                let v = match cell {
                                    Cell::Int(n) => Value::from(*n),
                                    Cell::Text(t) => Value::from(t.clone()),
                                };
                                ((*name).to_owned(), v)
                            })
                            .collect();
                        data.push_str(&Value::Object(object).to_string());
                    }
                    data.push('\n');
                }
                if !data.is_empty()
                    && tx
                        .send(Ok(pb::ExportChunk {
                            data: data.into_bytes(),
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                if page.len() < EXPORT_PAGE {
                    return;
                }
                let last = &page[page.len() - 1];
                // Columns 0 and 2 are every table's `event_id` and `time_ms`.
                after = Some((last[2].int(), last[0].text()));
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field(&Cell::Int(-3), Col::Int), "-3");
        assert_eq!(csv_field(&Cell::Text("a,b".into()), Col::Text), "\"a,b\"");
        assert_eq!(
            csv_field(&Cell::Text("say \"hi\"".into()), Col::Text),
            "\"say \"\"hi\"\"\""
        );
        assert_eq!(
            csv_field(&Cell::Text("=SUM(A1)".into()), Col::Text),
            "'=SUM(A1)"
        );
        assert_eq!(csv_field(&Cell::Text("plain".into()), Col::Text), "plain");
        assert_eq!(csv_field(&Cell::Text("\tcmd".into()), Col::Text), "'\tcmd");
    }
}
