//! How list routes page: `?limit=&cursor=` in, `next_cursor` out (absent on the last
//! page), the same on every route that lists.

use serde::Deserialize;
use somagent_common::proto::common::v1::{PageInfo, PageRequest};
use utoipa::IntoParams;

/// `?limit=&cursor=` of a list route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many (1..=200, default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

impl From<Page> for PageRequest {
    fn from(page: Page) -> Self {
        PageRequest {
            limit: page.limit.unwrap_or(50),
            cursor: page.cursor.unwrap_or_default(),
        }
    }
}

/// The cursor of the next page, if there is one.
pub fn next_cursor(page: Option<PageInfo>) -> Option<String> {
    page.map(|p| p.next_cursor).filter(|c| !c.is_empty())
}
