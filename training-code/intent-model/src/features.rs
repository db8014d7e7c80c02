//! Text → sparse feature vectors. This is the only tokenisation there is: the trainer fits it, the
//! fitted vocabulary is saved with the model (`vocab.json`), and the predictor loads that file and
//! runs this same code. (The original system tokenised differently in its predictor than in its
//! trainer; sharing one implementation makes that impossible.)

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The `format` of `vocab.json`.
pub const VOCABULARY_FORMAT: &str = "miniautoml.intent-vocabulary/v1";

/// How a text becomes terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tokenizer {
    /// Word n-gram lengths `[min, max]`; words are runs of two or more letters, digits or `_`,
    /// lowercased. `None`: no word terms.
    pub word_ngrams: Option<[usize; 2]>,
    /// Character n-gram lengths `[min, max]`, taken inside each whitespace-separated token padded
    /// with one space on each side (so n-grams do not cross words). `None`: no character terms.
    pub char_ngrams: Option<[usize; 2]>,
}

/// How term counts become feature values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Weighting {
    /// `(1 + ln tf) · idf`, each block (words, characters) scaled to unit length.
    SublinearTfIdf,
    /// `tf / terms`: the mean of the terms' embeddings (an `EmbeddingBag` in mean mode). Unknown
    /// words count as the term at index 0 (`<unk>`).
    Mean,
}

/// A fitted vocabulary: the tokenizer, the terms and their weights. Serialised as `vocab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vocabulary {
    /// Always [`VOCABULARY_FORMAT`].
    pub format: String,
    /// How texts are split into terms.
    pub tokenizer: Tokenizer,
    /// How counts become values.
    pub weighting: Weighting,
    /// Word terms (feature `i` is `word_terms[i]`).
    pub word_terms: Vec<String>,
    /// Character terms (feature `word_terms.len() + i`).
    pub char_terms: Vec<String>,
    /// Inverse document frequency per feature (empty for [`Weighting::Mean`]).
    pub idf: Vec<f32>,
    #[serde(skip)]
    index: Index,
}

#[derive(Clone, Debug, Default)]
struct Index {
    words: TermIndex,
    chars: TermIndex,
}

/// Term → feature id. Terms of up to 15 bytes (nearly all character n-grams and most words) are
/// keys inline, bytes and length packed in a `u128`, so a lookup reads one bucket and no string
/// elsewhere in memory; longer terms are strings. Hashed with rustc's FxHash (`rustc-hash`): the keys are our own terms,
/// not an attacker's, and SipHash costs more than the lookup.
#[derive(Clone, Debug, Default)]
struct TermIndex {
    short: FxHashMap<u128, u32>,
    long: FxHashMap<String, u32>,
}

impl TermIndex {
    fn short_key(term: &str) -> Option<u128> {
        let bytes = term.as_bytes();
        if bytes.len() > 15 {
            return None;
        }
        let mut key = [0u8; 16];
        key[..bytes.len()].copy_from_slice(bytes);
        key[15] = bytes.len() as u8;
        Some(u128::from_le_bytes(key))
    }

    /// Adds `term`; false if it was there already.
    fn insert(&mut self, term: &str, id: u32) -> bool {
        match TermIndex::short_key(term) {
            Some(key) => self.short.insert(key, id).is_none(),
            None => self.long.insert(term.to_owned(), id).is_none(),
        }
    }

    fn get(&self, term: &str) -> Option<&u32> {
        match TermIndex::short_key(term) {
            Some(key) => self.short.get(&key),
            None => self.long.get(term),
        }
    }
}

/// The sparse features of a batch of texts, row by row: `features[k]` of text `rows[k]` has
/// value `values[k]`. Rows appear in order; within a row, features are sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseBatch {
    /// Number of texts.
    pub len: usize,
    /// Text index of each entry.
    pub rows: Vec<u32>,
    /// Feature index of each entry.
    pub features: Vec<u32>,
    /// Value of each entry.
    pub values: Vec<f32>,
}

/// Options for fitting a vocabulary.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The weighting.
    pub weighting: Weighting,
    /// Keep terms found in at least this many texts.
    pub min_df: usize,
}

