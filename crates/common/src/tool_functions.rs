//! How a tool's action is named and described where a model (OpenAI function calling)
//! or an MCP client calls it: `<tool>__<action>`. Tool ids hold no `_`, so the first
//! `__` splits a name back.

/// OpenAI's bound on a function's name.
pub const MAX_NAME: usize = 64;

/// The name for `action` of `tool`; `None` if it would not fit OpenAI's
/// `[A-Za-z0-9_-]{1,64}` (tool ids and action names are within that alphabet).
pub fn function_name(tool: &str, action: &str) -> Option<String> {
    let name = format!("{tool}__{action}");
    (name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(name)
}

/// `github__list_issues` → (`github`, `list_issues`).
pub fn split_function_name(name: &str) -> Option<(&str, &str)> {
    name.split_once("__")
        .filter(|(tool, action)| !tool.is_empty() && !action.is_empty())
}

/// What a caller reads of an action: the tool's name, then the action's description.
pub fn describe(tool_name: &str, action_description: &str) -> String {
    if action_description.is_empty() {
        tool_name.to_owned()
    } else {
        format!("{tool_name}: {action_description}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_and_split_back() {
        assert_eq!(
            function_name("github", "list_issues").as_deref(),
            Some("github__list_issues")
        );
        assert_eq!(function_name("crm", &"x".repeat(70)), None);
        assert_eq!(
            split_function_name("github__list_issues"),
            Some(("github", "list_issues"))
        );
        assert_eq!(split_function_name("crm__a__b"), Some(("crm", "a__b")));
        assert_eq!(split_function_name("github"), None);
        assert_eq!(split_function_name("__x"), None);
        assert_eq!(describe("Acme CRM", "Does it"), "Acme CRM: Does it");
        assert_eq!(describe("Acme CRM", ""), "Acme CRM");
    }
}
