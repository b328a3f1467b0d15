//! The words of every record of a prepared answer, indexed by their first three bytes, so a
//! question is scored against all records in one pass over its terms.
//!
//! A term matches a word when one starts with the other (see
//! [`crate::render::records::term_matches`]). Terms are at least three characters long, and a
//! word shorter than a term can only match it when the word has four or more bytes, so any
//! match shares its first three bytes. Looking each term up by those bytes replaces comparing
//! every term with every word of every record, which was the largest cost of scoring an
//! answer (docs/benchmarks.md). The scores are exactly [`crate::render::records::relevance`]'s
//! (a test below holds it to that).

use std::collections::HashSet;

use crate::render::records::term_matches;

/// One distinct lower-cased word of one record: the word is `words[start..start + len]`.
/// Sixteen bytes, with the text in one buffer, so the entries a key selects are compared
/// without a pointer chase to a heap string each.
#[derive(Debug)]
struct Entry {
    key: u32,
    record: u32,
    start: u32,
    len: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct WordIndex {
    /// Sorted by `key`.
    entries: Vec<Entry>,
    /// Every entry's word, one after the other.
    words: String,
    records: usize,
}

/// The first three bytes of a word or term; [`SHORT`] for one of fewer bytes.
fn key_of(text: &[u8]) -> u32 {
    match text {
        [a, b, c, ..] => u32::from_le_bytes([*a, *b, *c, 0]),
        _ => SHORT,
    }
}

/// The key of words under three bytes (lower-casing can shorten a word: "K", the Kelvin sign,
/// becomes "k"). No three bytes give it, so only short terms, which compare with every word,
/// ever meet such a word.
const SHORT: u32 = u32::MAX;

impl WordIndex {
    /// Index the contents of the records, in order (record `i` is the `i`-th content).
    pub fn build<'a>(contents: impl IntoIterator<Item = &'a str>) -> Self {
        let mut entries = Vec::new();
        let mut words = String::new();
        let mut records = 0;
        for (record, content) in contents.into_iter().enumerate() {
            records += 1;
            let mut seen = HashSet::new();
            for word in content
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() >= 3)
                .map(str::to_lowercase)
            {
                // Offsets are u32: a record set past 4 GiB is not indexed further (records
                // are a few kilobytes; the answer cache's budget is far below that).
                let (Ok(start), Ok(len)) = (u32::try_from(words.len()), u32::try_from(word.len()))
                else {
                    break;
                };
                if !seen.insert(word.clone()) {
                    continue;
                }
                entries.push(Entry {
                    key: key_of(word.as_bytes()),
                    record: u32::try_from(record).unwrap_or(u32::MAX),
                    start,
                    len,
                });
                words.push_str(&word);
            }
        }
        entries.sort_by_key(|e| e.key);
        Self {
            entries,
            words,
            records,
        }
    }

    /// For each record, the share of `terms` some word of it matches (0 without terms).
    pub fn relevance(&self, terms: &[String]) -> Vec<f64> {
        if terms.is_empty() {
            return vec![0.0; self.records];
        }
        let blocks = terms.len().div_ceil(64);
        let mut matched = vec![0u64; self.records * blocks];
        for (i, term) in terms.iter().enumerate() {
            let (block, bit) = (i / 64, 1u64 << (i % 64));
            let key = key_of(term.as_bytes());
            let candidates = if key != SHORT {
                let start = self.entries.partition_point(|e| e.key < key);
                let end = start + self.entries[start..].partition_point(|e| e.key == key);
                &self.entries[start..end]
            } else {
                // Only a caller other than `terms_of` passes such a term: compare with all.
                &self.entries[..]
            };
            for entry in candidates {
                let word = self
                    .words
                    .get(entry.start as usize..entry.start as usize + entry.len as usize)
                    .unwrap_or_default();
                if term_matches(term, word) {
                    matched[entry.record as usize * blocks + block] |= bit;
                }
            }
        }
        matched
            .chunks(blocks)
            .map(|masks| {
                let hits: u32 = masks.iter().map(|m| m.count_ones()).sum();
                f64::from(hits) / terms.len() as f64
            })
            .collect()
    }

    /// Heap bytes held, for the answer cache's budget.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.words.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::records::{relevance, terms_of};

    #[test]
    fn scores_are_relevance() {
        let contents = [
            "User actions (3 actions):\n- click \"Click Export CSV\" (https://app/reports)",
            "Ärger mit der Rechnung: ÖFFNEN, Übersicht, ΣΊΣΥΦΟΣ straße ǅemal \u{212a}\u{212a} \u{212a}",
            "",
            "a an the exp exports EXPORTING projector",
            "export export EXPORT csv",
        ];
        let index = WordIndex::build(contents);
        let many: Vec<String> = (0..70).map(|i| format!("exp{i}")).collect();
        let short: Vec<String> = vec!["ex".into(), "k".into(), "".into(), "csv".into()];
        for question in [
            "how do I export a csv?",
            "rechnung öffnen σίσυφος",
            "exp proj",
            "kk \u{212a}\u{212a}",
            "",
        ] {
            for terms in [terms_of(question), many.clone(), short.clone()] {
                let got = index.relevance(&terms);
                assert_eq!(got.len(), contents.len());
                for (content, score) in contents.iter().zip(got) {
                    assert_eq!(
                        score,
                        relevance(&terms, content),
                        "{terms:?} in {content:?}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
        /// Any contents and any question (ASCII, Latin, Greek, Kelvin signs, digits,
        /// punctuation): the index scores exactly as `relevance` reads the content.
        #[test]
        fn any_text_scores_as_relevance(
            contents in proptest::collection::vec("[a-zA-Z0-9 Ää ÖößΣσς\u{212a}.,:/-]{0,60}", 0..6),
            question in "[a-zA-Z0-9 ÄäÖößΣσς\u{212a}?]{0,40}",
        ) {
            let index = WordIndex::build(contents.iter().map(String::as_str));
            let terms = terms_of(&question);
            let got = index.relevance(&terms);
            proptest::prop_assert_eq!(got.len(), contents.len());
            for (content, score) in contents.iter().zip(got) {
                proptest::prop_assert_eq!(score, relevance(&terms, content));
            }
        }
    }

    #[test]
    fn no_records_no_scores() {
        let index = WordIndex::build([]);
        assert!(index.relevance(&terms_of("export csv")).is_empty());
        assert_eq!(index.bytes(), 0);
    }
}
