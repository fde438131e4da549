//! Documents into chunks by their structure: headings start sections, paragraphs, list
//! items and code blocks are the units packed into chunks up to a token budget, and a
//! chunk starts with the end of the one before it in the same section (the overlap), so
//! a sentence cut at a boundary is whole in one of them. A unit larger than the budget
//! is cut at sentence ends, then at words. Every chunk keeps its section's heading path
//! (cited with it, and embedded with it: a passage out of context loses its subject)
//! and where it lies in the source.

/// How chunks are cut.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRules {
    /// The most tokens a chunk's text may have.
    pub max_tokens: usize,
    /// Tokens of the previous chunk repeated at the start of the next.
    pub overlap_tokens: usize,
}

impl Default for ChunkRules {
    /// Sized for all-MiniLM-L6-v2, which reads 256 word pieces: the heading path and
    /// the word-piece count running above the word estimate stay within it.
    fn default() -> Self {
        Self {
            max_tokens: 160,
            overlap_tokens: 24,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// From 0, in document order.
    pub position: u32,
    /// The headings above it, outermost first, joined by ` > `; empty before any.
    pub section: String,
    pub text: String,
    /// Where its own text (not the overlap) starts and ends in the source, in bytes.
    pub start: usize,
    pub end: usize,
}

impl Chunk {
    /// What is embedded: the section's headings, then the text.
    pub fn embedded_text(&self) -> String {
        if self.section.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n\n{}", self.section, self.text)
        }
    }
}

/// Tokens of `text` as the budget counts them: word pieces run about a third above
/// words for English prose, and long words and numbers cost more.
pub fn estimate_tokens(text: &str) -> usize {
    text.split_whitespace()
        .map(|w| 1 + w.chars().count() / 6)
        .sum::<usize>()
        .max(usize::from(!text.trim().is_empty()))
}

/// A unit of the source: a heading, or a block of text under the current headings.
#[derive(Debug)]
enum Unit<'a> {
    Heading { level: usize, title: &'a str },
    Block { text: &'a str, start: usize },
}

/// Markdown (or plain text, which is Markdown without headings) into units: headings,
/// and blocks separated by blank lines; a fenced code block is one block, blank lines
/// and all.
fn units(source: &str) -> Vec<Unit<'_>> {
    let mut units = Vec::new();
    let mut block: Option<(usize, usize)> = None;
    let mut fence: Option<&str> = None;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        if let Some(marker) = fence {
            block = Some((block.map_or(start, |b| b.0), offset));
            if trimmed.starts_with(marker) {
                fence = None;
                close_block(source, &mut block, &mut units);
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            close_block(source, &mut block, &mut units);
            fence = Some(&trimmed[..3]);
            block = Some((start, offset));
            continue;
        }
        let hashes = trimmed.bytes().take_while(|b| *b == b'#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            close_block(source, &mut block, &mut units);
            units.push(Unit::Heading {
                level: hashes,
                title: trimmed[hashes..].trim().trim_end_matches('#').trim(),
            });
            continue;
        }
        if trimmed.is_empty() {
            close_block(source, &mut block, &mut units);
            continue;
        }
        block = Some((block.map_or(start, |b| b.0), offset));
    }
    close_block(source, &mut block, &mut units);
    units
}

/// Ends the block being read, keeping it as a unit if it holds any text.
fn close_block<'a>(source: &'a str, block: &mut Option<(usize, usize)>, units: &mut Vec<Unit<'a>>) {
    if let Some((start, end)) = block.take() {
        let text = source[start..end].trim_end();
        if !text.trim().is_empty() {
            units.push(Unit::Block { text, start });
        }
    }
}

/// Pieces of `text` (at byte `start` of the source) of at most `max` tokens: whole
/// sentences where they fit, else runs of words.
fn split_block(text: &str, start: usize, max: usize) -> Vec<(String, usize, usize)> {
    if estimate_tokens(text) <= max {
        return vec![(text.to_owned(), start, start + text.len())];
    }
    // Sentences: up to and including `.`, `!` or `?` followed by whitespace.
    let mut sentences = Vec::new();
    let mut begin = 0;
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let ends = matches!(b, b'.' | b'!' | b'?' | b'\n')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if ends {
            sentences.push((begin, i + 1));
            begin = i + 1;
        }
    }
    if begin < text.len() {
        sentences.push((begin, text.len()));
    }
    let mut pieces = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let flush = |current: &mut Option<(usize, usize)>, pieces: &mut Vec<_>| {
        if let Some((a, b)) = current.take() {
            let piece = text[a..b].trim();
            if !piece.is_empty() {
                let lead = text[a..b].len() - text[a..b].trim_start().len();
                pieces.push((
                    piece.to_owned(),
                    start + a + lead,
                    start + a + lead + piece.len(),
                ));
            }
        }
    };
    for (a, b) in sentences {
        let sentence = &text[a..b];
        if estimate_tokens(sentence) > max {
            flush(&mut current, &mut pieces);
            // Words, as many as fit.
            let mut run: Option<(usize, usize)> = None;
            for (offset, word) in word_spans(sentence) {
                let (wa, wb) = (a + offset, a + offset + word.len());
                let grown = run.map_or((wa, wb), |(ra, _)| (ra, wb));
                if run.is_some() && estimate_tokens(&text[grown.0..grown.1]) > max {
                    flush(&mut run, &mut pieces);
                    run = Some((wa, wb));
                } else {
                    run = Some(grown);
                }
            }
            flush(&mut run, &mut pieces);
            continue;
        }
        let grown = current.map_or((a, b), |(ca, _)| (ca, b));
        if current.is_some() && estimate_tokens(&text[grown.0..grown.1]) > max {
            flush(&mut current, &mut pieces);
            current = Some((a, b));
        } else {
            current = Some(grown);
        }
    }
    flush(&mut current, &mut pieces);
    pieces
}

fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace()
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// The last `tokens` tokens' worth of whole words of `text`.
fn tail(text: &str, tokens: usize) -> &str {
    if tokens == 0 {
        return "";
    }
    let words: Vec<(usize, &str)> = word_spans(text).collect();
    let mut taken = 0;
    let mut from = text.len();
    for (offset, word) in words.iter().rev() {
        taken += estimate_tokens(word);
        if taken > tokens {
            break;
        }
        from = *offset;
    }
    &text[from..]
}

/// Cuts `source` (Markdown or plain text) into chunks under `rules`.
pub fn chunk(source: &str, rules: ChunkRules) -> Vec<Chunk> {
    let max = rules.max_tokens.max(8);
    let overlap = rules.overlap_tokens.min(max / 2);
    let mut headings: Vec<(usize, &str)> = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    // The chunk being filled: its section, text, and source span.
    let mut open: Option<(String, String, usize, usize)> = None;
    let close = |open: &mut Option<(String, String, usize, usize)>, chunks: &mut Vec<Chunk>| {
        if let Some((section, text, start, end)) = open.take() {
            chunks.push(Chunk {
                position: chunks.len() as u32,
                section,
                text,
                start,
                end,
            });
        }
    };
    for unit in units(source) {
        match unit {
            Unit::Heading { level, title } => {
                close(&mut open, &mut chunks);
                headings.retain(|(l, _)| *l < level);
                headings.push((level, title));
            }
            Unit::Block { text, start } => {
                let section = headings
                    .iter()
                    .map(|(_, t)| *t)
                    .collect::<Vec<_>>()
                    .join(" > ");
                for (piece, a, b) in split_block(text, start, max - overlap) {
                    if let Some((open_section, open_text, _, end)) = open.as_mut() {
                        let joined = format!("{open_text}\n\n{piece}");
                        if *open_section == section && estimate_tokens(&joined) <= max {
                            *open_text = joined;
                            *end = b;
                            continue;
                        }
                    }
                    // A new chunk, opening with the end of the last one in this section.
                    let lead = match open.as_ref() {
                        Some((s, t, _, _)) if *s == section => tail(t, overlap).to_owned(),
                        _ => chunks
                            .last()
                            .filter(|c| c.section == section && open.is_none())
                            .map(|c| tail(&c.text, overlap).to_owned())
                            .unwrap_or_default(),
                    };
                    close(&mut open, &mut chunks);
                    let text = if lead.is_empty() {
                        piece
                    } else {
                        format!("{lead} {piece}")
                    };
                    open = Some((section.clone(), text, a, b));
                }
            }
        }
    }
    close(&mut open, &mut chunks);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = "# Deploying\n\nIntro paragraph about deploying the service.\n\n## Kubernetes\n\nUse the Helm chart. Set replicas to three.\n\n```yaml\nreplicas: 3\n\nimage: somagent\n```\n\n## Secrets\n\nThe master key lives in a Secret.\n";

    #[test]
    fn headings_make_sections_and_code_blocks_stay_whole() {
        let chunks = chunk(GUIDE, ChunkRules::default());
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(
            sections,
            ["Deploying", "Deploying > Kubernetes", "Deploying > Secrets"]
        );
        assert!(chunks[1].text.contains("replicas: 3\n\nimage: somagent"));
        assert_eq!(chunks[2].text, "The master key lives in a Secret.");
        assert_eq!(&GUIDE[chunks[2].start..chunks[2].end], chunks[2].text);
        assert_eq!(
            chunks[2].embedded_text(),
            "Deploying > Secrets\n\nThe master key lives in a Secret."
        );
        assert_eq!(
            chunks.iter().map(|c| c.position).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn long_text_is_cut_within_the_budget_with_overlap_and_nothing_lost() {
        let sentences: Vec<String> = (0..200)
            .map(|i| format!("Sentence number {i} says something about item{i}."))
            .collect();
        let text = sentences.join(" ");
        let rules = ChunkRules {
            max_tokens: 60,
            overlap_tokens: 10,
        };
        let chunks = chunk(&text, rules);
        assert!(chunks.len() > 10);
        for c in &chunks {
            assert!(estimate_tokens(&c.text) <= 60, "{}", c.text);
        }
        // Every sentence is whole in some chunk.
        for s in &sentences {
            assert!(chunks.iter().any(|c| c.text.contains(s.as_str())), "{s}");
        }
        // A chunk after the first opens with the end of the one before.
        let last_word = chunks[0].text.split_whitespace().last().unwrap();
        assert!(chunks[1].text.starts_with(tail(&chunks[0].text, 10)));
        assert!(chunks[1].text.contains(last_word));
        // Spans cover the source in order.
        assert!(chunks.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn a_sentence_longer_than_the_budget_is_cut_at_words() {
        let text = "word ".repeat(500);
        let chunks = chunk(
            &text,
            ChunkRules {
                max_tokens: 50,
                overlap_tokens: 0,
            },
        );
        assert!(chunks.len() >= 10);
        assert!(chunks.iter().all(|c| estimate_tokens(&c.text) <= 50));
        let words: usize = chunks
            .iter()
            .map(|c| c.text.split_whitespace().count())
            .sum();
        assert_eq!(words, 500);
    }

    #[test]
    fn empty_and_blank_sources_give_no_chunks() {
        assert!(chunk("", ChunkRules::default()).is_empty());
        assert!(chunk("\n\n   \n", ChunkRules::default()).is_empty());
        assert_eq!(chunk("# Only a heading", ChunkRules::default()), Vec::new());
    }
}
