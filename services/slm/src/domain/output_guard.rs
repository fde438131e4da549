//! The output guard: an answer's text is released to the caller only once the text up
//! to it passes the tenant's terms and patterns, so a forbidden term never leaves slm,
//! however the model splits it into deltas.
//!
//! Terms are matched as the policy decision matches them: the text lowercased, the
//! term contained in it. A delta may end in the middle of a term, so the end of the
//! text is held back while it could still become one: from the earliest place whose
//! rest (lowercased) begins some term, which is never more than `longest term - 1`
//! characters back (a term of `n` lowercase characters spans at most `n` characters of
//! the original text). Text that cannot begin a term goes out at once, so most deltas
//! are not delayed at all. Patterns are matched on the running text each time it
//! grows: their matches can be of any length, so no window can hold one back whole; a
//! pattern trips the guard as soon as the text matches it. Numbers are what most
//! personal data patterns match (card, account, phone and identity numbers), so while a
//! tenant has patterns, a number at the end of the text (digits with the spaces,
//! dashes, dots, slashes, brackets and plus signs that write them) is held back until
//! something else follows it: a number goes out whole and checked, or not at all.

use regex::RegexSet;

/// A tenant's rules for what an answer may not say.
#[derive(Debug, Clone)]
pub struct OutputRules {
    /// (id, lowercase term)
    terms: Vec<(String, String)>,
    pattern_ids: Vec<String>,
    patterns: RegexSet,
    /// In characters.
    longest_term: usize,
}

/// Characters that write a number besides its digits (`+1 (555) 010-9999`,
/// `4111 1111 1111 1111`, `12/31`).
fn in_a_number(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '/' | '(' | ')' | '+')
}

impl OutputRules {
    /// From the policy's terms (any case) and patterns; an error if a pattern does not
    /// compile, so the caller can withhold rather than guard with fewer rules.
    pub fn new(
        terms: Vec<(String, String)>,
        patterns: Vec<(String, String)>,
    ) -> Result<Self, regex::Error> {
        let terms: Vec<(String, String)> = terms
            .into_iter()
            .map(|(id, term)| (id, term.to_lowercase()))
            .filter(|(_, term)| !term.is_empty())
            .collect();
        let longest_term = terms
            .iter()
            .map(|(_, t)| t.chars().count())
            .max()
            .unwrap_or(0);
        let set = RegexSet::new(patterns.iter().map(|(_, p)| p))?;
        Ok(Self {
            terms,
            pattern_ids: patterns.into_iter().map(|(id, _)| id).collect(),
            patterns: set,
            longest_term,
        })
    }

    /// The most characters an answer's end is held back for.
    pub fn window(&self) -> usize {
        self.longest_term.saturating_sub(1)
    }

    /// Whether `tail` (lowercase) is how some term begins.
    fn begins_a_term(&self, tail: &str) -> bool {
        self.terms.iter().any(|(_, t)| t.starts_with(tail))
    }

    /// The id of a rule `text` breaks, checking terms only in `lowered` (the part of
    /// the lowercased text where a new match can be) and patterns on all of `text`.
    fn broken(&self, text: &str, lowered: &str) -> Option<&str> {
        if let Some((id, _)) = self
            .terms
            .iter()
            .find(|(_, t)| lowered.contains(t.as_str()))
        {
            return Some(id);
        }
        self.patterns
            .matches(text)
            .into_iter()
            .next()
            .map(|i| self.pattern_ids[i].as_str())
    }
}

/// What the guard says about the text so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Text that may go out now (possibly empty: it is held back for now).
    Release(String),
    /// The answer broke this rule; nothing more of it may go out.
    Tripped(String),
}

/// One answer's guard.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    rules: &'a OutputRules,
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    tripped: Option<String>,
}

impl<'a> StreamGuard<'a> {
    pub fn new(rules: &'a OutputRules) -> Self {
        Self {
            rules,
            text: String::new(),
            released: 0,
            tripped: None,
        }
    }

    /// Takes the next delta; says what may go out now.
    pub fn push(&mut self, delta: &str) -> Verdict {
        if let Some(rule) = &self.tripped {
            return Verdict::Tripped(rule.clone());
        }
        let start = self.back_from(self.text.len(), self.rules.window());
        self.text.push_str(delta);
        let lowered = self.text[start..].to_lowercase();
        if let Some(rule) = self.rules.broken(&self.text, &lowered) {
            self.tripped = Some(rule.to_owned());
            return Verdict::Tripped(rule.to_owned());
        }
        let until = self.held_from();
        self.release(until.max(self.released))
    }

    /// Where the text must be held back from: the earlier of the part that could still
    /// begin a term and, when there are patterns, a number still being written.
    fn held_from(&self) -> usize {
        let term = self.term_held_from();
        if self.rules.patterns.is_empty() {
            return term;
        }
        term.min(self.number_held_from())
    }

