//! Structured output for the local model: a JSON Schema compiled into a shape, and an
//! acceptor that says, one character at a time, whether the text so far can still
//! become a JSON value of that shape. Decoding asks it of every candidate token, so the
//! model can only write what parses and fits (what OpenAI's `strict` structured outputs
//! and llama.cpp's grammars promise), and generation ends the moment the value is whole.
//!
//! The schema subset it constrains: `type` (one or a list), `properties` with `required`
//! (keys limited to the declared ones, each at most once), `items`, `minItems` and
//! `maxItems`, `minLength` and `maxLength`, `pattern`, `enum` and `const`, `minimum` and
//! `maximum`, `anyOf` and `oneOf` (the first alternative that takes the value's first
//! character). A keyword it does not know (`$ref`, `allOf`, formats) constrains nothing
//! there, so no schema is refused for it; whoever asked still validates the answer.
//!
//! Two keywords of its own, which validators ignore, let a plan refer to itself:
//! `"x-key": kind` on a string makes it the name of the object holding it, unique among
//! the names of that kind (a deliverable's `id`), and `"x-refers-to": kind` on a string
//! lets it be only the name of an object of that kind that has already ended (a
//! dependency on an earlier deliverable: never itself, never one not written).

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use serde_json::Value;
use std::cell::RefCell;

/// Blank characters in a row between tokens: enough for a pretty-printed object's
/// newline and indentation, not enough for a model to stall on spaces.
const MAX_BLANKS: u8 = 32;
/// Digits in a number: beyond this, f64 and most readers lose precision.
const MAX_DIGITS: usize = 18;
/// Nesting depth of a value of no declared shape.
const MAX_DEPTH: usize = 32;
/// A pattern's automaton may grow to this many bytes before the pattern is dropped.
const PATTERN_CACHE_BYTES: usize = 2 << 20;

/// A compiled schema: its nodes, the first the root.
pub struct Shape {
    nodes: Vec<Node>,
    /// The nodes of a value of no declared shape, whatever the schema holds.
    any: usize,
    free_object: usize,
    any_array: usize,
    any_string: usize,
    any_number: usize,
    any_literal: usize,
}

enum Node {
    /// Any JSON value (no schema, or one this does not understand).
    Any,
    /// An object with declared properties (name, node): only those keys, each once.
    Object {
        properties: Vec<(String, usize)>,
        /// Bit i: properties[i] must be there before `}`.
        required: u64,
    },
    /// An object with any keys, any values.
    FreeObject,
    Array {
        items: usize,
        min: usize,
        max: usize,
    },
    String {
        min: usize,
        max: usize,
        pattern: Option<Box<Pattern>>,
        /// `x-key`: the string names what holds it, among the things of this kind,
        /// each name once (a deliverable's id).
        key_of: Option<String>,
        /// `x-refers-to`: the string is the name of a thing of this kind that ended
        /// before it (a dependency on an earlier deliverable).
        refers_to: Option<String>,
    },
    Number {
        integer: bool,
        min: Option<f64>,
        max: Option<f64>,
    },
    /// One of these values, each in compact JSON.
    Literal(Vec<String>),
    /// The first of these whose value starts with the character seen.
    OneOf(Vec<usize>),
}

/// A `pattern`, searched as JSON Schema means it (anywhere in the string unless
/// anchored), by a lazy DFA. Checked against the whole string so far each time: the
/// strings that carry patterns are short, and a cleared cache never matters.
struct Pattern {
    dfa: DFA,
    cache: RefCell<Cache>,
}

/// Where a string's text stands against its pattern.
enum Standing {
    /// No continuation can match.
    Dead,
    /// Some continuation may match; `true` when the text as it is matches.
    Open(bool),
}

impl Pattern {
    fn new(pattern: &str) -> Option<Pattern> {
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(PATTERN_CACHE_BYTES),
            )
            .build(pattern)
            .ok()?;
        let cache = RefCell::new(dfa.create_cache());
        Some(Pattern { dfa, cache })
    }

    fn standing(&self, text: &str) -> Standing {
        // An automaton that gives up (a Unicode word boundary on non-ASCII text, a
        // cache too small) cannot tell: the string is not held back for it.
        self.walk(text).unwrap_or(Standing::Open(true))
    }

    fn walk(&self, text: &str) -> Option<Standing> {
        let cache = &mut *self.cache.borrow_mut();
        let config = start::Config::new().anchored(Anchored::No);
        let mut state = self.dfa.start_state(cache, &config).ok()?;
        for &byte in text.as_bytes() {
            state = self.dfa.next_state(cache, state, byte).ok()?;
            if state.is_match() {
                // A match that ended inside the text holds whatever follows.
                return Some(Standing::Open(true));
            }
            if state.is_dead() {
                return Some(Standing::Dead);
            }
            if state.is_quit() {
                return None;
            }
        }
        let end = self.dfa.next_eoi_state(cache, state).ok()?;
        Some(Standing::Open(end.is_match()))
    }
}

