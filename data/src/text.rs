//! Raw text for language modelling: vocabularies, token streams and
//! fixed-length windows.
//!
//! A [`TextCorpus`] is a file's text tokenized at the character level (the
//! vocabulary is the sorted set of distinct characters, as in char-rnn and
//! nanoGPT) or at the byte level (256 ids). [`TokenWindows`] turns a token
//! range into a dataset of `input`/`target` pairs of `context` tokens, the
//! target shifted by one. [`TextCorpus::split_windows`] splits by position:
//! the first `train_fraction` of the tokens for training, the rest for
//! validation, so the two never overlap.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, check_index};
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::gzip::read_maybe_gzip;
use crate::tensor::HostTensor;

/// How text is split into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per Unicode scalar value; the vocabulary is built from the
    /// text's sorted distinct characters.
    Char,
    /// One token per byte; the vocabulary is all 256 byte values.
    Byte,
}

/// Serialized form of a [`Vocab`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum VocabRepr {
    Byte,
    Char { chars: String },
}

/// A token vocabulary: byte-level, or character-level over a sorted set of
/// characters. Serializable (e.g. as JSON next to a checkpoint) so a model
/// can decode its samples later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabRepr", into = "VocabRepr")]
pub struct Vocab {
    tokenizer: Tokenizer,
    /// Strictly increasing characters (character level only).
    chars: Vec<char>,
    /// Id of each ASCII character, or `u32::MAX` (character level only).
    ascii: Vec<u32>,
}

impl TryFrom<VocabRepr> for Vocab {
    type Error = DataError;

    fn try_from(repr: VocabRepr) -> Result<Self> {
        match repr {
            VocabRepr::Byte => Ok(Vocab::bytes()),
            VocabRepr::Char { chars } => {
                let chars: Vec<char> = chars.chars().collect();
                if chars.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(DataError::Vocab(
                        "character vocabulary must be strictly sorted".into(),
                    ));
                }
                Ok(Vocab::from_sorted_chars(chars))
            }
        }
    }
}

impl From<Vocab> for VocabRepr {
    fn from(v: Vocab) -> Self {
        match v.tokenizer {
            Tokenizer::Byte => VocabRepr::Byte,
            Tokenizer::Char => VocabRepr::Char { chars: v.chars.iter().collect() },
        }
    }
}

impl Vocab {
    /// The byte-level vocabulary (ids 0..256).
    pub fn bytes() -> Self {
        Vocab { tokenizer: Tokenizer::Byte, chars: Vec::new(), ascii: Vec::new() }
    }

    /// The character vocabulary of `text`: its distinct characters, sorted.
    pub fn chars_of(text: &str) -> Self {
        let mut seen_ascii = [false; 128];
        let mut other = Vec::new();
        for c in text.chars() {
            if c.is_ascii() {
                seen_ascii[c as usize] = true;
            } else {
                other.push(c);
            }
        }
        let mut chars: Vec<char> =
            (0u8..128).filter(|&b| seen_ascii[usize::from(b)]).map(char::from).collect();
        other.sort_unstable();
        other.dedup();
        chars.extend(other);
        Self::from_sorted_chars(chars)
    }

    /// A character vocabulary from any characters (sorted and deduplicated).
    pub fn from_chars(chars: impl IntoIterator<Item = char>) -> Self {
        let mut chars: Vec<char> = chars.into_iter().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_sorted_chars(chars)
    }

    fn from_sorted_chars(chars: Vec<char>) -> Self {
        let mut ascii = vec![u32::MAX; 128];
        for (id, &c) in chars.iter().enumerate() {
            if c.is_ascii() {
                ascii[c as usize] = id as u32;
            }
        }
        Vocab { tokenizer: Tokenizer::Char, chars, ascii }
    }