    /// Where a number at the end of the text begins (its length if the text does not
    /// end in one).
    fn number_held_from(&self) -> usize {
        // The run of number characters the text ends in, from its first digit: what
        // stands before that digit (a space, a bracket) gives nothing away.
        let mut first_digit = self.text.len();
        for (at, c) in self.text.char_indices().rev() {
            if !in_a_number(c) {
                break;
            }
            if c.is_ascii_digit() {
                first_digit = at;
            }
        }
        first_digit
    }

    /// Where the part of the text that could still begin a term starts (its length if
    /// none could).
    fn term_held_from(&self) -> usize {
        let start = self.back_from(self.text.len(), self.rules.window());
        // Each lowercase character, with the byte offset of the character it came from.
        let mut lowered = String::new();
        let mut origins = Vec::new();
        for (at, c) in self.text[start..].char_indices() {
            for l in c.to_lowercase() {
                origins.push((lowered.len(), start + at));
                lowered.push(l);
            }
        }
        origins
            .into_iter()
            .find(|(from, _)| self.rules.begins_a_term(&lowered[*from..]))
            .map_or(self.text.len(), |(_, origin)| origin)
    }

    /// The answer is complete: what is still held back may go out.
    pub fn finish(&mut self) -> Verdict {
        if let Some(rule) = &self.tripped {
            return Verdict::Tripped(rule.clone());
        }
        self.release(self.text.len())
    }

    fn release(&mut self, until: usize) -> Verdict {
        let out = self.text[self.released..until].to_owned();
        self.released = until;
        Verdict::Release(out)
    }

    /// The byte offset `chars` characters before `end` (or 0).
    fn back_from(&self, end: usize, chars: usize) -> usize {
        if chars == 0 {
            return end;
        }
        self.text[..end]
            .char_indices()
            .rev()
            .nth(chars - 1)
            .map_or(0, |(i, _)| i)
    }
}

/// The whole of a complete text, or the rule it breaks.
pub fn check_whole(rules: &OutputRules, text: &str) -> Verdict {
    let mut guard = StreamGuard::new(rules);
    match guard.push(text) {
        Verdict::Tripped(rule) => Verdict::Tripped(rule),
        Verdict::Release(_) => match guard.finish() {
            Verdict::Tripped(rule) => Verdict::Tripped(rule),
            Verdict::Release(_) => Verdict::Release(text.to_owned()),
        },
    }
}

