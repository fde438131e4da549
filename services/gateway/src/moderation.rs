//! Moderation of what users send to models through the gateway: the platform's one
//! prompt moderation (`somagent_common::moderation`), asked with the caller's token.

use somagent_common::error::ApiError;
use somagent_common::infra::cache::Cache;
use somagent_common::moderation::PromptModeration;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;

use crate::api::Authenticated;

#[derive(Clone)]
pub struct Moderation(PromptModeration);

impl Moderation {
    pub fn new(
        policy: PolicyServiceClient<somagent_common::grpc_channel::Channel>,
        cache: Cache,
    ) -> Self {
        Self(PromptModeration::new(policy, cache))
    }

    /// Ok if `text` may go to a model on behalf of `auth`.
    pub async fn check_prompt(
        &self,
        auth: &Authenticated,
        text: &str,
        session_id: &str,
    ) -> Result<(), ApiError> {
        self.0
            .check(&auth.principal, &auth.token, text, session_id)
            .await
    }
}
