//! Live turn events for whoever is watching in this process (an SSE response, a
//! WebSocket): a broadcast channel per session. The durable record is the workflow's
//! journal and the `conversation.events` topic; this is the low-latency path.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::broadcast;

/// One event of a turn: `delta`, `tool_call`, `policy`, `message`, `done` or `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEvent {
    pub session_id: String,
    pub turn: u32,
    pub kind: &'static str,
    pub data: Value,
}

#[derive(Default)]
pub struct TurnHub {
    sessions: Mutex<HashMap<String, broadcast::Sender<TurnEvent>>>,
}

impl TurnHub {
    pub fn subscribe(&self, session_id: &str) -> broadcast::Receiver<TurnEvent> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    pub fn send(&self, event: TurnEvent) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = sessions.get(&event.session_id)
            && tx.send(event.clone()).is_err()
        {
            // Nobody listens any more.
            sessions.remove(&event.session_id);
        }
    }
}