/// The rule the tool calls of an answer break, if any: a call's name and arguments are
/// the model's words too (a forbidden term or someone's personal data can travel in
/// them). `calls` are the streamed pieces, `(index, name, arguments)`, in order.
pub fn calls_break<'c>(
    rules: &OutputRules,
    calls: impl IntoIterator<Item = (u32, Option<&'c str>, &'c str)>,
) -> Option<String> {
    let mut texts: std::collections::BTreeMap<u32, String> = std::collections::BTreeMap::new();
    for (index, name, arguments) in calls {
        let text = texts.entry(index).or_default();
        if let Some(name) = name {
            text.push_str(name);
            text.push(' ');
        }
        text.push_str(arguments);
    }
    texts
        .values()
        .find_map(|text| match check_whole(rules, text) {
            Verdict::Tripped(rule) => Some(rule),
            Verdict::Release(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_arguments_are_guarded_across_their_pieces() {
        let rules = rules();
        let pieces = [
            (0, Some("lookup"), "{\"q\": \"forb"),
            (0, None, "idden-WO"),
            (0, None, "rd\"}"),
        ];
        assert_eq!(calls_break(&rules, pieces), Some("r.forbidden".into()));
        let ssn = [(1, Some("save"), "{\"ssn\": \"123-45-6789\"}")];
        assert_eq!(calls_break(&rules, ssn), Some("pii.ssn".into()));
        let clean = [(0, Some("lookup"), "{\"q\": \"weather\"}")];
        assert_eq!(calls_break(&rules, clean), None);
    }

    fn rules() -> OutputRules {
        OutputRules::new(
            vec![
                ("r.forbidden".into(), "Forbidden-Word".into()),
                ("r.short".into(), "zq".into()),
            ],
            vec![("pii.ssn".into(), r"\b\d{3}-\d{2}-\d{4}\b".into())],
        )
        .unwrap()
    }

    /// Everything released by streaming `deltas`, and the rule that tripped, if any.
    fn stream(rules: &OutputRules, deltas: &[&str]) -> (String, Option<String>) {
        let mut guard = StreamGuard::new(rules);
        let mut out = String::new();
        for delta in deltas {
            match guard.push(delta) {
                Verdict::Release(text) => out.push_str(&text),
                Verdict::Tripped(rule) => return (out, Some(rule)),
            }
        }
        match guard.finish() {
            Verdict::Release(text) => out.push_str(&text),
            Verdict::Tripped(rule) => return (out, Some(rule)),
        }
        (out, None)
    }

    /// A tiny deterministic generator, so the cases are the same on every run.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn a_term_split_across_any_delta_boundaries_never_escapes() {
        let rules = rules();
        let words = ["hello ", "Ünïcode ", "x", " more text ", "forbidden", "-"];
        let term_cases = ["forbidden-word", "FORBIDDEN-WORD", "Forbidden-wOrd"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..3000 {
            let mut text = String::new();
            for _ in 0..(next(&mut seed) % 4) {
                text.push_str(words[(next(&mut seed) % words.len() as u64) as usize]);
            }
            text.push_str(term_cases[case % term_cases.len()]);
            for _ in 0..(next(&mut seed) % 3) {
                text.push_str(words[(next(&mut seed) % words.len() as u64) as usize]);
            }
            // Cut into 1-5 deltas at arbitrary character boundaries.
            let chars: Vec<char> = text.chars().collect();
            let mut cuts: Vec<usize> = (0..(next(&mut seed) % 5))
                .map(|_| (next(&mut seed) % (chars.len() as u64 + 1)) as usize)
                .collect();
            cuts.extend([0, chars.len()]);
            cuts.sort_unstable();
            let deltas: Vec<String> = cuts
                .windows(2)
                .map(|w| chars[w[0]..w[1]].iter().collect())
                .collect();
            let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
            let (released, tripped) = stream(&rules, &refs);
            assert_eq!(tripped.as_deref(), Some("r.forbidden"), "{refs:?}");
            assert!(
                !released.to_lowercase().contains("forbidden-word"),
                "{refs:?} released {released:?}"
            );
            // All that came before the term went out or was held back, never more.
            assert!(text.starts_with(&released));
        }
    }

    #[test]
    fn every_split_of_the_term_into_two_or_three_deltas_is_caught() {
        let rules = rules();
        let text = "say forbidden-word now";
        let n = text.len();
        for i in 0..=n {
            for j in i..=n {
                let deltas = [&text[..i], &text[i..j], &text[j..]];
                let (released, tripped) = stream(&rules, &deltas);
                assert!(tripped.is_some(), "{deltas:?}");
                assert!(!released.contains("forbidden-word"), "{deltas:?}");
            }
        }
    }

    #[test]
    fn clean_text_goes_out_at_once_unless_its_end_could_begin_a_term() {
        let rules = rules();
        let mut guard = StreamGuard::new(&rules);
        assert_eq!(
            guard.push("a harmless answer "),
            Verdict::Release("a harmless answer ".into())
        );
        // "For" may begin "forbidden-word": held until the next delta says otherwise.
        assert_eq!(guard.push("about For"), Verdict::Release("about ".into()));
        assert_eq!(
            guard.push("bidden fruit"),
            Verdict::Release("Forbidden fruit".into())
        );
        assert_eq!(guard.push(" z"), Verdict::Release(" ".into()));
        assert_eq!(guard.finish(), Verdict::Release("z".into()));
        assert_eq!(rules.window(), 13);
    }

    #[test]
    fn patterns_trip_on_the_running_text() {
        let rules = rules();
        let (released, tripped) = stream(&rules, &["my number is 123-4", "5-6789, ok"]);
        assert_eq!(tripped.as_deref(), Some("pii.ssn"));
        assert!(!released.contains("6789"));
        // A number is held until it is whole: no digit of it goes out first.
        assert_eq!(released, "my number is ");
        let (released, tripped) = stream(&rules, &["call 12", "3-45", "-67", "89 now"]);
        assert_eq!(tripped.as_deref(), Some("pii.ssn"));
        assert!(!released.chars().any(|c| c.is_ascii_digit()), "{released}");
    }

    #[test]
    fn numbers_that_break_nothing_go_out_once_written() {
        let rules = rules();
        let mut guard = StreamGuard::new(&rules);
        assert_eq!(guard.push("I have 3"), Verdict::Release("I have ".into()));
        assert_eq!(guard.push("4 apples"), Verdict::Release("34 apples".into()));
        // Without patterns, numbers are not held.
        let terms_only = OutputRules::new(vec![("t".into(), "zq".into())], Vec::new()).unwrap();
        let mut guard = StreamGuard::new(&terms_only);
        assert_eq!(guard.push("I have 3"), Verdict::Release("I have 3".into()));
    }

    #[test]
    fn no_rules_hold_nothing_back() {
        let rules = OutputRules::new(Vec::new(), Vec::new()).unwrap();
        let mut guard = StreamGuard::new(&rules);
        assert_eq!(guard.push("héllo"), Verdict::Release("héllo".into()));
        assert_eq!(check_whole(&rules, "x"), Verdict::Release("x".into()));
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_an_error() {
        assert!(OutputRules::new(Vec::new(), vec![("p".into(), "(".into())]).is_err());
    }
}
