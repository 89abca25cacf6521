//! Tokenization for the text tower.
//!
//! `tokenizer.json` files often carry their own padding and truncation (MiniLM's pads and
//! truncates to 128); those are replaced: texts are truncated to the bundle's `max_length`
//! (special tokens included, longest-first, from the right, as `enable_truncation(max_length)`
//! does in Python) and a batch is padded to its longest member with the tokenizer's pad token.

use std::path::Path;

use rayon::prelude::*;
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

/// A padded batch of token ids, row-major `[rows, len]`, as the int64 tensors the graph takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenBatch {
    pub rows: usize,
    pub len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

#[derive(Debug)]
pub(crate) struct TextTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_type_id: u32,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` and installs the bundle's truncation. Errors are messages for
    /// [`EncoderError::Tokenizer`](crate::EncoderError::Tokenizer).
    pub fn load(path: &Path, max_length: usize) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        Self::from_bytes(&bytes, max_length)
    }

    pub fn from_bytes(json: &[u8], max_length: usize) -> Result<Self, String> {
        let mut tokenizer = Tokenizer::from_bytes(json).map_err(|e| e.to_string())?;
        // Keep the file's pad token; fall back to BERT's [PAD], then id 0.
        let (pad_id, pad_type_id) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id),
            None => (tokenizer.token_to_id("[PAD]").unwrap_or(0), 0),
        };
        tokenizer.with_padding(None);
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length <= special {
            return Err(format!(
                "max_length {max_length} leaves no room for text after the {special} special tokens"
            ));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("cannot truncate to max_length {max_length}: {e}"))?;
        Ok(TextTokenizer {
            tokenizer,
            pad_id,
            pad_type_id,
        })
    }

    /// Token ids of one text, special tokens included, truncated.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// Tokenizes `texts` (in parallel) and pads them to the longest. On failure returns the
    /// index of the first text that failed and the tokenizer's message.
    pub fn batch(&self, texts: &[&str]) -> Result<TokenBatch, (usize, String)> {
        let encodings = texts
            .par_iter()
            .enumerate()
            .map(|(i, text)| {
                self.tokenizer
                    .encode(*text, true)
                    .map_err(|e| (i, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let rows = encodings.len();
        let mut batch = TokenBatch {
            rows,
            len,
            input_ids: Vec::with_capacity(rows * len),
            attention_mask: Vec::with_capacity(rows * len),
            token_type_ids: Vec::with_capacity(rows * len),
        };
        for e in &encodings {
            let pad = len - e.len();
            batch
                .input_ids
                .extend(e.get_ids().iter().map(|&t| i64::from(t)));
            batch
                .input_ids
                .extend(std::iter::repeat_n(i64::from(self.pad_id), pad));
            batch
                .attention_mask
                .extend(e.get_attention_mask().iter().map(|&t| i64::from(t)));
            batch.attention_mask.extend(std::iter::repeat_n(0, pad));
            batch
                .token_type_ids
                .extend(e.get_type_ids().iter().map(|&t| i64::from(t)));
            batch
                .token_type_ids
                .extend(std::iter::repeat_n(i64::from(self.pad_type_id), pad));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BERT-style WordPiece tokenizer with MiniLM's fixed 128 padding and truncation, small
    /// enough to write inline.
    const TOKENIZER: &str = r###"{
      "version": "1.0",
      "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
      "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                  "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
      "added_tokens": [
        {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
        "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "red": 5, "apple": 6, "bike": 7, "##s": 8}}
    }"###;

    fn tokenizer(max_length: usize) -> TextTokenizer {
        TextTokenizer::from_bytes(TOKENIZER.as_bytes(), max_length).unwrap()
    }

    #[test]
    fn file_padding_is_replaced_by_batch_longest() {
        let t = tokenizer(64);
        let batch = t.batch(&["a red apple", "bikes"]).unwrap();
        assert_eq!((batch.rows, batch.len), (2, 5));
        assert_eq!(batch.input_ids, [2, 4, 5, 6, 3, 2, 7, 8, 3, 0]);
        assert_eq!(batch.attention_mask, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.token_type_ids, [0; 10]);
        assert_eq!(t.ids("A RED apple").unwrap(), [2, 4, 5, 6, 3]);
    }

    #[test]
    fn long_text_is_truncated_to_max_length() {
        let t = tokenizer(6);
        let long = "a red apple ".repeat(100);
        let ids = t.ids(&long).unwrap();
        assert_eq!(ids, [2, 4, 5, 6, 4, 3]);
        let batch = t.batch(&[&long, "a"]).unwrap();
        assert_eq!(batch.len, 6);
    }

    #[test]
    fn empty_text_is_just_the_special_tokens() {
        let t = tokenizer(64);
        assert_eq!(t.ids("").unwrap(), [2, 3]);
        let batch = t.batch(&[""]).unwrap();
        assert_eq!(batch.input_ids, [2, 3]);
        assert_eq!(
            t.ids("zebra").unwrap(),
            [2, 1, 3],
            "unknown words map to [UNK]"
        );
    }

    #[test]
    fn empty_batch() {
        let batch = tokenizer(8).batch(&[]).unwrap();
        assert_eq!((batch.rows, batch.len), (0, 0));
    }

    #[test]
    fn max_length_without_room_for_special_tokens_is_refused() {
        assert!(TextTokenizer::from_bytes(TOKENIZER.as_bytes(), 1).is_err());
        assert!(TextTokenizer::from_bytes(TOKENIZER.as_bytes(), 2).is_err());
        assert!(TextTokenizer::from_bytes(b"{not json", 8).is_err());
    }
}