impl Shape {
    /// The shape an OpenAI `response_format` asks for: `None` for plain text, any object
    /// for `json_object`, the schema's for `json_schema` (an object with any keys when it
    /// names no schema). The format was checked where the call came in.
    pub fn for_response_format(format: &Value) -> Option<Shape> {
        let any_object = serde_json::json!({"type": "object"});
        let schema = match (format["type"].as_str(), &format["json_schema"]["schema"]) {
            (Some("json_schema"), schema @ Value::Object(_)) => schema,
            (Some("json_schema" | "json_object"), _) => &any_object,
            _ => return None,
        };
        Some(Shape::compile(schema))
    }

    pub fn compile(schema: &Value) -> Shape {
        let mut shape = Shape {
            nodes: Vec::new(),
            any: 0,
            free_object: 0,
            any_array: 0,
            any_string: 0,
            any_number: 0,
            any_literal: 0,
        };
        shape.node(schema);
        let mut add = |node| {
            shape.nodes.push(node);
            shape.nodes.len() - 1
        };
        let any = add(Node::Any);
        let free_object = add(Node::FreeObject);
        let any_array = add(Node::Array {
            items: any,
            min: 0,
            max: usize::MAX,
        });
        let any_string = add(Node::String {
            min: 0,
            max: usize::MAX,
            pattern: None,
            key_of: None,
            refers_to: None,
        });
        let any_number = add(Node::Number {
            integer: false,
            min: None,
            max: None,
        });
        let any_literal = add(Node::Literal(vec![
            "true".into(),
            "false".into(),
            "null".into(),
        ]));
        Shape {
            any,
            free_object,
            any_array,
            any_string,
            any_number,
            any_literal,
            ..shape
        }
    }

    /// Adds the node for `schema` (and its children) and returns its index.
    fn node(&mut self, schema: &Value) -> usize {
        let at = self.nodes.len();
        self.nodes.push(Node::Any);
        let node = self.build(schema);
        self.nodes[at] = node;
        at
    }

    fn build(&mut self, schema: &Value) -> Node {
        let Value::Object(map) = schema else {
            return Node::Any;
        };
        if let Some(value) = map.get("const") {
            return Node::Literal(vec![value.to_string()]);
        }
        if let Some(Value::Array(values)) = map.get("enum")
            && !values.is_empty()
        {
            return Node::Literal(values.iter().map(Value::to_string).collect());
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(alternatives)) = map.get(key)
                && !alternatives.is_empty()
            {
                return Node::OneOf(alternatives.iter().map(|a| self.node(a)).collect());
            }
        }
        match map.get("type") {
            Some(Value::String(kind)) => self.typed(kind, map),
            Some(Value::Array(kinds)) if !kinds.is_empty() => {
                let alternatives = kinds
                    .iter()
                    .map(|kind| {
                        let node = self.typed(kind.as_str().unwrap_or_default(), map);
                        self.nodes.push(node);
                        self.nodes.len() - 1
                    })
                    .collect();
                Node::OneOf(alternatives)
            }
            _ if map.contains_key("properties") => self.typed("object", map),
            _ if map.contains_key("items") => self.typed("array", map),
            _ => Node::Any,
        }
    }

    fn typed(&mut self, kind: &str, map: &serde_json::Map<String, Value>) -> Node {
        let count = |key: &str| map.get(key).and_then(Value::as_u64).map(|n| n as usize);
        let bound = |key: &str| map.get(key).and_then(Value::as_f64);
        match kind {
            "object" => match map.get("properties") {
                Some(Value::Object(properties)) if !properties.is_empty() => {
                    let required: Vec<&str> = map
                        .get("required")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    // Beyond 64 properties the key set is not tracked: any keys.
                    if properties.len() > 64 {
                        return Node::FreeObject;
                    }
                    let mut declared = Vec::with_capacity(properties.len());
                    let mut mask = 0u64;
                    for (i, (name, schema)) in properties.iter().enumerate() {
                        if required.contains(&name.as_str()) {
                            mask |= 1 << i;
                        }
                        let node = self.node(schema);
                        declared.push((name.clone(), node));
                    }
                    Node::Object {
                        properties: declared,
                        required: mask,
                    }
                }
                _ => Node::FreeObject,
            },
            "array" => {
                let items = match map.get("items") {
                    Some(schema) => self.node(schema),
                    None => self.node(&Value::Null),
                };
                Node::Array {
                    items,
                    min: count("minItems").unwrap_or(0),
                    max: count("maxItems").unwrap_or(usize::MAX),
                }
            }
            "string" => Node::String {
                min: count("minLength").unwrap_or(0),
                max: count("maxLength").unwrap_or(usize::MAX),
                pattern: map
                    .get("pattern")
                    .and_then(Value::as_str)
                    .and_then(Pattern::new)
                    .map(Box::new),
                key_of: map.get("x-key").and_then(Value::as_str).map(str::to_owned),
                refers_to: map
                    .get("x-refers-to")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
            "integer" | "number" => Node::Number {
                integer: kind == "integer",
                min: bound("minimum"),
                max: bound("maximum"),
            },
            "boolean" => Node::Literal(vec!["true".into(), "false".into()]),
            "null" => Node::Literal(vec!["null".into()]),
            _ => Node::Any,
        }
    }

    /// An acceptor for text of this shape, at its start.
    pub fn acceptor(&self) -> Acceptor<'_> {
        Acceptor {
            shape: self,
            stack: vec![Frame::Value { node: 0 }],
            done: false,
            blanks: 0,
            names: Vec::new(),
        }
    }
}

