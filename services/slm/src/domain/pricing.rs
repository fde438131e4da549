//! What a call costs: tokens times the profile's price per 1,000, in millionths of the
//! currency, rounded up so the platform never undercharges by rounding.

use super::chat::TokenUsage;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub prompt_micros_per_1k: i64,
    pub completion_micros_per_1k: i64,
}

impl Price {
    pub fn cost_micros(&self, usage: TokenUsage) -> i64 {
        let part = |tokens: u64, per_1k: i64| -> i64 {
            let total = i128::from(tokens) * i128::from(per_1k.max(0));
            ((total + 999) / 1000).min(i128::from(i64::MAX)) as i64
        };
        part(usage.prompt, self.prompt_micros_per_1k)
            .saturating_add(part(usage.completion, self.completion_micros_per_1k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_per_part() {
        let price = Price {
            prompt_micros_per_1k: 500,
            completion_micros_per_1k: 1500,
        };
        let usage = TokenUsage {
            prompt: 1000,
            completion: 1,
        };
        assert_eq!(price.cost_micros(usage), 500 + 2);
        assert_eq!(Price::default().cost_micros(usage), 0);
    }
}
