//! Checking a call's arguments against its action's JSON-Schema before anything runs;
//! a refusal names the argument at fault the way a client wrote it (`labels[1]`).

use serde_json::Value;

/// An action's argument schema, compiled once.
pub struct ArgumentSchema {
    validator: jsonschema::Validator,
}

/// Arguments that do not fit the schema: the first argument at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentError {
    /// `owner`, `labels[1]`, `body.title`; `arguments` when the whole is wrong.
    pub field: String,
    pub message: String,
}

impl ArgumentSchema {
    /// Compiles a schema; one that is not valid JSON-Schema is refused with why.
    /// Remote `$ref`s are never fetched (the validator is built without resolvers).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Self { validator })
            .map_err(|e| format!("is not a valid JSON-Schema: {e}"))
    }

    pub fn check(&self, arguments: &Value) -> Result<(), ArgumentError> {
        let Some(error) = self.validator.iter_errors(arguments).next() else {
            return Ok(());
        };
        let pointer = error.instance_path().to_string();
        Err(ArgumentError {
            field: field_of(&pointer),
            message: error.to_string(),
        })
    }
}

/// `/labels/1` → `labels[1]`, `/body/title` → `body.title`, `` → `arguments`.
fn field_of(pointer: &str) -> String {
    let mut field = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            field.push_str(&format!("[{part}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&part);
        }
    }
    if field.is_empty() {
        "arguments".into()
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> ArgumentSchema {
        ArgumentSchema::compile(&json!({
            "type": "object",
            "required": ["owner", "title"],
            "additionalProperties": false,
            "properties": {
                "owner": {"type": "string", "minLength": 1},
                "title": {"type": "string", "maxLength": 10},
                "labels": {"type": "array", "items": {"type": "string"}},
                "body": {"type": "object", "properties": {"draft": {"type": "boolean"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn good_arguments_pass_and_bad_ones_name_their_field() {
        let s = schema();
        assert!(s.check(&json!({"owner": "acme", "title": "Bug"})).is_ok());
        for (arguments, field) in [
            (
                json!({"owner": "acme", "title": "far too long a title"}),
                "title",
            ),
            (
                json!({"owner": "acme", "title": "t", "labels": ["a", 2]}),
                "labels[1]",
            ),
            (
                json!({"owner": "acme", "title": "t", "body": {"draft": "yes"}}),
                "body.draft",
            ),
            (json!({"title": "t"}), "arguments"),
            (json!({"owner": "a", "title": "t", "extra": 1}), "arguments"),
            (json!("not an object"), "arguments"),
        ] {
            let refused = s.check(&arguments).unwrap_err();
            assert_eq!(refused.field, field, "{arguments}: {}", refused.message);
            assert!(!refused.message.is_empty());
        }
    }

    #[test]
    fn a_schema_that_is_not_json_schema_is_refused() {
        assert!(ArgumentSchema::compile(&json!({"type": "no such type"})).is_err());
        assert!(ArgumentSchema::compile(&json!({"type": "object", "minProperties": -1})).is_err());
    }
}
