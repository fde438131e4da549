//! Lists over pages and APIs that ask callers to wait: the next page's request from an
//! answer (RFC 8288 `Link: <…>; rel="next"`, or a cursor in the answer), pages joined
//! into one answer, and how long an API says to wait (`Retry-After` in seconds or as an
//! HTTP date is not needed by these APIs; seconds, or GitHub's `x-ratelimit-reset`).

use std::time::Duration;

use serde_json::Value;

use crate::domain::manifest::Pagination;
use crate::domain::request::PreparedRequest;

/// One answer of an API.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub status: u16,
    pub body: Value,
    /// The `Link` header.
    pub link: Option<String>,
    /// How long the API says to wait before asking again.
    pub retry_after: Option<Duration>,
}

/// The URL an RFC 8288 `Link` header gives for `rel="next"`, resolved against the URL
/// it answered (Confluence gives a path).
pub fn next_link(link: &str, answered: &url::Url) -> Option<url::Url> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| {
                k.trim() == "rel" && v.trim().trim_matches('"').split(' ').any(|r| r == "next")
            })
            .then(|| answered.join(target).ok())
            .flatten()
    })
}

/// The request for the page after `page`, answered to `request`; `None` on the last.
pub fn next_request(
    request: &PreparedRequest,
    page: &Page,
    pagination: &Pagination,
) -> Option<PreparedRequest> {
    let mut next = request.clone();
    match pagination {
        Pagination::LinkHeader => {
            next.url = next_link(page.link.as_deref()?, &request.url)?;
        }
        Pagination::NextUrl { next: at, .. } => {
            let link = page.body.pointer(at)?.as_str().filter(|l| !l.is_empty())?;
            next.url = request.url.join(link).ok()?;
        }
        Pagination::Cursor {
            next: at, param, ..
        } => {
            let cursor = page.body.pointer(at)?.as_str().filter(|c| !c.is_empty())?;
            if request.method == "GET" {
                let kept: Vec<(String, String)> = request
                    .url
                    .query_pairs()
                    .filter(|(k, _)| k != param)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                next.url
                    .query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair(param, cursor);
            } else {
                let mut body = request
                    .body
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                body.as_object_mut()?
                    .insert(param.clone(), Value::String(cursor.to_owned()));
                next.body = Some(body);
            }
        }
    }
    Some(next)
}

/// Adds a page's items to the answer so far: arrays joined (a `Link` list's pages are
/// arrays; a cursor list's items are at its `items` pointer); what says where the list
/// goes on is the last page's.
pub fn join(joined: &mut Page, page: Page, pagination: &Pagination) {
    match pagination {
        Pagination::LinkHeader => {
            if let (Value::Array(items), Value::Array(more)) = (&mut joined.body, page.body) {
                items.extend(more);
            }
        }
        Pagination::Cursor { next, items, .. } | Pagination::NextUrl { next, items } => {
            let more = match page.body.pointer(items) {
                Some(Value::Array(more)) => more.clone(),
                _ => Vec::new(),
            };
            if let Some(Value::Array(list)) = joined.body.pointer_mut(items) {
                list.extend(more);
            }
            let cursor = page.body.pointer(next).cloned().unwrap_or(Value::Null);
            if let Some(slot) = joined.body.pointer_mut(next) {
                *slot = cursor;
            }
        }
    }
    joined.link = page.link;
}

