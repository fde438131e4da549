//! Budgets around every metered call (slm's model calls, the tool service's priced
//! tools): before it, the call's largest cost is held against the tenant's budgets
//! through billing (a call that does not fit is refused with the 402 problem billing
//! gives, naming the budget); after it, the hold is settled at what the call really
//! used, or released when it failed. Billing down refuses the call (fail closed): a
//! budget that cannot be checked is not assumed to have room.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::grpc::with_bearer;
use crate::auth::{Capability, ServiceTokens};
use crate::error::ApiError;
use crate::proto::billing::v1 as pb;
use crate::proto::billing::v1::billing_service_client::BillingServiceClient;
use crate::service::BILLING;
use crate::tenant::TenantId;

/// Whose call it is, and the capabilities of theirs it may be made under (`models:use`
/// for a model call, also `memory:read` for a search's embedding, `tools:invoke` for a
/// tool's): the token billing gets carries those the user holds.
#[derive(Debug, Clone)]
pub struct CallFor<'a> {
    pub tenant: &'a TenantId,
    pub subject: &'a str,
    pub capabilities: &'a [Capability],
}

/// What a call may cost at most.
#[derive(Debug, Clone)]
pub struct MostCost {
    pub call_id: String,
    pub tokens: u64,
    pub micros: i64,
    pub currency: String,
    /// How long the call may take, so a hold whose caller died is given back.
    pub ttl: Duration,
}

#[derive(Clone)]
pub struct BudgetHolds {
    billing: BillingServiceClient<crate::grpc_channel::Channel>,
    tokens: Arc<ServiceTokens>,
}

/// A held reservation, to settle or release once.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// Empty when no budget applies to the call.
    pub id: String,
    token: String,
}

impl Hold {
    /// Whether a budget applies: the call must then stay within what was held.
    pub fn bounded(&self) -> bool {
        !self.id.is_empty()
    }
}

impl BudgetHolds {
    pub fn new(
        billing: BillingServiceClient<crate::grpc_channel::Channel>,
        tokens: Arc<ServiceTokens>,
    ) -> Self {
        Self { billing, tokens }
    }

    /// Billing at its configured address, for the service `caller`.
    pub fn connect(
        config: &crate::config::CommonConfig,
        caller: &crate::service::ServiceSpec,
    ) -> anyhow::Result<Self> {
        let billing = BillingServiceClient::new(
            config.channel(&BILLING, Some(std::time::Duration::from_secs(5)))?,
        );
        Ok(Self::new(
            billing,
            Arc::new(ServiceTokens::connect(config, caller)?),
        ))
    }

    pub async fn reserve(&self, call: &CallFor<'_>, most: &MostCost) -> Result<Hold, ApiError> {
        let token = self
            .tokens
            .for_user(
                &BILLING,
                call.tenant,
                call.subject,
                &call
                    .capabilities
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(ApiError::from)?;
        let request = pb::ReserveRequest {
            call_id: most.call_id.clone(),
            // Calls carry no project yet (projects run as sessions until KAMACHIQ
            // names theirs): tenant and user budgets apply.
            project_id: String::new(),
            tokens: i64::try_from(most.tokens).unwrap_or(i64::MAX),
            cost_micros: most.micros,
            currency: most.currency.clone(),
            ttl_ms: u32::try_from(most.ttl.as_millis()).unwrap_or(u32::MAX),
        };
        let held = self
            .billing
            .clone()
            .reserve(with_bearer(&token, tonic::Request::new(request)))
            .await
            .map_err(ApiError::from)?
            .into_inner();
        Ok(Hold {
            id: held.reservation_id,
            token,
        })
    }

    /// Counts what the call used. Failure is logged: the hold then expires and the
    /// ledger still has the call.
    pub async fn settle(&self, hold: Hold, tokens: u64, micros: i64) {
        if !hold.bounded() {
            return;
        }
        let request = pb::SettleRequest {
            reservation_id: hold.id.clone(),
            tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
            cost_micros: micros,
        };
        if let Err(e) = self
            .billing
            .clone()
            .settle(with_bearer(&hold.token, tonic::Request::new(request)))
            .await
        {
            tracing::warn!(reservation = %hold.id, error = %e, "a budget reservation could not be settled; it expires on its own");
        }
    }

    pub async fn release(&self, hold: Hold) {
        if !hold.bounded() {
            return;
        }
        let request = pb::ReleaseRequest {
            reservation_id: hold.id.clone(),
        };
        if let Err(e) = self
            .billing
            .clone()
            .release(with_bearer(&hold.token, tonic::Request::new(request)))
            .await
        {
            tracing::warn!(reservation = %hold.id, error = %e, "a budget reservation could not be released; it expires on its own");
        }
    }
}
