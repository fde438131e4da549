//! The browser tool's operations: what each action does to a page (open it, click,
//! fill a form, evaluate a script, take a screenshot, list its links) as steps, and the
//! scripts the steps run in the page, with every value the caller gives JSON-encoded
//! into them (never spliced in as code).

use serde_json::{Map, Value};

use crate::domain::manifest::{Action, HttpBinding, ToolManifest};

/// A page to open and what to do on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub url: String,
    pub steps: Vec<Step>,
    /// The page's text is part of the answer.
    pub with_text: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Fill { selector: String, value: String },
    Click { selector: String },
    Evaluate { expression: String },
    Screenshot { full_page: bool },
    Links,
}

/// The operation an action (`remote`) is for the arguments given.
pub fn operation(remote: &str, arguments: &Map<String, Value>) -> Result<Operation, String> {
    let text = |name: &str| {
        arguments
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let url = text("url").ok_or("url is required")?;
    let parsed = url::Url::parse(&url).map_err(|e| format!("url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url is an http or https URL".into());
    }
    let required = |name: &str| text(name).ok_or_else(|| format!("{name} is required"));
    let (steps, with_text) = match remote {
        "open" => (vec![], true),
        "click" => (
            vec![Step::Click {
                selector: required("selector")?,
            }],
            true,
        ),
        "fill_form" => {
            let fields = arguments
                .get("fields")
                .and_then(Value::as_object)
                .ok_or("fields is required")?;
            let mut steps: Vec<Step> = fields
                .iter()
                .map(|(selector, value)| Step::Fill {
                    selector: selector.clone(),
                    value: value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned),
                })
                .collect();
            if let Some(submit) = text("submit") {
                steps.push(Step::Click { selector: submit });
            }
            (steps, true)
        }
        "evaluate" => (
            vec![Step::Evaluate {
                expression: required("expression")?,
            }],
            false,
        ),
        "screenshot" => (
            vec![Step::Screenshot {
                full_page: arguments
                    .get("full_page")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }],
            false,
        ),
        "links" => (vec![Step::Links], false),
        other => return Err(format!("the browser has no operation `{other}`")),
    };
    Ok(Operation {
        url,
        steps,
        with_text,
    })
}

/// Sets a field's value as a person typing would be seen by the page's scripts.
pub fn fill_script(selector: &str, value: &str) -> String {
    let (selector, value) = (Value::from(selector), Value::from(value));
    format!(
        "(() => {{ const s = {selector}; const el = document.querySelector(s); \
         if (!el) throw new Error('no element matches ' + s); el.focus(); el.value = {value}; \
         el.dispatchEvent(new Event('input', {{bubbles: true}})); \
         el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
    )
}

pub fn click_script(selector: &str) -> String {
    let selector = Value::from(selector);
    format!(
        "(() => {{ const s = {selector}; const el = document.querySelector(s); \
         if (!el) throw new Error('no element matches ' + s); el.scrollIntoView(); el.click(); \
         return true; }})()"
    )
}

/// Where the page is, its title and its visible text.
pub const PAGE_SCRIPT: &str = "({url: location.href, title: document.title, \
    text: document.body ? document.body.innerText : ''})";

/// The page's links (at most 200), as their text and absolute URL.
pub const LINKS_SCRIPT: &str = "Array.from(document.querySelectorAll('a[href]')).slice(0, 200)\
    .map(a => ({text: (a.innerText || '').trim().slice(0, 200), href: a.href}))";

/// The browser tool `id`, each call at most `timeout`, at `price_micros` a call.
pub fn browser_tool(id: &str, timeout: std::time::Duration, price_micros: i64) -> ToolManifest {
    let url = serde_json::json!({"type": "string", "description": "The page's http or https URL."});
    let selector = |what: &str| serde_json::json!({"type": "string", "description": format!("A CSS selector for {what}, e.g. `button[type=submit]`.")});
    let action = |name: &str, description: &str, properties: Value, required: &[&str]| Action {
        name: name.into(),
        description: description.into(),
        parameters: serde_json::json!({
            "type": "object", "properties": properties, "required": required,
            "additionalProperties": false,
        }),
        capability: "tools:invoke".into(),
        rate_limit_per_minute: 30,
        timeout,
        price_micros,
        requires_approval: false,
        http: HttpBinding::default(),
        remote: Some(name.into()),
    };
    ToolManifest {
        id: id.into(),
        name: "Browser".into(),
        description: "Opens web pages in a headless Chromium, as Playwright drives it: reads a page's text, clicks, fills and submits forms, evaluates a script, takes a screenshot, lists links. Each call starts from a fresh browser context.".into(),
        version: "cdp-1.3".into(),
        base_url: "browser:".into(),
        site_required: false,
        auth: crate::domain::manifest::AuthScheme::None,
        headers: Default::default(),
        pagination: None,
        mcp: false,
        sandbox: None,
        browser: true,
        memory: false,
        actions: vec![
            action("open", "Open a page and read its title and visible text.", serde_json::json!({"url": url}), &["url"]),
            action("click", "Open a page, click an element, and read the page it leads to.",
                serde_json::json!({"url": url, "selector": selector("the element to click")}), &["url", "selector"]),
            action("fill_form", "Open a page, fill form fields, optionally click a submit button, and read the page that follows.",
                serde_json::json!({"url": url,
                    "fields": {"type": "object", "description": "Values by the CSS selector of their field, e.g. {\"#email\": \"a@b.c\"}.", "additionalProperties": {"type": "string"}},
                    "submit": selector("the button that submits")}), &["url", "fields"]),
            action("evaluate", "Open a page and evaluate a JavaScript expression in it; returns its value (JSON).",
                serde_json::json!({"url": url, "expression": {"type": "string", "description": "The expression, e.g. `document.querySelectorAll('tr').length`."}}), &["url", "expression"]),
            action("screenshot", "Open a page and take a PNG screenshot (1280×800, or the whole page); returns it base64-encoded.",
                serde_json::json!({"url": url, "full_page": {"type": "boolean", "description": "The whole page rather than the first screen."}}), &["url"]),
            action("links", "Open a page and list its links (text and URL).", serde_json::json!({"url": url}), &["url"]),
        ],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operations_follow_their_actions_and_values_cannot_become_code() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let form = operation(
            "fill_form",
            &args(json!({"url": "https://example.org/login", "fields": {"#user": "ann"}, "submit": "button"})),
        )
        .unwrap();
        assert_eq!(
            form.steps,
            vec![
                Step::Fill {
                    selector: "#user".into(),
                    value: "ann".into()
                },
                Step::Click {
                    selector: "button".into()
                }
            ]
        );
        assert!(operation("open", &args(json!({"url": "file:///etc/passwd"}))).is_err());
        assert!(operation("open", &args(json!({"url": "javascript:alert(1)"}))).is_err());
        assert!(operation("teleport", &args(json!({"url": "https://a.b"}))).is_err());
        let script = fill_script("#q", "'); steal(); ('");
        assert!(
            script.contains(r#"el.value = "'); steal(); ('""#),
            "{script}"
        );
        browser_tool("browser", std::time::Duration::from_secs(45), 0)
            .check()
            .unwrap();
    }
}