/// How long an API says to wait: `Retry-After` seconds, else GitHub's reset time
/// (unix seconds) from `now`.
pub fn retry_after(retry_after: Option<&str>, reset: Option<&str>, now: i64) -> Option<Duration> {
    if let Some(seconds) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    let reset = reset?.trim().parse::<i64>().ok()?;
    Some(Duration::from_secs(u64::try_from(reset - now).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn get(url: &str) -> PreparedRequest {
        PreparedRequest {
            method: "GET".into(),
            url: url::Url::parse(url).unwrap(),
            headers: vec![("authorization".into(), "Bearer t".into())],
            body: None,
            raw_body: false,
            content_type: None,
        }
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let link = r#"<https://api.github.com/repos/a/b/issues?page=1>; rel="prev", <https://api.github.com/repos/a/b/issues?page=3>; rel="next", <https://api.github.com/repos/a/b/issues?page=9>; rel="last""#;
        let at = url::Url::parse("https://api.github.com/repos/a/b/issues").unwrap();
        assert_eq!(
            next_link(link, &at).unwrap().as_str(),
            "https://api.github.com/repos/a/b/issues?page=3"
        );
        assert_eq!(next_link(r#"<https://x/1>; rel="last""#, &at), None);
        assert_eq!(next_link("garbage", &at), None);
        let wiki = url::Url::parse("https://acme.atlassian.net/wiki/api/v2/spaces").unwrap();
        assert_eq!(
            next_link(r#"</wiki/api/v2/spaces?cursor=abc>; rel="next""#, &wiki)
                .unwrap()
                .as_str(),
            "https://acme.atlassian.net/wiki/api/v2/spaces?cursor=abc"
        );
    }

    #[test]
    fn link_pages_are_joined() {
        let pagination = Pagination::LinkHeader;
        let request = get("https://api.github.com/repos/a/b/issues");
        let mut first = Page {
            status: 200,
            body: json!([1, 2]),
            link: Some(r#"<https://api.github.com/repos/a/b/issues?page=2>; rel="next""#.into()),
            retry_after: None,
        };
        let next = next_request(&request, &first, &pagination).unwrap();
        assert_eq!(
            next.url.as_str(),
            "https://api.github.com/repos/a/b/issues?page=2"
        );
        assert_eq!(next.headers, request.headers);
        let second = Page {
            status: 200,
            body: json!([3]),
            link: None,
            retry_after: None,
        };
        join(&mut first, second, &pagination);
        assert_eq!(first.body, json!([1, 2, 3]));
        assert!(next_request(&request, &first, &pagination).is_none());
    }

    #[test]
    fn cursors_go_back_in_the_query_or_the_body() {
        let pagination = Pagination::Cursor {
            next: "/response_metadata/next_cursor".into(),
            param: "cursor".into(),
            items: "/channels".into(),
        };
        let request = get("https://slack.com/api/conversations.list?limit=2&cursor=old");
        let mut first = Page {
            status: 200,
            body: json!({"channels": [{"id": "C1"}], "response_metadata": {"next_cursor": "dXNlcjpV"}}),
            link: None,
            retry_after: None,
        };
        let next = next_request(&request, &first, &pagination).unwrap();
        assert_eq!(
            next.url.as_str(),
            "https://slack.com/api/conversations.list?limit=2&cursor=dXNlcjpV"
        );
        let last = Page {
            status: 200,
            body: json!({"channels": [{"id": "C2"}], "response_metadata": {"next_cursor": ""}}),
            link: None,
            retry_after: None,
        };
        join(&mut first, last, &pagination);
        assert_eq!(first.body["channels"], json!([{"id": "C1"}, {"id": "C2"}]));
        assert!(next_request(&request, &first, &pagination).is_none());

        let notion = Pagination::Cursor {
            next: "/next_cursor".into(),
            param: "start_cursor".into(),
            items: "/results".into(),
        };
        let post = PreparedRequest {
            method: "POST".into(),
            body: Some(json!({"query": "roadmap"})),
            ..get("https://api.notion.com/v1/search")
        };
        let page = Page {
            status: 200,
            body: json!({"results": [], "next_cursor": "c2", "has_more": true}),
            link: None,
            retry_after: None,
        };
        let next = next_request(&post, &page, &notion).unwrap();
        assert_eq!(
            next.body,
            Some(json!({"query": "roadmap", "start_cursor": "c2"}))
        );
    }

    #[test]
    fn waits_are_read_from_either_header() {
        assert_eq!(
            retry_after(Some("3"), None, 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(None, Some("1060"), 1000),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(None, Some("900"), 1000), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("soon"), None, 0), None);
    }
}
