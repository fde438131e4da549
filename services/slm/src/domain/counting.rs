//! Token counts for upstreams that do not report usage: the BPE of OpenAI's cl100k
//! vocabulary, the common yardstick for chat models.

use crate::domain::chat::{Completion, Message};

pub struct TokenCounter {
    bpe: tiktoken_rs::CoreBPE,
}

/// Tokens the chat format adds around each message.
const PER_MESSAGE: usize = 4;

impl TokenCounter {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            bpe: tiktoken_rs::cl100k_base()?,
        })
    }

    pub fn count(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }

    pub fn prompt(&self, messages: &[Message]) -> u64 {
        let tokens: usize = messages
            .iter()
            .map(|m| {
                PER_MESSAGE
                    + self.count(&m.content)
                    + m.tool_calls
                        .iter()
                        .map(|c| self.count(&c.name) + self.count(&c.arguments))
                        .sum::<usize>()
            })
            .sum();
        (tokens + 3) as u64
    }

    pub fn completion(&self, done: &Completion) -> u64 {
        let calls: usize = done
            .tool_calls
            .iter()
            .map(|c| self.count(&c.name) + self.count(&c.arguments))
            .sum();
        (self.count(&done.content) + calls) as u64
    }
}