    /// The tokenization level.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer
    }

    /// Number of distinct ids.
    pub fn len(&self) -> usize {
        match self.tokenizer {
            Tokenizer::Byte => 256,
            Tokenizer::Char => self.chars.len(),
        }
    }

    /// Whether the vocabulary is empty (only a character vocabulary of
    /// empty text is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The characters of a character vocabulary, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of a character, if it is in the vocabulary (byte level: only
    /// single-byte characters have a single id).
    pub fn id_of(&self, c: char) -> Option<u32> {
        match self.tokenizer {
            Tokenizer::Byte => c.is_ascii().then_some(c as u32),
            Tokenizer::Char if c.is_ascii() => {
                Some(self.ascii[c as usize]).filter(|&id| id != u32::MAX)
            }
            Tokenizer::Char => self.chars.binary_search(&c).ok().map(|i| i as u32),
        }
    }

    /// Encodes text into ids. Fails on a character that the vocabulary lacks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self.tokenizer {
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Char => text
                .chars()
                .enumerate()
                .map(|(pos, c)| {
                    self.id_of(c).ok_or_else(|| {
                        DataError::Vocab(format!(
                            "character {c:?} at position {pos} is not in the vocabulary"
                        ))
                    })
                })
                .collect(),
        }
    }

    /// Encodes raw bytes: byte level maps each byte to its id; character
    /// level requires valid UTF-8.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        match self.tokenizer {
            Tokenizer::Byte => Ok(bytes.iter().map(|&b| u32::from(b)).collect()),
            Tokenizer::Char => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| DataError::Vocab(format!("text is not UTF-8: {e}")))?;
                self.encode(text)
            }
        }
    }

    /// Decodes ids into text. Fails on an id outside the vocabulary. At the
    /// byte level, invalid UTF-8 is replaced by U+FFFD (see
    /// [`decode_bytes`](Self::decode_bytes) for the exact bytes).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self.tokenizer {
            Tokenizer::Byte => Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned()),
            Tokenizer::Char => ids
                .iter()
                .map(|&id| self.chars.get(id as usize).copied().ok_or_else(|| self.bad_id(id)))
                .collect(),
        }
    }

    /// Decodes ids into bytes (UTF-8 for a character vocabulary).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match self.tokenizer {
            Tokenizer::Byte => {
                ids.iter().map(|&id| u8::try_from(id).map_err(|_| self.bad_id(id))).collect()
            }
            Tokenizer::Char => Ok(self.decode(ids)?.into_bytes()),
        }
    }

    fn bad_id(&self, id: u32) -> DataError {
        DataError::Vocab(format!("id {id} is outside a vocabulary of {}", self.len()))
    }
}

/// A tokenized text: the vocabulary and the token ids of the whole text.
#[derive(Clone, Debug)]
pub struct TextCorpus {
    vocab: Vocab,
    tokens: Arc<[u32]>,
}

impl TextCorpus {
    /// Tokenizes `text`; a character vocabulary is built from it.
    pub fn from_text(text: &str, tokenizer: Tokenizer) -> Result<Self> {
        let vocab = match tokenizer {
            Tokenizer::Byte => Vocab::bytes(),
            Tokenizer::Char => Vocab::chars_of(text),
        };
        Self::with_vocab(text, vocab)
    }

    /// Tokenizes `text` with an existing vocabulary.
    pub fn with_vocab(text: &str, vocab: Vocab) -> Result<Self> {
        let tokens = vocab.encode(text)?;
        Ok(TextCorpus { vocab, tokens: tokens.into() })
    }

    /// Reads a text file (gzip detected by magic bytes) and tokenizes it.
    /// Character-level tokenization requires UTF-8; byte-level reads any file.
    pub fn open(path: impl AsRef<Path>, tokenizer: Tokenizer) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_maybe_gzip(path)?;
        match tokenizer {
            Tokenizer::Byte => Ok(TextCorpus {
                vocab: Vocab::bytes(),
                tokens: bytes.iter().map(|&b| u32::from(b)).collect(),
            }),
            Tokenizer::Char => {
                let text = std::str::from_utf8(&bytes).map_err(|e| {
                    DataError::corrupt(path, e.valid_up_to() as u64, "text is not valid UTF-8")
                })?;
                Self::from_text(text, tokenizer)
            }
        }
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// All token ids.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the text was empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Non-overlapping windows of `context` tokens over the whole text.
    pub fn windows(&self, context: usize) -> Result<TokenWindows> {
        TokenWindows::new(self.tokens.clone(), 0..self.tokens.len(), context)
    }

    /// The token position where the training part ends for `train_fraction`
    /// (`floor(len * train_fraction)`).
    pub fn split_point(&self, train_fraction: f64) -> Result<usize> {
        if !(0.0..=1.0).contains(&train_fraction) {
            return Err(DataError::Config(format!(
                "train fraction {train_fraction} is not in [0, 1]"
            )));
        }
        Ok((self.tokens.len() as f64 * train_fraction).floor() as usize)
    }

