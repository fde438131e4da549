//! Cursor paging, the one way every list pages: a query reads one row more than the
//! page, and that extra row says whether a next page exists; the next page's cursor
//! names the last row of this one. Cursors are opaque to clients: [`Cursor`] packs the
//! fields a list orders by into one base64url token and takes back only what it made.

use data_encoding::BASE64URL_NOPAD;

/// The size of one page of a list: what the caller asked for, within 1..=`max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    /// `requested` clamped to 1..=`max` (0, "unset" on the wire, is one row; callers
    /// that want a default put it in before).
    pub fn clamped(requested: u32, max: u32) -> Self {
        Self(requested.clamp(1, max.max(1)))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// How many rows the query reads: one more than the page.
    pub fn rows_to_read(self) -> i64 {
        i64::from(self.0) + 1
    }

    /// Cuts what [`PageSize::rows_to_read`] read down to the page, with the next
    /// page's cursor (made by `cursor` from the page's last row), or an empty one on
    /// the last page.
    pub fn cut<T>(self, mut rows: Vec<T>, cursor: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let size = self.0 as usize;
        if rows.len() > size {
            rows.truncate(size);
            let next = rows.last().map(cursor).unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

/// An opaque cursor: the fields a list orders by, as one unpadded base64url token.
pub struct Cursor;

impl Cursor {
    /// The token for `fields` (none of which may hold a newline).
    pub fn encode(fields: &[&str]) -> String {
        BASE64URL_NOPAD.encode(fields.join("\n").as_bytes())
    }

    /// The `n` fields of a token [`Cursor::encode`] made; `None` for anything else
    /// (another spelling of the same bytes included, so a cursor has one form).
    pub fn decode(token: &str, n: usize) -> Option<Vec<String>> {
        let bytes = BASE64URL_NOPAD.decode(token.as_bytes()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let fields: Vec<String> = text.split('\n').map(str::to_owned).collect();
        (fields.len() == n).then_some(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_row_means_a_next_page() {
        let ids = |n: usize| (0..n).map(|i| format!("{i:03}")).collect::<Vec<_>>();
        let two = PageSize::clamped(2, 100);
        assert_eq!(two.rows_to_read(), 3);
        assert_eq!(PageSize::clamped(0, 100).rows_to_read(), 2);
        assert_eq!(PageSize::clamped(10_000, 100).get(), 100);
        let (rows, next) = two.cut(ids(3), |s| s.clone());
        assert_eq!((rows.len(), next.as_str()), (2, "001"));
        let (rows, next) = two.cut(ids(2), |s| s.clone());
        assert_eq!((rows.len(), next.as_str()), (2, ""));
    }

    #[test]
    fn a_cursor_gives_back_its_fields_and_nothing_else() {
        let token = Cursor::encode(&["1700000000000", "run-1"]);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(
            Cursor::decode(&token, 2),
            Some(vec!["1700000000000".to_owned(), "run-1".to_owned()])
        );
        assert_eq!(Cursor::decode(&token, 3), None);
        assert_eq!(Cursor::decode("not a cursor!", 2), None);
        assert_eq!(Cursor::decode(&format!("{token}="), 2), None);
    }
}
