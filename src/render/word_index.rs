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

use smallvec::SmallVec;

use crate::render::records::{Terms, term_matches};

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

/// Where the entries of one key lie: `entries[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u32,
    start: u32,
    end: u32,
}

/// The key of an unused [`Slot`]: [`key_of`] never gives it (its fourth byte is zero, unless
/// it is [`SHORT`]).
const EMPTY: u32 = 0xFF00_0000;

/// See the module docs.
#[derive(Debug, Default)]
pub struct WordIndex {
    /// Sorted by `key`.
    entries: Vec<Entry>,
    /// Each key's run of `entries`, by open addressing (at most half full, so a probe for a
    /// key that is not there soon meets an empty slot). A term is looked up with one or two
    /// reads here where a binary search over `entries` read a dozen places of an index that is
    /// rarely in the CPU's caches (docs/benchmarks.md). Empty when there are no entries.
    slots: Box<[Slot]>,
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

/// Match masks [`WordIndex::relevance_each`] keeps on the stack: a session's records (its
/// summary and up to 50 chunks) fit, for questions of up to 64 terms.
const STACK_MASKS: usize = 64;

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
        let slots = slots_of(&entries);
        Self {
            entries,
            slots,
            words,
            records,
        }
    }

    /// The entries whose word starts with the three bytes of `key`.
    fn entries_of(&self, key: u32) -> &[Entry] {
        if self.slots.is_empty() {
            return &[];
        }
        let mask = self.slots.len() - 1;
        let mut at = slot_of(key, self.slots.len());
        // At most half the slots are used, so an empty one ends every probe.
        for _ in 0..self.slots.len() {
            let slot = self.slots[at];
            if slot.key == key {
                return self
                    .entries
                    .get(slot.start as usize..slot.end as usize)
                    .unwrap_or_default();
            }
            if slot.key == EMPTY {
                break;
            }
            at = (at + 1) & mask;
        }
        &[]
    }

    /// For each record in order, the share of `terms` some word of it matches (0 without
    /// terms), handed to `each` instead of collected, so scoring an answer allocates nothing;
    /// the terms each record matched are kept on the stack for up to [`STACK_MASKS`] records.
    pub fn relevance_each(&self, terms: &Terms, mut each: impl FnMut(f64)) {
        if terms.is_empty() {
            (0..self.records).for_each(|_| each(0.0));
            return;
        }
        let blocks = terms.len().div_ceil(64);
        let len = self.records * blocks;
        let mut matched: SmallVec<[u64; STACK_MASKS]> = smallvec::smallvec![0; len];
        for (i, term) in terms.iter().enumerate() {
            let (block, bit) = (i / 64, 1u64 << (i % 64));
            let key = key_of(term.as_bytes());
            let candidates = if key != SHORT {
                self.entries_of(key)
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
        for masks in matched.chunks(blocks) {
            let hits: u32 = masks.iter().map(|m| m.count_ones()).sum();
            each(f64::from(hits) / terms.len() as f64);
        }
    }

    /// Heap bytes held, for the answer cache's budget.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.slots.len() * std::mem::size_of::<Slot>()
            + self.words.capacity()
    }
}

/// The first slot to probe for `key` in a table of `len` slots (a power of two).
fn slot_of(key: u32, len: usize) -> usize {
    // Fibonacci hashing: the multiply spreads the three bytes over the high bits.
    let spread = u64::from(key.wrapping_mul(0x9E37_79B9));
    ((spread * len as u64) >> 32) as usize
}

/// The slot table for `entries` (sorted by key): one slot per key but [`SHORT`], which is
/// never looked up.
fn slots_of(entries: &[Entry]) -> Box<[Slot]> {
    let runs = entries.chunk_by(|a, b| a.key == b.key);
    let keys = runs.clone().filter(|run| run[0].key != SHORT).count();
    if keys == 0 {
        return Box::default();
    }
    let len = (keys * 2).next_power_of_two();
    let mut slots = vec![
        Slot {
            key: EMPTY,
            start: 0,
            end: 0
        };
        len
    ];
    let mut start = 0usize;
    for run in runs {
        let end = start + run.len();
        let key = run[0].key;
        if key != SHORT
            && let (Ok(first), Ok(last)) = (u32::try_from(start), u32::try_from(end))
        {
            let mut at = slot_of(key, len);
            while slots[at].key != EMPTY {
                at = (at + 1) & (len - 1);
            }
            slots[at] = Slot {
                key,
                start: first,
                end: last,
            };
        }
        start = end;
    }
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::records::{Terms, relevance, terms_of};

    /// Every record's score, collected.
    fn scores(index: &WordIndex, terms: &Terms) -> Vec<f64> {
        let mut scores = Vec::new();
        index.relevance_each(terms, |score| scores.push(score));
        scores
    }

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
        let many = Terms::from_words((0..70).map(|i| format!("exp{i}")));
        let short = Terms::from_words(["ex", "k", "", "csv"]);
        for question in [
            "how do I export a csv?",
            "rechnung öffnen σίσυφος",
            "exp proj",
            "kk \u{212a}\u{212a}",
            "",
        ] {
            for terms in [terms_of(question), many.clone(), short.clone()] {
                let got = scores(&index, &terms);
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
            let got = scores(&index, &terms);
            proptest::prop_assert_eq!(got.len(), contents.len());
            for (content, score) in contents.iter().zip(got) {
                proptest::prop_assert_eq!(score, relevance(&terms, content));
            }
        }
    }

    /// Every key finds exactly its run of entries, through collisions and the table's wrap,
    /// and a key not indexed finds none.
    #[test]
    fn slots_find_each_run_and_nothing_else() {
        let words: Vec<String> = (0..2000u32)
            .map(|i| format!("{}{}{}x", (b'a' + (i % 26) as u8) as char, i / 26 % 40, i))
            .collect();
        let contents = [words[..1000].join(" "), words[1000..].join(" ")];
        let index = WordIndex::build(contents.iter().map(String::as_str));
        assert!(index.slots.len() >= 2 * index.entries.chunk_by(|a, b| a.key == b.key).count());
        for run in index.entries.chunk_by(|a, b| a.key == b.key) {
            let found = index.entries_of(run[0].key);
            assert_eq!(found.len(), run.len());
            assert!(std::ptr::eq(found.as_ptr(), run.as_ptr()));
        }
        for absent in [b"zzz", b"~~~", b"q9q"] {
            assert!(index.entries_of(key_of(absent)).is_empty());
        }
        assert!(WordIndex::build([]).entries_of(key_of(b"abc")).is_empty());
    }

    #[test]
    fn no_records_no_scores() {
        let index = WordIndex::build([]);
        assert!(scores(&index, &terms_of("export csv")).is_empty());
        assert_eq!(index.bytes(), 0);
    }
}