/// The text so far, as far as it goes toward a value of the shape. Cheap to clone, so
/// a candidate token is tried on a copy.
#[derive(Clone)]
pub struct Acceptor<'s> {
    shape: &'s Shape,
    stack: Vec<Frame>,
    done: bool,
    blanks: u8,
    /// The `x-key` names written so far.
    names: Vec<Named<'s>>,
}

/// A name an `x-key` string gave what holds it.
#[derive(Clone)]
struct Named<'s> {
    kind: &'s str,
    value: String,
    /// Where on the stack what it names is: once that ends, the name can be referred to.
    holder: usize,
    ended: bool,
}

#[derive(Clone)]
enum Frame {
    /// A value of `node` comes next.
    Value {
        node: usize,
    },
    Object {
        node: usize,
        seen: u64,
        stage: Stage,
    },
    /// A key being written, in an object of `node`.
    Key {
        node: usize,
        text: String,
    },
    Array {
        node: usize,
        count: usize,
        stage: Stage,
    },
    Str {
        node: usize,
        text: String,
        chars: usize,
        escape: Escape,
    },
    Number {
        node: usize,
        text: String,
    },
    Literal {
        node: usize,
        text: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// After `{` or `[`.
    Open,
    /// After a key (objects).
    Keyed(usize),
    /// A member's or item's value is being written.
    Member,
    /// After a member or an item.
    Done,
    /// After `,`.
    Comma,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    No,
    /// After `\`.
    Started,
    /// In `\uXXXX`, this many hex digits to go.
    Hex(u8),
}

/// The property a key names in an object whose keys are free.
const FREE: usize = usize::MAX;

impl<'s> Acceptor<'s> {
    /// Whether the text is a whole value of the shape (nothing more is needed).
    pub fn is_whole(&self) -> bool {
        self.done
            || match self.stack.as_slice() {
                [Frame::Number { node, text }] => self.number_ends(*node, text),
                [Frame::Literal { node, text }] => self.literal_options(*node).any(|o| o == text),
                _ => false,
            }
    }

    /// Takes `text` if the result can still become a value of the shape; if not, the
    /// acceptor is left as it was.
    pub fn push_str(&mut self, text: &str) -> bool {
        let mut next = self.clone();
        if text.chars().all(|c| next.push(c)) {
            *self = next;
            true
        } else {
            false
        }
    }

    /// Whether `text` would be taken, leaving the acceptor as it is.
    pub fn accepts(&self, text: &str) -> bool {
        self.clone().push_str(text)
    }

