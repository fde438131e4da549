//! XML answers (S3, EC2) as JSON, so a model reads every tool's answer the same way:
//! an element holding only text is a string, one holding elements is an object of
//! them, and a name that repeats is an array. Attributes and namespaces are left out
//! (these APIs put nothing in them a caller needs).

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// The deepest nesting read; deeper is refused rather than followed.
const MAX_DEPTH: usize = 64;

/// The document as `{"<root>": …}`, or why it is not XML.
pub fn to_json(text: &str) -> Result<Value, String> {
    // Text is kept as it is (a key may start with a space); the whitespace between
    // elements is dropped with the text of any element that holds elements.
    let mut reader = Reader::from_str(text);
    // Each open element: its name, the children so far, its text so far.
    let mut open: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        match reader.read_event().map_err(|e| format!("not XML: {e}"))? {
            Event::Start(start) => {
                if open.len() >= MAX_DEPTH {
                    return Err("XML nested too deep".into());
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                open.push((name, Map::new(), String::new()));
            }
            Event::Empty(empty) => {
                let name = String::from_utf8_lossy(empty.local_name().as_ref()).into_owned();
                match open.last_mut() {
                    Some((_, children, _)) => add(children, name, Value::String(String::new())),
                    None => root = Some((name, Value::String(String::new()))),
                }
            }
            Event::Text(text) => {
                if let Some((_, _, own)) = open.last_mut() {
                    let decoded = text.decode().map_err(|e| format!("not XML: {e}"))?;
                    let unescaped = quick_xml::escape::unescape(&decoded)
                        .map_err(|e| format!("not XML: {e}"))?;
                    own.push_str(&unescaped);
                }
            }
            Event::CData(data) => {
                if let Some((_, _, own)) = open.last_mut() {
                    own.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::GeneralRef(reference) => {
                if let Some((_, _, own)) = open.last_mut() {
                    let name = reference.decode().map_err(|e| format!("not XML: {e}"))?;
                    let entity = format!("&{name};");
                    let resolved = quick_xml::escape::unescape(&entity)
                        .map_err(|e| format!("not XML: {e}"))?;
                    own.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let Some((name, children, own)) = open.pop() else {
                    return Err("not XML: an end without a start".into());
                };
                let value = if children.is_empty() {
                    Value::String(own)
                } else {
                    Value::Object(children)
                };
                match open.last_mut() {
                    Some((_, parent, _)) => add(parent, name, value),
                    None => root = Some((name, value)),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let (name, value) = root.ok_or_else(|| "not XML: no element".to_owned())?;
    let mut document = Map::new();
    document.insert(name, value);
    Ok(Value::Object(document))
}

/// A child under its name; a second of the same name makes an array.
fn add(children: &mut Map<String, Value>, name: String, value: Value) {
    match children.get_mut(&name) {
        None => {
            children.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(first) => {
            let first = first.take();
            children.insert(name, Value::Array(vec![first, value]));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_s3_listing_reads_as_json() {
        let listing = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>reports</Name><KeyCount>2</KeyCount><IsTruncated>false</IsTruncated>
  <Contents><Key>a &amp; b.txt</Key><Size>5</Size></Contents>
  <Contents><Key>c.txt</Key><Size>7</Size></Contents>
  <Prefix/>
</ListBucketResult>"#;
        assert_eq!(
            to_json(listing).unwrap(),
            json!({"ListBucketResult": {
                "Name": "reports", "KeyCount": "2", "IsTruncated": "false",
                "Contents": [{"Key": "a & b.txt", "Size": "5"}, {"Key": "c.txt", "Size": "7"}],
                "Prefix": ""
            }})
        );
        assert!(to_json("not xml at all").is_err());
        assert!(to_json("<a><b></a>").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(to_json(&deep).is_err());
    }
}
