//! Reciprocal rank fusion: the vector search and the full-text search each rank what
//! they found; an item's fused score is the sum over the lists of `1 / (K + rank)`.
//! Ranks, not scores, are fused: a cosine and a BM25 score are on different scales, and
//! ranks make an exact name found only by the full-text search count as much as a
//! paraphrase found only by the vector search.

use std::collections::HashMap;
use std::hash::Hash;

/// The constant of the original paper (Cormack et al., 2009): high enough that the
/// first few ranks of one list do not drown the other.
pub const K: f64 = 60.0;

/// The items of `lists` (each best first) by fused score, best first; ties keep the
/// order of first appearance.
pub fn fuse<T: Clone + Eq + Hash>(lists: &[Vec<T>]) -> Vec<(T, f64)> {
    let mut scores: HashMap<T, (f64, usize)> = HashMap::new();
    let mut seen = 0;
    for list in lists {
        for (rank, item) in list.iter().enumerate() {
            let entry = scores.entry(item.clone()).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            entry.0 += 1.0 / (K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(T, f64, usize)> = scores.into_iter().map(|(t, (s, o))| (t, s, o)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.into_iter().map(|(t, s, _)| (t, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_both_lists_found_beats_one_only_one_found_first() {
        let vector = vec!["paraphrase", "both", "c"];
        let text = vec!["exact-id", "both"];
        let fused = fuse(&[vector, text]);
        let order: Vec<&str> = fused.iter().map(|(t, _)| *t).collect();
        assert_eq!(order[0], "both");
        // The two firsts tie; the vector list's came first.
        assert_eq!(&order[1..3], ["paraphrase", "exact-id"]);
        assert_eq!(order.len(), 4);
        assert!((fused[1].1 - 1.0 / 61.0).abs() < 1e-12);
    }

    #[test]
    fn no_lists_fuse_to_nothing() {
        assert!(fuse::<u32>(&[]).is_empty());
        assert!(fuse::<u32>(&[vec![], vec![]]).is_empty());
    }
}