    fn push(&mut self, c: char) -> bool {
        if c.is_whitespace() && self.blank_allowed() {
            if !matches!(c, ' ' | '\n' | '\r' | '\t') || self.blanks >= MAX_BLANKS {
                return false;
            }
            // A blank ends a number or a literal: `12 3` is not `123`.
            if let Some(Frame::Number { .. } | Frame::Literal { .. }) = self.stack.last() {
                self.stack.pop();
                self.value_done();
            }
            self.blanks += 1;
            return true;
        }
        self.blanks = 0;
        if self.done {
            return false;
        }
        // A number or a literal ends where a character cannot go on with it: that
        // character then belongs to what holds it.
        loop {
            match self.step(c) {
                Step::Taken => return true,
                Step::Refused => return false,
                Step::Again => continue,
            }
        }
    }

    /// Blanks go between tokens, never inside a key, string, number or literal.
    fn blank_allowed(&self) -> bool {
        match self.stack.last() {
            None => true,
            Some(Frame::Value { .. } | Frame::Object { .. } | Frame::Array { .. }) => true,
            Some(Frame::Number { node, text }) => self.number_ends(*node, text),
            Some(Frame::Literal { node, text }) => self.literal_options(*node).any(|o| o == text),
            Some(Frame::Key { .. } | Frame::Str { .. }) => false,
        }
    }

    fn step(&mut self, c: char) -> Step {
        let Some(top) = self.stack.last() else {
            return Step::Refused;
        };
        match top {
            &Frame::Value { node } => {
                self.stack.pop();
                self.start(node, c)
            }
            &Frame::Object { node, seen, stage } => self.object_char(node, seen, stage, c),
            &Frame::Key { node, .. } => self.key_char(node, c),
            &Frame::Array { node, count, stage } => self.array_char(node, count, stage, c),
            &Frame::Str { node, escape, .. } => self.string_char(node, escape, c),
            Frame::Number { node, text } => {
                let node = *node;
                let mut longer = text.clone();
                longer.push(c);
                if self.number_prefix(node, &longer) {
                    self.set_text(longer);
                    Step::Taken
                } else if self.number_ends(node, text) {
                    self.stack.pop();
                    self.value_done();
                    Step::Again
                } else {
                    Step::Refused
                }
            }
            Frame::Literal { node, text } => {
                let node = *node;
                let mut longer = text.clone();
                longer.push(c);
                let whole = self.literal_options(node).any(|o| *o == *text);
                if self.literal_options(node).any(|o| o.starts_with(&longer)) {
                    let ends_here = self
                        .literal_options(node)
                        .all(|o| !o.starts_with(&longer) || o.len() == longer.len());
                    self.set_text(longer);
                    if ends_here {
                        return self.finish_value();
                    }
                    Step::Taken
                } else if whole {
                    self.stack.pop();
                    self.value_done();
                    Step::Again
                } else {
                    Step::Refused
                }
            }
        }
    }

    fn set_stage(&mut self, to: Stage) {
        if let Some(Frame::Object { stage, .. } | Frame::Array { stage, .. }) =
            self.stack.last_mut()
        {
            *stage = to;
        }
    }

    fn set_text(&mut self, to: String) {
        if let Some(
            Frame::Number { text, .. } | Frame::Literal { text, .. } | Frame::Key { text, .. },
        ) = self.stack.last_mut()
        {
            *text = to;
        }
    }

    fn object_char(&mut self, node: usize, seen: u64, stage: Stage, c: char) -> Step {
        match (stage, c) {
            // After a comma a key must follow (the comma was only taken with
            // keys left); after the brace, only if the object may have any.
            (Stage::Open | Stage::Comma, '"')
                if stage == Stage::Comma || self.keys_left(node, seen) =>
            {
                self.stack.push(Frame::Key {
                    node,
                    text: String::new(),
                });
                Step::Taken
            }
            (Stage::Open | Stage::Done, '}') if self.required_met(node, seen) => {
                self.finish_value()
            }
            (Stage::Done, ',') if self.keys_left(node, seen) => {
                self.set_stage(Stage::Comma);
                Step::Taken
            }
            (Stage::Keyed(property), ':') => {
                if self.stack.len() > MAX_DEPTH {
                    return Step::Refused;
                }
                let value = match &self.shape.nodes[node] {
                    Node::Object { properties, .. } if property != FREE => properties[property].1,
                    _ => self.shape.any,
                };
                self.set_stage(Stage::Member);
                self.stack.push(Frame::Value { node: value });
                Step::Taken
            }
            _ => Step::Refused,
        }
    }

