//! A usage event as a ledger entry. The event is the truth: the entry keeps its tokens,
//! the unit prices it was charged at and its cost, in integer micro-units; nothing is
//! recomputed later at other prices.

use serde_json::Value;
use somagent_common::infra::events::Envelope;
use somagent_common::tenant::TenantId;

/// What was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A chat completion.
    Model,
    Embedding,
    Tool,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Embedding => "embedding",
            Self::Tool => "tool",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Model, Self::Embedding, Self::Tool]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// One metered call, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// The usage event's id: an event is entered once, however often it comes.
    pub event_id: String,
    pub tenant: TenantId,
    pub kind: EntryKind,
    pub call_id: String,
    pub user: String,
    pub session_id: String,
    pub project_id: String,
    /// The model profile or the tool called.
    pub item: String,
    /// The upstream model, or the tool's action.
    pub detail: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Micro-units per 1,000 tokens for models; per call for tools (in the prompt
    /// price).
    pub prompt_price_micros: i64,
    pub completion_price_micros: i64,
    pub cost_micros: i64,
    pub currency: String,
    /// When the call was made (the event's time), Unix milliseconds.
    pub event_time_ms: i64,
}

/// The currency of prices that name none (tools' prices are in the platform's).
pub const PLATFORM_CURRENCY: &str = "USD";

impl LedgerEntry {
    /// The entry `event` makes, or why it makes none (a malformed event is never
    /// guessed at: it goes to the dead-letter topic).
    pub fn from_event(event: &Envelope) -> Result<Self, String> {
        let data = &event.data;
        let text = |field: &str| -> String {
            data.get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let count = |field: &str| -> Result<u64, String> {
            match data.get(field) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| format!("`{field}` is not a whole number of 0 or more")),
            }
        };
        let micros = |field: &str| -> Result<i64, String> {
            match data.get(field) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v
                    .as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("`{field}` is not a whole number of 0 or more")),
            }
        };
        let call_id = text("call_id");
        if call_id.is_empty() {
            return Err("the usage event names no `call_id`".into());
        }
        let (kind, item, detail, prompt_price, completion_price) = match event.kind.as_str() {
            "slm.usage" => {
                let kind = match data.get("kind").and_then(Value::as_str) {
                    Some("model") => EntryKind::Model,
                    Some("embedding") => EntryKind::Embedding,
                    // Events from before the kind was carried: embeddings' calls are
                    // named so.
                    None if call_id.starts_with("embd-") => EntryKind::Embedding,
                    None => EntryKind::Model,
                    Some(other) => return Err(format!("unknown model usage kind `{other}`")),
                };
                (
                    kind,
                    text("profile"),
                    text("model"),
                    micros("prompt_price_micros_per_1k")?,
                    micros("completion_price_micros_per_1k")?,
                )
            }
            "tool.usage" => (
                EntryKind::Tool,
                text("tool"),
                text("action"),
                micros("price_micros")?,
                0,
            ),
            other => return Err(format!("`{other}` is not a usage event")),
        };
        let currency = match text("currency") {
            c if c.is_empty() && kind == EntryKind::Tool => PLATFORM_CURRENCY.to_owned(),
            c if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) => c,
            c => return Err(format!("`{c}` is not an ISO 4217 currency code")),
        };
        let user = match text("user") {
            u if u.is_empty() => event.subject.clone().unwrap_or_default(),
            u => u,
        };
        Ok(Self {
            event_id: event.id.to_string(),
            tenant: event.tenant.clone(),
            kind,
            call_id,
            user,
            session_id: text("session_id"),
            project_id: text("project_id"),
            item,
            detail,
            prompt_tokens: count("prompt_tokens")?,
            completion_tokens: count("completion_tokens")?,
            prompt_price_micros: prompt_price,
            completion_price_micros: completion_price,
            cost_micros: micros("cost_micros")?,
            currency,
            event_time_ms: (event.time.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: Value) -> Envelope {
        Envelope::new(kind, "test", TenantId::parse("acme").unwrap(), data)
    }

    #[test]
    fn a_model_call_keeps_its_tokens_prices_and_cost() {
        let e = event(
            "slm.usage",
            json!({"kind": "model", "call_id": "chatcmpl-1", "user": "u1", "session_id": "s1",
                   "profile": "default", "model": "gpt-x", "prompt_tokens": 1200,
                   "completion_tokens": 30, "prompt_price_micros_per_1k": 150,
                   "completion_price_micros_per_1k": 600, "cost_micros": 198, "currency": "EUR"}),
        );
        let entry = LedgerEntry::from_event(&e).unwrap();
        assert_eq!(entry.kind, EntryKind::Model);
        assert_eq!((entry.prompt_tokens, entry.completion_tokens), (1200, 30));
        assert_eq!(
            (entry.prompt_price_micros, entry.completion_price_micros),
            (150, 600)
        );
        assert_eq!((entry.cost_micros, entry.currency.as_str()), (198, "EUR"));
        assert_eq!(
            (entry.item.as_str(), entry.detail.as_str()),
            ("default", "gpt-x")
        );
        assert_eq!(entry.event_id, e.id.to_string());
    }

    #[test]
    fn a_tool_call_is_priced_per_call_in_the_platform_currency() {
        let e = event(
            "tool.usage",
            json!({"call_id": "inv-1", "user": "u1", "tool": "github", "action": "get_issue",
                   "price_micros": 2000, "cost_micros": 2000}),
        );
        let entry = LedgerEntry::from_event(&e).unwrap();
        assert_eq!(entry.kind, EntryKind::Tool);
        assert_eq!((entry.cost_micros, entry.currency.as_str()), (2000, "USD"));
        assert_eq!(entry.detail, "get_issue");
    }

    #[test]
    fn a_malformed_event_makes_no_entry() {
        for (kind, data) in [
            (
                "slm.usage",
                json!({"user": "u1", "cost_micros": 1, "currency": "USD"}),
            ),
            (
                "slm.usage",
                json!({"call_id": "c", "cost_micros": -5, "currency": "USD"}),
            ),
            (
                "slm.usage",
                json!({"call_id": "c", "cost_micros": 1.5, "currency": "USD"}),
            ),
            (
                "slm.usage",
                json!({"call_id": "c", "cost_micros": 1, "currency": "dollars"}),
            ),
            (
                "slm.usage",
                json!({"call_id": "c", "prompt_tokens": -1, "currency": "USD"}),
            ),
            ("agent.audit", json!({"call_id": "c", "currency": "USD"})),
        ] {
            assert!(
                LedgerEntry::from_event(&event(kind, data.clone())).is_err(),
                "{data}"
            );
        }
    }
}
