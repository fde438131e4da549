//! A document's text, by its content type, in the Markdown-like form the chunker cuts
//! by structure: HTML headings become `#` headings and its blocks paragraphs; a PDF's
//! text comes out page by page (`pdf-extract`), its paragraphs as the PDF lays them.

/// The content types a document may have.
pub const CONTENT_TYPES: [&str; 4] = [
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
];

/// The content type as given (parameters such as `; charset=utf-8` dropped), if it is
/// one a document may have; a file name's extension answers when the type is generic.
pub fn content_type(given: &str, name: &str) -> Option<&'static str> {
    let bare = given
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if let Some(known) = CONTENT_TYPES.iter().find(|t| **t == bare) {
        return Some(known);
    }
    if !(bare.is_empty() || bare == "application/octet-stream") {
        return None;
    }
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match extension.as_str() {
        "txt" | "text" => Some("text/plain"),
        "md" | "markdown" => Some("text/markdown"),
        "html" | "htm" => Some("text/html"),
        "pdf" => Some("application/pdf"),
        _ => None,
    }
}

/// The text of `content`; the error says why there is none.
pub fn text_of(content_type: &str, content: &[u8]) -> Result<String, String> {
    let text = match content_type {
        "text/plain" | "text/markdown" => utf8(content)?.to_owned(),
        "text/html" => html_to_text(utf8(content)?),
        "application/pdf" => pdf_text(content)?,
        other => return Err(format!("`{other}` is not a document type")),
    };
    if text.trim().is_empty() {
        return Err("the document has no text".into());
    }
    Ok(text)
}

fn utf8(content: &[u8]) -> Result<&str, String> {
    let content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    std::str::from_utf8(content)
        .map_err(|e| format!("the text is not UTF-8 (at byte {})", e.valid_up_to()))
}

fn pdf_text(content: &[u8]) -> Result<String, String> {
    // The parser is a large body of code reading untrusted bytes: a panic in it is a
    // document that cannot be read, not a failed service.
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(content));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("the PDF cannot be read: {e}")),
        Err(_) => Err("the PDF cannot be read".into()),
    }
}

/// Elements whose content is not text a reader sees.
const HIDDEN: [&str; 6] = ["script", "style", "head", "noscript", "template", "svg"];
/// Elements that end a paragraph.
const BLOCKS: [&str; 19] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "ul",
    "ol",
    "table",
    "tr",
    "pre",
    "blockquote",
    "form",
    "figure",
    "hr",
    "dl",
];

/// HTML into Markdown-like text: headings as `#` lines, blocks as paragraphs, list
/// items as `- ` lines, hidden elements and comments left out, entities decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut hidden: Option<String> = None;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if hidden.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        if hidden.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(inside) = &hidden {
            if closing && *inside == name {
                hidden = None;
            }
            continue;
        }
        if HIDDEN.contains(&name.as_str()) && !closing && !tag.ends_with('/') {
            hidden = Some(name);
            continue;
        }
        match name.as_str() {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                end_paragraph(&mut out);
                if !closing {
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                }
            }
            "li" if !closing => {
                end_line(&mut out);
                out.push_str("- ");
            }
            "br" => end_line(&mut out),
            block if BLOCKS.contains(&block) => end_paragraph(&mut out),
            _ => {}
        }
    }
    out.trim().to_owned()
}

fn push_text(out: &mut String, raw: &str) {
    let decoded = decode_entities(raw);
    let mut words = decoded.split_whitespace().peekable();
    if words.peek().is_none() {
        if !decoded.is_empty() && !out.ends_with([' ', '\n']) && !out.is_empty() {
            out.push(' ');
        }
        return;
    }
    if decoded.starts_with(char::is_whitespace) && !out.ends_with([' ', '\n']) && !out.is_empty() {
        out.push(' ');
    }
    let joined: Vec<&str> = words.collect();
    out.push_str(&joined.join(" "));
    if decoded.ends_with(char::is_whitespace) {
        out.push(' ');
    }
}

fn end_line(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn end_paragraph(out: &mut String) {
    end_line(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

fn decode_entities(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_headed_paragraphs_without_scripts() {
        let html = "<html><head><title>x</title><style>p{}</style></head><body>\
            <h1>Returns</h1><p>Items can be returned within <b>30&nbsp;days</b>.</p>\
            <script>alert('no')</script><!-- hidden -->\
            <h2>Exceptions</h2><ul><li>Gift cards</li><li>Food &amp; drink</li></ul></body></html>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "# Returns\n\nItems can be returned within 30 days.\n\n## Exceptions\n\n- Gift cards\n- Food & drink"
        );
    }

    #[test]
    fn content_types_come_from_the_type_or_the_name() {
        assert_eq!(
            content_type("text/markdown; charset=utf-8", ""),
            Some("text/markdown")
        );
        assert_eq!(content_type("", "guide.PDF"), Some("application/pdf"));
        assert_eq!(
            content_type("application/octet-stream", "a.htm"),
            Some("text/html")
        );
        assert_eq!(content_type("image/png", "a.md"), None);
        assert_eq!(content_type("", "noextension"), None);
    }

    #[test]
    fn unreadable_documents_say_why() {
        assert!(
            text_of("text/plain", b"\xff\xfe")
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            text_of("application/pdf", b"not a pdf")
                .unwrap_err()
                .contains("PDF")
        );
        assert!(
            text_of("text/html", b"<p>  </p>")
                .unwrap_err()
                .contains("no text")
        );
        assert_eq!(text_of("text/plain", b"\xEF\xBB\xBFhi").unwrap(), "hi");
    }
}