    fn key_char(&mut self, node: usize, c: char) -> Step {
        let Some(Frame::Key { text, .. }) = self.stack.pop() else {
            return Step::Refused;
        };
        let Some(&Frame::Object { seen, .. }) = self.stack.last() else {
            return Step::Refused;
        };
        let properties = match &self.shape.nodes[node] {
            Node::Object { properties, .. } => Some(properties),
            _ => None,
        };
        let unseen = |i: usize| seen & (1 << i) == 0;
        if c == '"' {
            let property = match properties {
                Some(properties) => match properties.iter().position(|(name, _)| *name == text) {
                    Some(i) if unseen(i) => i,
                    _ => return Step::Refused,
                },
                None => FREE,
            };
            if let Some(Frame::Object { seen, stage, .. }) = self.stack.last_mut() {
                if property != FREE {
                    *seen |= 1 << property;
                }
                *stage = Stage::Keyed(property);
            }
            return Step::Taken;
        }
        if c == '\\' || c.is_control() {
            return Step::Refused;
        }
        let mut text = text;
        text.push(c);
        if let Some(properties) = properties
            && !properties
                .iter()
                .enumerate()
                .any(|(i, (name, _))| unseen(i) && name.starts_with(text.as_str()))
        {
            return Step::Refused;
        }
        self.stack.push(Frame::Key { node, text });
        Step::Taken
    }

    fn array_char(&mut self, node: usize, count: usize, stage: Stage, c: char) -> Step {
        let Node::Array { items, min, max } = self.shape.nodes[node] else {
            return Step::Refused;
        };
        match (stage, c) {
            (Stage::Open | Stage::Done, ']') if count >= min => self.finish_value(),
            (Stage::Done, ',') if count < max => {
                self.set_stage(Stage::Comma);
                Step::Taken
            }
            (Stage::Open, _) if count < max => {
                self.set_stage(Stage::Member);
                self.stack.push(Frame::Value { node: items });
                Step::Again
            }
            (Stage::Comma, _) => {
                self.set_stage(Stage::Member);
                self.stack.push(Frame::Value { node: items });
                Step::Again
            }
            _ => Step::Refused,
        }
    }

    fn string_char(&mut self, node: usize, escape: Escape, c: char) -> Step {
        let shape: &'s Shape = self.shape;
        let Node::String {
            min,
            max,
            pattern,
            key_of,
            refers_to,
        } = &shape.nodes[node]
        else {
            return Step::Refused;
        };
        let depth = self.stack.len();
        let Some(Frame::Str {
            text,
            chars,
            escape: escaping,
            ..
        }) = self.stack.last_mut()
        else {
            return Step::Refused;
        };
        let unescaped = match (escape, c) {
            (Escape::Started, _) => {
                let unescaped = match c {
                    '"' | '\\' | '/' => c,
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => {
                        *escaping = Escape::Hex(4);
                        return Step::Taken;
                    }
                    _ => return Step::Refused,
                };
                *escaping = Escape::No;
                unescaped
            }
            (Escape::Hex(left), _) => {
                if !c.is_ascii_hexdigit() {
                    return Step::Refused;
                }
                *escaping = if left > 1 {
                    Escape::Hex(left - 1)
                } else {
                    Escape::No
                };
                if left > 1 {
                    return Step::Taken;
                }
                // What a \u escape stands for is counted as one character and not
                // checked against a pattern.
                *chars += 1;
                return if *chars <= *max {
                    Step::Taken
                } else {
                    Step::Refused
                };
            }
            (Escape::No, '"') => {
                let matched = match pattern {
                    Some(p) => matches!(p.standing(text), Standing::Open(true)),
                    None => true,
                };
                if *chars < *min || !matched {
                    return Step::Refused;
                }
                if let Some(kind) = refers_to
                    && !self
                        .names
                        .iter()
                        .any(|n| n.ended && n.kind == kind && n.value == *text)
                {
                    return Step::Refused;
                }
                if let Some(kind) = key_of {
                    if self
                        .names
                        .iter()
                        .any(|n| n.kind == kind && n.value == *text)
                    {
                        return Step::Refused;
                    }
                    self.names.push(Named {
                        kind,
                        value: std::mem::take(text),
                        // The string's frame is on top, what it names just below.
                        holder: depth.saturating_sub(2),
                        ended: false,
                    });
                }
                return self.finish_value();
            }
            (Escape::No, '\\') => {
                *escaping = Escape::Started;
                return Step::Taken;
            }
            (Escape::No, c) if c.is_control() => return Step::Refused,
            (Escape::No, c) => c,
        };
        if *chars >= *max {
            return Step::Refused;
        }
        *chars += 1;
        // Only a string with rules on its text keeps it.
        if pattern.is_none() && key_of.is_none() && refers_to.is_none() {
            return Step::Taken;
        }
        text.push(unescaped);
        if let Some(p) = pattern
            && matches!(p.standing(text), Standing::Dead)
        {
            return Step::Refused;
        }
        if let Some(kind) = refers_to
            && !self
                .names
                .iter()
                .any(|n| n.ended && n.kind == kind && n.value.starts_with(text.as_str()))
        {
            return Step::Refused;
        }
        Step::Taken
    }

