//! Cursor paging over time-ordered ids: a query reads one row more than the page, and
//! that extra row says whether a next page exists.

/// The page size a caller may ask for, at most [`MAX_PAGE`].
pub const MAX_PAGE: i64 = 100;

/// How many rows to read for a page of `requested` (clamped to 1..=MAX_PAGE).
pub fn rows_to_read(requested: u32) -> i64 {
    i64::from(requested).clamp(1, MAX_PAGE) + 1
}

/// Cuts what [`rows_to_read`] read down to the page, with the next page's cursor (the
/// last id on this page) or an empty one on the last page.
pub fn page<T>(mut rows: Vec<T>, requested: u32, id: impl Fn(&T) -> &str) -> (Vec<T>, String) {
    let size = (rows_to_read(requested) - 1) as usize;
    if rows.len() > size {
        rows.truncate(size);
        let next = rows.last().map(|r| id(r).to_owned()).unwrap_or_default();
        (rows, next)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_row_means_a_next_page() {
        let ids = |n: usize| (0..n).map(|i| format!("{i:03}")).collect::<Vec<_>>();
        assert_eq!(rows_to_read(2), 3);
        assert_eq!(rows_to_read(0), 2);
        assert_eq!(rows_to_read(10_000), MAX_PAGE + 1);
        let (rows, next) = page(ids(3), 2, |s| s.as_str());
        assert_eq!((rows.len(), next.as_str()), (2, "001"));
        let (rows, next) = page(ids(2), 2, |s| s.as_str());
        assert_eq!((rows.len(), next.as_str()), (2, ""));
    }
}