impl Tokenizer {
    /// Calls `word` for every word n-gram and `char` for every character n-gram of `text`.
    /// `scratch` is reused between calls to avoid allocations.
    fn terms(
        &self,
        text: &str,
        scratch: &mut Scratch,
        mut word: impl FnMut(&str),
        mut char: impl FnMut(&str),
    ) {
        scratch.lower.clear();
        scratch.lower.extend(text.chars().flat_map(char::to_lowercase));
        let lower = scratch.lower.as_str();
        if let Some([min, max]) = self.word_ngrams {
            scratch.words.clear();
            let mut start = None;
            for (at, c) in lower.char_indices().chain(std::iter::once((lower.len(), ' '))) {
                let is_word = c.is_alphanumeric() || c == '_';
                match (is_word, start) {
                    (true, None) => start = Some(at),
                    (false, Some(from)) => {
                        if lower[from..at].chars().nth(1).is_some() {
                            scratch.words.push((from, at));
                        }
                        start = None;
                    }
                    _ => {}
                }
            }
            for n in min.max(1)..=max {
                for window in scratch.words.windows(n) {
                    if n == 1 {
                        word(&lower[window[0].0..window[0].1]);
                    } else {
                        scratch.gram.clear();
                        for (i, &(from, to)) in window.iter().enumerate() {
                            if i > 0 {
                                scratch.gram.push(' ');
                            }
                            scratch.gram.push_str(&lower[from..to]);
                        }
                        word(&scratch.gram);
                    }
                }
            }
        }
        if let Some([min, max]) = self.char_ngrams {
            for token in lower.split_whitespace() {
                scratch.padded.clear();
                scratch.padded.push(' ');
                scratch.padded.push_str(token);
                scratch.padded.push(' ');
                scratch.bounds.clear();
                scratch
                    .bounds
                    .extend(scratch.padded.char_indices().map(|(at, _)| at));
                scratch.bounds.push(scratch.padded.len());
                let chars = scratch.bounds.len() - 1;
                for n in min.max(1)..=max.min(chars) {
                    for start in 0..=(chars - n) {
                        char(&scratch.padded[scratch.bounds[start]..scratch.bounds[start + n]]);
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Scratch {
    lower: String,
    words: Vec<(usize, usize)>,
    gram: String,
    padded: String,
    bounds: Vec<usize>,
}

impl Vocabulary {
    /// Fits a vocabulary on `texts`: terms sorted (so the same texts give the same feature
    /// indices), idf smoothed as `ln((1 + n) / (1 + df)) + 1`.
    pub fn fit<S: AsRef<str>>(texts: &[S], options: &FitOptions) -> Result<Vocabulary> {
        if options.tokenizer.word_ngrams.is_none() && options.tokenizer.char_ngrams.is_none() {
            return Err(Error::Invalid(
                "the tokenizer has neither word nor character n-grams".into(),
            ));
        }
        let mut word_df: HashMap<String, (usize, usize)> = HashMap::new();
        let mut char_df: HashMap<String, (usize, usize)> = HashMap::new();
        let mut scratch = Scratch::default();
        // (df, last text seen) so a term repeated in one text counts once.
        fn seen(df: &mut HashMap<String, (usize, usize)>, term: &str, text: usize) {
            match df.get_mut(term) {
                Some(entry) => {
                    if entry.1 != text {
                        *entry = (entry.0 + 1, text);
                    }
                }
                None => {
                    df.insert(term.to_owned(), (1, text));
                }
            }
        }
        for (i, text) in texts.iter().enumerate() {
            let (words, chars) = (&mut word_df, &mut char_df);
            options.tokenizer.terms(
                text.as_ref(),
                &mut scratch,
                |t| seen(words, t, i + 1),
                |t| seen(chars, t, i + 1),
            );
        }
        let keep = |df: HashMap<String, (usize, usize)>| {
            let mut terms: Vec<(String, usize)> = df
                .into_iter()
                .filter(|(_, (df, _))| *df >= options.min_df.max(1))
                .map(|(term, (df, _))| (term, df))
                .collect();
            terms.sort_unstable();
            terms
        };
        let (mut words, chars) = (keep(word_df), keep(char_df));
        if options.weighting == Weighting::Mean {
            words.insert(0, ("<unk>".into(), 0));
        }
        let n = texts.len() as f64;
        let idf = match options.weighting {
            Weighting::SublinearTfIdf => words
                .iter()
                .chain(&chars)
                .map(|(_, df)| (((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0) as f32)
                .collect(),
            Weighting::Mean => Vec::new(),
        };
        Vocabulary {
            format: VOCABULARY_FORMAT.into(),
            tokenizer: options.tokenizer.clone(),
            weighting: options.weighting,
            word_terms: words.into_iter().map(|(t, _)| t).collect(),
            char_terms: chars.into_iter().map(|(t, _)| t).collect(),
            idf,
            index: Index::default(),
        }
        .indexed()
    }

    /// Reads `vocab.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Vocabulary> {
        let vocabulary: Vocabulary =
            serde_json::from_slice(bytes).map_err(|e| Error::Invalid(format!("vocab.json: {e}")))?;
        if vocabulary.format != VOCABULARY_FORMAT {
            return Err(Error::Invalid(format!(
                "vocab.json: format {:?}, expected {VOCABULARY_FORMAT:?}",
                vocabulary.format
            )));
        }
        if vocabulary.weighting == Weighting::SublinearTfIdf && vocabulary.idf.len() != vocabulary.len() {
            return Err(Error::Invalid(format!(
                "vocab.json: {} idf values for {} terms",
                vocabulary.idf.len(),
                vocabulary.len()
            )));
        }
        vocabulary.indexed()
    }

    /// `vocab.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a vocabulary serialises")
    }

    fn indexed(mut self) -> Result<Vocabulary> {
        let index = |terms: &[String], offset: usize| -> Result<TermIndex> {
            let mut map = TermIndex::default();
            for (i, term) in terms.iter().enumerate() {
                if !map.insert(term, (offset + i) as u32) {
                    return Err(Error::Invalid(format!("vocabulary: term {term:?} appears twice")));
                }
            }
            Ok(map)
        };
        self.index = Index {
            words: index(&self.word_terms, 0)?,
            chars: index(&self.char_terms, self.word_terms.len())?,
        };
        Ok(self)
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.word_terms.len() + self.char_terms.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features of `texts`.
    pub fn transform<S: AsRef<str>>(&self, texts: &[S]) -> SparseBatch {
        let mut batch = SparseBatch {
            len: texts.len(),
            ..SparseBatch::default()
        };
        let mut scratch = Scratch::default();
        let mut ids = Vec::new();
        let mut char_ids = Vec::new();
        for (row, text) in texts.iter().enumerate() {
            ids.clear();
            char_ids.clear();
            let (words, chars) = (&self.index.words, &self.index.chars);
            let unknown = self.weighting == Weighting::Mean;
            self.tokenizer.terms(
                text.as_ref(),
                &mut scratch,
                |t| match words.get(t) {
                    Some(&id) => ids.push(id),
                    None if unknown => ids.push(0),
                    None => {}
                },
                |t| {
                    if let Some(&id) = chars.get(t) {
                        char_ids.push(id);
                    }
                },
            );
            match self.weighting {
                Weighting::SublinearTfIdf => {
                    self.push_block(&mut ids, row, &mut batch);
                    self.push_block(&mut char_ids, row, &mut batch);
                }
                Weighting::Mean => {
                    let total = ids.len() as f32;
                    ids.sort_unstable();
                    for (id, count) in runs(&ids) {
                        batch.rows.push(row as u32);
                        batch.features.push(id);
                        batch.values.push(count as f32 / total);
                    }
                }
            }
        }
        batch
    }

    fn push_block(&self, ids: &mut [u32], row: usize, batch: &mut SparseBatch) {
        ids.sort_unstable();
        let start = batch.values.len();
        let mut norm = 0.0f32;
        for (id, count) in runs(ids) {
            let value = (1.0 + (count as f32).ln()) * self.idf[id as usize];
            norm += value * value;
            batch.rows.push(row as u32);
            batch.features.push(id);
            batch.values.push(value);
        }
        if norm > 0.0 {
            let norm = norm.sqrt();
            for value in &mut batch.values[start..] {
                *value /= norm;
            }
        }
    }
}

/// `(value, run length)` of a sorted slice.
fn runs(sorted: &[u32]) -> impl Iterator<Item = (u32, usize)> + '_ {
    sorted.chunk_by(|a, b| a == b).map(|run| (run[0], run.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tfidf(min_df: usize) -> FitOptions {
        FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 2]),
                char_ngrams: Some([2, 3]),
            },
            weighting: Weighting::SublinearTfIdf,
            min_df,
        }
    }

    fn terms(tokenizer: &Tokenizer, text: &str) -> (Vec<String>, Vec<String>) {
        let (mut words, mut chars) = (Vec::new(), Vec::new());
        tokenizer.terms(
            text,
            &mut Scratch::default(),
            |t| words.push(t.to_owned()),
            |t| chars.push(t.to_owned()),
        );
        (words, chars)
    }

    #[test]
    fn words_are_lowercased_runs_of_two_or_more_word_characters() {
        let tokenizer = Tokenizer {
            word_ngrams: Some([1, 2]),
            char_ngrams: None,
        };
        let (words, _) = terms(&tokenizer, "I LOVE #Rust, a lot! Ça_va 2x");
        assert_eq!(
            words,
            [
                "love",
                "rust",
                "lot",
                "ça_va",
                "2x",
                "love rust",
                "rust lot",
                "lot ça_va",
                "ça_va 2x"
            ]
        );
    }

    #[test]
    fn character_ngrams_stay_inside_padded_tokens() {
        let tokenizer = Tokenizer {
            word_ngrams: None,
            char_ngrams: Some([2, 3]),
        };
        let (_, chars) = terms(&tokenizer, "Ab é");
        assert_eq!(chars, [" a", "ab", "b ", " ab", "ab ", " é", "é ", " é "]);
    }

    #[test]
    fn features_are_sorted_and_each_block_has_unit_length() {
        let texts = ["good good day", "bad day", "good night"];
        let vocabulary = Vocabulary::fit(&texts, &tfidf(1)).unwrap();
        let batch = vocabulary.transform(&texts);
        assert_eq!(batch.len, 3);
        for row in 0..3u32 {
            let entries: Vec<usize> = (0..batch.rows.len()).filter(|&k| batch.rows[k] == row).collect();
            let features: Vec<u32> = entries.iter().map(|&k| batch.features[k]).collect();
            assert!(features.is_sorted(), "{features:?}");
            let words = vocabulary.word_terms.len() as u32;
            for block in [0..words, words..u32::MAX] {
                let norm: f32 = entries
                    .iter()
                    .filter(|&&k| block.contains(&batch.features[k]))
                    .map(|&k| batch.values[k] * batch.values[k])
                    .sum();
                assert!((norm - 1.0).abs() < 1e-5, "row {row}: {norm}");
            }
        }
        // A repeated word weighs more than a single one, but sublinearly.
        let good = *vocabulary.index.words.get("good").unwrap();
        let day = *vocabulary.index.words.get("day").unwrap();
        let value = |f: u32| {
            batch.values[(0..batch.rows.len())
                .find(|&k| batch.rows[k] == 0 && batch.features[k] == f)
                .unwrap()]
        };
        let ratio = value(good) / value(day);
        let expected = (1.0 + 2f32.ln()) * vocabulary.idf[good as usize] / vocabulary.idf[day as usize];
        assert!((ratio - expected).abs() < 1e-5);
    }

    #[test]
    fn min_df_drops_rare_terms_and_unknown_terms_are_ignored() {
        let texts = ["good day", "good night"];
        let vocabulary = Vocabulary::fit(&texts, &tfidf(2)).unwrap();
        assert_eq!(vocabulary.word_terms, ["good"]);
        let batch = vocabulary.transform(&["nothing known here"]);
        assert!(
            batch
                .features
                .iter()
                .all(|&f| vocabulary.char_terms.len() + 1 > f as usize)
        );
        assert!(!batch.features.contains(&0));
    }

    #[test]
    fn mean_weighting_maps_unknown_words_to_unk() {
        let options = FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 1]),
                char_ngrams: None,
            },
            weighting: Weighting::Mean,
            min_df: 1,
        };
        let vocabulary = Vocabulary::fit(&["aa bb"], &options).unwrap();
        assert_eq!(vocabulary.word_terms, ["<unk>", "aa", "bb"]);
        let batch = vocabulary.transform(&["aa zz zz aa"]);
        assert_eq!(batch.features, [0, 1]);
        assert_eq!(batch.values, [0.5, 0.5]);
    }

    #[test]
    fn the_saved_vocabulary_gives_identical_features() {
        let texts = ["Some text, with words!", "other words 🙂"];
        let vocabulary = Vocabulary::fit(&texts, &tfidf(1)).unwrap();
        let loaded = Vocabulary::from_json(&vocabulary.to_json()).unwrap();
        assert_eq!(loaded.transform(&texts), vocabulary.transform(&texts));
        let mut broken: serde_json::Value = serde_json::from_slice(&vocabulary.to_json()).unwrap();
        broken["idf"] = serde_json::json!([1.0]);
        let error = Vocabulary::from_json(&serde_json::to_vec(&broken).unwrap()).unwrap_err();
        assert!(error.to_string().contains("idf values"), "{error}");
    }
}