    /// A value of `node` starts with `c` (the `Value` frame is already off the stack).
    fn start(&mut self, node: usize, c: char) -> Step {
        if self.stack.len() > MAX_DEPTH {
            return Step::Refused;
        }
        let frame = match (&self.shape.nodes[node], c) {
            (Node::OneOf(alternatives), _) => {
                for &alternative in alternatives {
                    let mut trial = self.clone();
                    if let Step::Taken = trial.start(alternative, c) {
                        *self = trial;
                        return Step::Taken;
                    }
                }
                return Step::Refused;
            }
            (Node::Object { .. } | Node::FreeObject, '{') => Frame::Object {
                node,
                seen: 0,
                stage: Stage::Open,
            },
            (Node::Array { .. }, '[') => Frame::Array {
                node,
                count: 0,
                stage: Stage::Open,
            },
            (Node::String { refers_to, .. }, '"') => {
                // A reference with nothing yet to refer to cannot start.
                if let Some(kind) = refers_to
                    && !self.names.iter().any(|n| n.ended && n.kind == kind)
                {
                    return Step::Refused;
                }
                Frame::Str {
                    node,
                    text: String::new(),
                    chars: 0,
                    escape: Escape::No,
                }
            }
            (Node::Number { .. }, '-' | '0'..='9') => {
                if !self.number_prefix(node, &c.to_string()) {
                    return Step::Refused;
                }
                Frame::Number {
                    node,
                    text: c.to_string(),
                }
            }
            (Node::Literal(_), _) => {
                self.stack.push(Frame::Literal {
                    node,
                    text: String::new(),
                });
                return match self.step(c) {
                    Step::Taken => Step::Taken,
                    _ => Step::Refused,
                };
            }
            (Node::Any, _) => {
                let shape = self.shape;
                let concrete = match c {
                    '{' => shape.free_object,
                    '[' => shape.any_array,
                    '"' => shape.any_string,
                    '-' | '0'..='9' => shape.any_number,
                    't' | 'f' | 'n' => shape.any_literal,
                    _ => return Step::Refused,
                };
                return self.start(concrete, c);
            }
            _ => return Step::Refused,
        };
        self.stack.push(frame);
        Step::Taken
    }

    /// A value ended with the character just taken: its frame comes off.
    fn finish_value(&mut self) -> Step {
        let at = self.stack.len().saturating_sub(1);
        if let Some(Frame::Object { .. }) = self.stack.pop() {
            for name in &mut self.names {
                if name.holder == at {
                    name.ended = true;
                }
            }
        }
        self.value_done();
        Step::Taken
    }

    /// Tells what holds the value that just ended.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            None => self.done = true,
            Some(Frame::Object { stage, .. }) => *stage = Stage::Done,
            Some(Frame::Array { count, stage, .. }) => {
                *count += 1;
                *stage = Stage::Done;
            }
            Some(_) => {}
        }
    }

    fn keys_left(&self, node: usize, seen: u64) -> bool {
        match &self.shape.nodes[node] {
            Node::Object { properties, .. } => (0..properties.len()).any(|i| seen & (1 << i) == 0),
            _ => true,
        }
    }

    fn required_met(&self, node: usize, seen: u64) -> bool {
        match &self.shape.nodes[node] {
            Node::Object { required, .. } => required & !seen == 0,
            _ => true,
        }
    }

    fn literal_options(&self, node: usize) -> impl Iterator<Item = &'s String> {
        let shape: &'s Shape = self.shape;
        let options: &'s [String] = match &shape.nodes[node] {
            Node::Literal(options) => options,
            _ => Default::default(),
        };
        options.iter()
    }

    /// Whether `text` can still grow into a number of `node`.
    fn number_prefix(&self, node: usize, text: &str) -> bool {
        let Node::Number { integer, min, max } = self.shape.nodes[node] else {
            return false;
        };
        let digits = text.bytes().filter(u8::is_ascii_digit).count();
        if digits > MAX_DIGITS || !number_grammar_prefix(text, integer) {
            return false;
        }
        if text.starts_with('-') && min.is_some_and(|m| m >= 0.0) {
            return false;
        }
        // More digits only move a whole number away from zero: a positive one past
        // the maximum stays past it.
        if let (Some(max), Ok(value)) = (max, text.parse::<i64>())
            && value > 0
            && value as f64 > max
        {
            return false;
        }
        true
    }

    /// Whether `text` is a whole number of `node`.
    fn number_ends(&self, node: usize, text: &str) -> bool {
        let Node::Number { integer, min, max } = self.shape.nodes[node] else {
            return false;
        };
        number_grammar_whole(text, integer)
            && text
                .parse::<f64>()
                .is_ok_and(|value| min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m))
    }
}

