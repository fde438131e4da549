//! `/v1/status`: the services behind the gateway, asked now over the standard gRPC
//! health protocol (each answers `Serving` only while its own readiness holds), with
//! the time each took. Measured on every request, never a constant.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use somagent_common::grpc_channel::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::api::views::ServiceStatus;

/// How long one service may take to answer before it counts as unreachable.
const DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct StatusProbe {
    services: Vec<(&'static str, Channel)>,
}

impl StatusProbe {
    pub fn new(services: Vec<(&'static str, Channel)>) -> Self {
        Self { services }
    }

    /// Every service's state, asked concurrently.
    pub async fn measure(&self) -> BTreeMap<String, ServiceStatus> {
        let asked = self.services.iter().map(|(name, channel)| async move {
            let started = Instant::now();
            let mut client = HealthClient::new(channel.clone());
            let answer = tokio::time::timeout(
                DEADLINE,
                client.check(HealthCheckRequest {
                    service: String::new(),
                }),
            )
            .await;
            let state = match answer {
                Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => "serving",
                Ok(Ok(_)) => "not_serving",
                Ok(Err(e)) => {
                    tracing::warn!(service = name, error = %e, "a service did not answer its health check");
                    "unreachable"
                }
                Err(_) => "unreachable",
            };
            (
                (*name).to_owned(),
                ServiceStatus {
                    state: state.into(),
                    latency_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                },
            )
        });
        futures::future::join_all(asked).await.into_iter().collect()
    }
}