    /// Splits by position into training windows over the first
    /// `train_fraction` of the tokens and validation windows over the rest
    /// (e.g. 0.9 for the usual 90/10 split). Windows never cross the split.
    pub fn split_windows(
        &self,
        context: usize,
        train_fraction: f64,
    ) -> Result<(TokenWindows, TokenWindows)> {
        let cut = self.split_point(train_fraction)?;
        let n = self.tokens.len();
        Ok((
            TokenWindows::new(self.tokens.clone(), 0..cut, context)?,
            TokenWindows::new(self.tokens.clone(), cut..n, context)?,
        ))
    }
}

/// Fixed-length language-modelling windows over a range of a token stream.
///
/// Example `i` starts at token `range.start + i * stride` and has two `i32`
/// fields of shape `[context]`: `input` (tokens `s..s+context`) and `target`
/// (tokens `s+1..s+context+1`). The default stride is `context`
/// (non-overlapping windows); a stride of 1 gives every position, as in
/// nanoGPT's random sampling.
#[derive(Clone, Debug)]
pub struct TokenWindows {
    tokens: Arc<[u32]>,
    start: usize,
    end: usize,
    context: usize,
    stride: usize,
}

impl TokenWindows {
    /// Windows of `context` tokens over `tokens[range]`.
    pub fn new(tokens: Arc<[u32]>, range: std::ops::Range<usize>, context: usize) -> Result<Self> {
        if context == 0 {
            return Err(DataError::Config("context length must be at least 1".into()));
        }
        if range.start > range.end || range.end > tokens.len() {
            return Err(DataError::Config(format!(
                "token range {range:?} is outside a stream of {} tokens",
                tokens.len()
            )));
        }
        if tokens.iter().any(|&t| t > i32::MAX as u32) {
            return Err(DataError::Vocab("token id does not fit in i32".into()));
        }
        Ok(TokenWindows { tokens, start: range.start, end: range.end, context, stride: context })
    }

    /// Sets the distance between window starts (at least 1).
    pub fn with_stride(mut self, stride: usize) -> Result<Self> {
        if stride == 0 {
            return Err(DataError::Config("window stride must be at least 1".into()));
        }
        self.stride = stride;
        Ok(self)
    }

    /// The window length.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The distance between window starts.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The tokens this view covers.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[self.start..self.end]
    }
}

fn to_i32(tokens: &[u32]) -> Vec<i32> {
    // Checked in `TokenWindows::new`: every id fits in i32.
    tokens.iter().map(|&t| t as i32).collect()
}

impl Dataset for TokenWindows {
    fn len(&self) -> usize {
        let n = self.end - self.start;
        if n < self.context + 1 { 0 } else { (n - self.context - 1) / self.stride + 1 }
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.len())?;
        let s = self.start + index * self.stride;
        let t = self.context;
        Ok(Example::new()
            .with("input", HostTensor::vector(to_i32(&self.tokens[s..s + t])))
            .with("target", HostTensor::vector(to_i32(&self.tokens[s + 1..s + t + 1]))))
    }
}

/// The non-empty lines of a text file, one example each, as a `text` field
/// of UTF-8 bytes (`u8`, variable length). Combine with
/// [`transform::tokenize`](crate::transform::tokenize) to get fixed-length
/// token ids that can be batched.
#[derive(Clone, Debug)]
pub struct TextLines {
    lines: Vec<Arc<[u8]>>,
}

impl TextLines {
    /// Reads `path` (gzip detected by magic bytes); `\r\n` endings are accepted.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_maybe_gzip(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            DataError::corrupt(path, e.valid_up_to() as u64, "text is not valid UTF-8")
        })?;
        Ok(Self::from_text(text))
    }

    /// Splits `text` into its non-empty lines.
    pub fn from_text(text: &str) -> Self {
        TextLines {
            lines: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| Arc::from(l.as_bytes()))
                .collect(),
        }
    }
}

impl Dataset for TextLines {
    fn len(&self) -> usize {
        self.lines.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.lines.len())?;
        Ok(Example::new().with("text", HostTensor::vector(self.lines[index].to_vec())))
    }
}
