//! Slack messages through the tenant's Slack tool (`post_message`): the tool service
//! calls Slack with the tenant's credential, under its policy, limits and metering,
//! acting for the person the message tells (so they must be allowed to use tools).
//! The queue id is the call's idempotency key: a retry after a lost answer posts once.

use std::sync::Arc;

use serde_json::json;
use somagent_common::auth::grpc::with_bearer;
use somagent_common::auth::{Capability, ServiceTokens};
use somagent_common::proto::tool::v1 as pb;
use somagent_common::proto::tool::v1::tool_service_client::ToolServiceClient;
use somagent_common::service::TOOL;

use crate::courier::Carrier;
use crate::emails::DueEmail;

pub struct Slack {
    pub tool: ToolServiceClient<somagent_common::grpc_channel::Channel>,
    pub tokens: Arc<ServiceTokens>,
}

impl Carrier for Slack {
    const CHANNEL: &'static str = "slack";

    async fn send(&self, message: &DueEmail) -> Result<(), String> {
        let token = self
            .tokens
            .for_user(
                &TOOL,
                &message.tenant,
                &message.user_id,
                &[Capability::ToolsInvoke.as_str().to_owned()],
            )
            .await
            .map_err(|s| format!("no token to post for the user: {}", s.message()))?;
        // Slack's mrkdwn: the title bold, then the text; `&`, `<` and `>` escaped as
        // Slack asks, so no text can mention `<!channel>` or hide a link.
        let text = format!(
            "*{}*\n{}",
            escape(message.subject.trim_start_matches("[SomaAgent] ")),
            escape(&message.body)
        );
        let request = pb::InvokeRequest {
            tool_id: "slack".into(),
            action: "post_message".into(),
            arguments_json: json!({ "channel": message.address, "text": text }).to_string(),
            idempotency_key: message.id.clone(),
            ..Default::default()
        };
        let answer = self
            .tool
            .clone()
            .invoke(with_bearer(&token, tonic::Request::new(request)))
            .await
            .map_err(|s| format!("the Slack tool refused: {}", s.message()))?
            .into_inner();
        // Slack answers 200 with `{"ok": false, "error": …}` when it refuses.
        let result: serde_json::Value =
            serde_json::from_str(&answer.result_json).unwrap_or_default();
        if result["ok"] == false {
            return Err(format!(
                "Slack refused: {}",
                result["error"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(())
    }
}

/// Text as Slack's `mrkdwn` takes it literally.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn mentions_and_links_are_text() {
        assert_eq!(
            super::escape("<!channel> see <https://x|here> & more"),
            "&lt;!channel&gt; see &lt;https://x|here&gt; &amp; more"
        );
    }
}
