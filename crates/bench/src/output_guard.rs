//! What slm's output guard adds to a streamed answer: the time each delta spends in
//! the guard before it may go out, with the shipped constitution's terms and patterns
//! (PII included), over answers streamed a word at a time. The first delta's share is
//! what the guard adds to the time to first token; the rules themselves are fetched
//! from policy once per tenant every few seconds, which the gateway figures include.

use std::time::{Duration, Instant};

use somagent_common::constitution::Constitution;
use somagent_slm::domain::output_guard::{OutputRules, StreamGuard, Verdict};

use crate::stats::Samples;

const ANSWER: &str = "Sure. Here is a short overview of the quarterly figures you asked for, \
    with the main drivers of growth, the risks we see for the next quarter, and what the \
    team proposes to do about each of them; the appendix lists every source by name. ";

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let compiled = somagent_policy::domain::rego::compile(
        "bench",
        &Constitution::default_document(),
        "bench",
        &[],
    );
    let guard = &compiled.output_guard;
    let rules = OutputRules::new(guard.terms.clone(), guard.patterns.clone())?;
    let answer = ANSWER.repeat(8);
    let words: Vec<&str> = answer.split_inclusive(' ').collect();
    let (mut first, mut every) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let mut stream = StreamGuard::new(&rules);
        for (i, word) in words.iter().enumerate() {
            let t = Instant::now();
            let verdict = stream.push(word);
            let took = t.elapsed();
            anyhow::ensure!(
                matches!(verdict, Verdict::Release(_)),
                "a clean answer tripped the guard"
            );
            if i == 0 {
                first.push(took);
            }
            every.push(took);
        }
    }
    println!(
        "== output guard, shipped constitution ({} terms, {} patterns), {}-word answers ({seconds} s)",
        guard.terms.len(),
        guard.patterns.len(),
        words.len()
    );
    println!(
        "first delta (added to time to first token) {}",
        Samples::new(first).summary()
    );
    println!(
        "every delta                                {}",
        Samples::new(every).summary()
    );
    Ok(())
}
