//! What a model's answer may not say, taken from a tenant's compiled policy for the
//! model gateway to check answers as they stream. Only the matchers that deny on their
//! own go in: the decision denies when the highest score of what matched reaches the
//! block score, so a text is denied for a term or pattern exactly when one of these
//! matches it.

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputGuard {
    /// (id, lowercase term)
    pub terms: Vec<(String, String)>,
    /// (id, regular expression)
    pub patterns: Vec<(String, String)>,
}

impl OutputGuard {
    /// From the compiled constants (`terms`, `patterns`, `block_score`).
    pub fn from_constants(constants: &Value) -> Self {
        let block = constants["block_score"].as_u64().unwrap_or(0);
        let blocking = |key: &str| -> Vec<(String, String)> {
            constants[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["score"].as_u64().unwrap_or(0) >= block)
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or_default().to_owned(),
                        m["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .filter(|(_, value)| !value.is_empty())
                .collect()
        };
        Self {
            terms: blocking("terms"),
            patterns: blocking("patterns"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matchers_that_block_on_their_own_are_guarded() {
        let constants = serde_json::json!({
            "block_score": 70,
            "terms": [
                { "id": "a", "value": "forbidden-word", "score": 90 },
                { "id": "b", "value": "mild", "score": 20 },
            ],
            "patterns": [{ "id": "pii.ssn", "value": "\\d{3}-\\d{2}-\\d{4}", "score": 70 }],
        });
        let guard = OutputGuard::from_constants(&constants);
        assert_eq!(guard.terms, vec![("a".into(), "forbidden-word".into())]);
        assert_eq!(guard.patterns.len(), 1);
    }
}