enum Step {
    Taken,
    Refused,
    /// The character ended the value before it: offer it again to what holds it.
    Again,
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, as far as `text` goes.
fn number_grammar_prefix(text: &str, integer: bool) -> bool {
    number_scan(text, integer).is_some()
}

fn number_grammar_whole(text: &str, integer: bool) -> bool {
    number_scan(text, integer) == Some(true)
}

/// `Some(whole)` when `text` is a prefix of a number (`whole`: a number as it is).
fn number_scan(text: &str, integer: bool) -> Option<bool> {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if int_digits > 1 && b[int_start] == b'0' {
        return None;
    }
    if i == b.len() {
        return Some(int_digits > 0);
    }
    if integer || int_digits == 0 {
        return None;
    }
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let fraction = i > start;
        if i == b.len() {
            return Some(fraction);
        }
        if !fraction {
            return None;
        }
    }
    if b[i] == b'e' || b[i] == b'E' {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        return (i == b.len()).then_some(i > start);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn takes(schema: &Value, text: &str) -> bool {
        let shape = Shape::compile(schema);
        let mut acceptor = shape.acceptor();
        acceptor.push_str(text)
    }

    fn whole(schema: &Value, text: &str) -> bool {
        let shape = Shape::compile(schema);
        let mut acceptor = shape.acceptor();
        acceptor.push_str(text) && acceptor.is_whole()
    }

    fn plan_schema() -> Value {
        json!({
            "type": "object",
            "required": ["deliverables"],
            "properties": {"deliverables": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
                "type": "object",
                "required": ["id", "title"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                    "title": {"type": "string", "minLength": 1, "maxLength": 10},
                    "dependencies": {"type": "array", "items": {"type": "string"}},
                    "estimate_tokens": {"type": "integer", "minimum": 0}
                }
            }}}
        })
    }

    #[test]
    fn a_value_of_the_shape_is_taken_whole() {
        let schema = plan_schema();
        let text = r#"{"deliverables": [{"id": "api-1", "title": "The API", "dependencies": [], "estimate_tokens": 1200},
            {"title": "Docs", "id": "docs", "dependencies": ["api-1"]}]}"#;
        assert!(whole(&schema, text));
        // Every prefix is taken, none but the last is whole.
        let shape = Shape::compile(&schema);
        let mut acceptor = shape.acceptor();
        for c in text.chars() {
            assert!(!acceptor.is_whole());
            assert!(acceptor.push_str(&c.to_string()), "{c}");
        }
        assert!(acceptor.is_whole());
        assert!(!acceptor.accepts("x"), "nothing follows a whole value");
    }

    #[test]
    fn what_breaks_the_shape_is_refused_where_it_starts() {
        let schema = plan_schema();
        // An undeclared key, from its first wrong character.
        assert!(takes(&schema, r#"{"deliv"#));
        assert!(!takes(&schema, r#"{"delix"#));
        // A key twice.
        assert!(!takes(&schema, r#"{"deliverables": [], "deliverables""#));
        // Closing before the required keys.
        assert!(!takes(&schema, r#"{"deliverables": [{"id": "a"}"#));
        assert!(!takes(&schema, r#"{}"#));
        // Too few and too many items.
        assert!(!takes(&schema, r#"{"deliverables": []"#));
        assert!(!takes(
            &schema,
            r#"{"deliverables": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"},"#
        ));
        // A string past its maximum, one under its minimum, one off its pattern.
        assert!(!takes(
            &schema,
            r#"{"deliverables": [{"title": "0123456789x"#
        ));
        assert!(!takes(&schema, r#"{"deliverables": [{"title": """#));
        assert!(!takes(&schema, r#"{"deliverables": [{"id": "A"#));
        assert!(!takes(&schema, r#"{"deliverables": [{"id": "a b"#));
        // A number of the wrong kind or range.
        assert!(!takes(
            &schema,
            r#"{"deliverables": [{"estimate_tokens": -"#
        ));
        assert!(!takes(
            &schema,
            r#"{"deliverables": [{"estimate_tokens": 1."#
        ));
        // Not JSON at all.
        assert!(!takes(&schema, "Sure! Here is"));
        assert!(!takes(&schema, "{'deliverables'"));
    }

    #[test]
    fn references_name_earlier_objects_only_and_names_are_unique() {
        let schema = json!({"type": "array", "items": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string", "x-key": "step"},
            "after": {"type": "array", "items": {"type": "string", "x-refers-to": "step"}},
        }}});
        assert!(whole(
            &schema,
            r#"[{"id": "a", "after": []}, {"id": "b", "after": ["a"]}, {"after": ["a", "b"], "id": "c"}]"#
        ));
        // Nothing to refer to yet: the first step's references cannot start.
        assert!(!takes(&schema, r#"[{"id": "a", "after": [""#));
        // Not itself, not a name never written, and a name once.
        assert!(!takes(&schema, r#"[{"id": "a"}, {"id": "b", "after": ["b"#));
        assert!(!takes(&schema, r#"[{"id": "a"}, {"id": "b", "after": ["c"#));
        assert!(!takes(
            &schema,
            r#"[{"id": "a"}, {"id": "b", "after": ["ab"#
        ));
        assert!(!takes(&schema, r#"[{"id": "a"}, {"id": "a""#));
        assert!(takes(&schema, r#"[{"id": "ab"}, {"id": "b", "after": ["a"#));
        assert!(!takes(
            &schema,
            r#"[{"id": "ab"}, {"id": "b", "after": ["a""#
        ));
    }

    #[test]
    fn numbers_literals_and_unions() {
        let score = json!({"type": "object", "required": ["score"], "properties": {
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "notes": {"type": ["string", "null"]},
            "verdict": {"enum": ["pass", "fail"]},
            "ok": {"type": "boolean"}
        }});
        assert!(whole(&score, r#"{"score": 100}"#));
        assert!(whole(
            &score,
            r#"{"score":0,"notes":null,"verdict":"fail","ok":true}"#
        ));
        assert!(whole(
            &score,
            r#"{"score": 7, "notes": "fine \"really\" \u00e9"}"#
        ));
        assert!(!takes(&score, r#"{"score": 101"#));
        assert!(!takes(&score, r#"{"score": 01"#));
        assert!(!takes(&score, r#"{"score": 5, "verdict": "pas "#));
        assert!(!takes(&score, r#"{"score": 5, "ok": tru "#));
        assert!(!takes(&score, r#"{"score": 1 2"#));
        assert!(whole(&score, r#"{"score": 12 }"#));
        assert!(!takes(&score, r#"{"score": 5, "notes": 3"#));
        let real = json!({"type": "number", "minimum": -1.5});
        assert!(whole(&real, "-1.25e0"));
        assert!(whole(&real, "3"));
        assert!(!whole(&real, "-2"));
        assert!(!takes(&real, "1.e"));
    }

    #[test]
    fn no_schema_or_an_unknown_one_takes_any_json() {
        for schema in [json!({}), json!({"$ref": "#/defs/x"}), Value::Null] {
            assert!(whole(
                &schema,
                r#"{"a": [1, -2.5e3, "x", true, null, {"b": {}}]}"#
            ));
            assert!(whole(&schema, r#"[]"#));
            assert!(!takes(&schema, r#"{"a" 1"#));
            assert!(!takes(&schema, r#"{"a": [1,]"#));
        }
        let object = Shape::for_response_format(&json!({"type": "json_object"})).unwrap();
        let mut acceptor = object.acceptor();
        assert!(!acceptor.accepts("[1]"), "json_object means an object");
        assert!(acceptor.push_str(r#"{"any": "key"}"#) && acceptor.is_whole());
        assert!(Shape::for_response_format(&json!({"type": "text"})).is_none());
    }

    #[test]
    fn blanks_go_between_tokens_and_not_forever() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert!(whole(&schema, "{\n  \"a\" : \"x y\"\n}"));
        assert!(!takes(&schema, "{\"a \""));
        assert!(!takes(
            &schema,
            &format!("{{{}", " ".repeat(MAX_BLANKS as usize + 1))
        ));
    }
}
