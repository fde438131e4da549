//! What a webhook endpoint may be: an `http(s)` URL of a public host (the platform must
//! not be made to call its own services or a cloud's metadata endpoint), and the
//! notification kinds it receives.

use somagent_common::egress;

/// Longest URL kept.
const MAX_URL: usize = 2048;
/// Most event types one endpoint names.
const MAX_TYPES: usize = 64;

/// `url` if an endpoint may have it; why not otherwise. `allow_private` is the
/// operator's choice (`notification.allow_private_networks`), for tests and private
/// installations.
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    if url.len() > MAX_URL {
        return Err(format!("is at most {MAX_URL} characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("is an http or https URL".into());
    }
    if parsed.host().is_none() {
        return Err("names a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("carries no credentials (the signature proves who sends)".into());
    }
    if !allow_private {
        egress::check_literal(&parsed)?;
    }
    Ok(parsed)
}

/// Event types as an endpoint keeps them: each a kind (`turn.completed`) or a family
/// (`billing.*`), or `*` alone for every kind; duplicates removed.
pub fn check_types(types: &[String]) -> Result<Vec<String>, String> {
    if types.len() > MAX_TYPES {
        return Err(format!("names at most {MAX_TYPES} types"));
    }
    let mut kept: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim();
        let family = t.strip_suffix(".*").unwrap_or(t);
        let valid = t == "*"
            || (!family.is_empty()
                && family.len() <= 100
                && family
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !family.starts_with('.')
                && !family.ends_with('.'));
        if !valid {
            return Err(format!(
                "`{t}` is not an event type such as `turn.completed` or `billing.*`"
            ));
        }
        if !kept.iter().any(|k| k == t) {
            kept.push(t.to_owned());
        }
    }
    if kept.iter().any(|k| k == "*") {
        kept.clear();
    }
    Ok(kept)
}

/// True if an endpoint with `types` receives notifications of `kind`.
pub fn receives(types: &[String], kind: &str) -> bool {
    types.is_empty()
        || types.iter().any(|t| match t.strip_suffix(".*") {
            Some(family) => kind
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('.')),
            None => t == kind,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_public_http_urls() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        for refused in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "http://127.0.0.1:10002/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/",
            "not a url",
        ] {
            assert!(check_url(refused, false).is_err(), "{refused}");
        }
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000)), false).is_err());
    }

    #[test]
    fn types_name_kinds_and_families() {
        let types = check_types(&[
            "billing.*".into(),
            "turn.completed".into(),
            "turn.completed".into(),
        ])
        .unwrap();
        assert_eq!(types, ["billing.*", "turn.completed"]);
        assert!(receives(&types, "billing.budget_threshold"));
        assert!(receives(&types, "turn.completed"));
        assert!(!receives(&types, "turn.failed"));
        assert!(!receives(&types, "billingx.y"));
        assert!(!receives(&types, "billing"));
        assert!(receives(&[], "anything.at_all"));
        assert_eq!(
            check_types(&["*".into(), "x".into()]).unwrap(),
            Vec::<String>::new()
        );
        assert!(check_types(&["bad type".into()]).is_err());
        assert!(check_types(&[".*".into()]).is_err());
    }
}
