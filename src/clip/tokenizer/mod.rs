//! CLIP's byte-level BPE tokenizer, id-for-id the same as OpenAI's
//! `clip.simple_tokenizer.SimpleTokenizer` and `clip.tokenize(...,
//! truncate=True)`.
//!
//! # What it computes
//!
//! `encode(text)`:
//! 1. **basic_clean**: a reimplementation of `ftfy.fix_text` (see `clean.rs`),
//!    then Python's `html.unescape` twice, then Python's `str.strip()`
//!    (which also strips U+001C..U+001F, unlike Rust's `trim`).
//! 2. **whitespace_clean**: every run of Unicode `White_Space` characters
//!    becomes one space (`regex`'s `\s+`), then `strip()` again.
//! 3. Lower-casing (full case mapping with final sigma, as Python's
//!    `str.lower`).
//! 4. The split `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
//!    [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, which OpenAI compiles with
//!    `IGNORECASE`. The text is lower-cased already, so the flag only matters
//!    in two places, both written out here instead of using `(?i)` (whose
//!    case-closed classes differ from the `regex` module's): `s` also matches
//!    U+017F LATIN SMALL LETTER LONG S, and U+0345 COMBINING GREEK
//!    YPOGEGRAMMENI (whose case partner is a letter) is matched by no branch,
//!    so it is dropped. Characters outside every branch (spaces, U+0345) are
//!    skipped.
//! 5. Each piece is UTF-8 encoded; a piece that is exactly `<|startoftext|>`
//!    or `<|endoftext|>` becomes SOT (49406) or EOT (49407); every other
//!    piece runs through BPE: its bytes become the 256 base symbols (ids in
//!    the order of GPT-2's `bytes_to_unicode`), the last one in its
//!    end-of-word (`</w>`) form (id + 256), and the adjacent pair with the
//!    lowest merge rank is merged everywhere (left to right, without
//!    overlap) until no pair has a rank. The ranks are the first
//!    49152 - 256 - 2 = 48,894 merges after the header line of
//!    `bpe_simple_vocab_16e6.txt.gz`; merge `r` creates token id 512 + r.
//!    Results are cached per piece.
//!
//! `tokenize(text, n)` is `[SOT] + encode(text) + [EOT]`; when longer than
//! `n` it is cut to `n` and its last id set to EOT (`clip.tokenize(...,
//! truncate=True)`); then it is padded with id 0 to `n`.
//!
//! Text cleanup (steps 1-3, with ftfy) is in `clean.rs`, HTML character
//! references in `html.rs` (over the generated tables of
//! `html_entities.rs`), BPE and the vocabulary in `bpe.rs`.
//!
//! Differences besides ftfy's (`clean.rs`): Unicode versions. The reference
//! itself mixes them
//! (Python's `unicodedata` for NFC and `lower`, Unicode 14 in Python 3.11;
//! the `regex` module's own, newer, tables for `\p{L}`/`\p{N}`), and so does
//! this code (`unicode-normalization`, `regex`, `std`), so characters
//! assigned after Unicode 14 may split or normalise differently. And
//! `html.unescape` of a decimal reference with more than 4,300 digits raises
//! in Python (its int-parsing limit); here it gives U+FFFD.
//!
//! Checked against `tests/fixtures/tokenizer_ids.json` (`tests/tokenizer.rs`)
//! and, with `tools/make_tokenizer_fixture.py --fuzz`, against random strings
//! made of the pieces above.

mod bpe;
mod clean;
mod html;
mod html_entities;

pub use clean::{clean_text, fix_text};
pub use html::html_unescape;

use anyhow::{bail, Context, Result};
use bpe::PairMap;
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The context length of every released CLIP model.
pub const CONTEXT_LENGTH: usize = 77;
/// The start-of-text marker, as written in the vocabulary.
pub const SOT_TEXT: &str = "<|startoftext|>";
/// The end-of-text marker, as written in the vocabulary.
pub const EOT_TEXT: &str = "<|endoftext|>";
/// Merges used from the vocabulary file: 49152 - 256 - 2.
pub const NUM_MERGES: usize = 49152 - 256 - 2;

const EMBEDDED_VOCAB: &[u8] = include_bytes!("../../../assets/clip/bpe_simple_vocab_16e6.txt.gz");
/// The cache is cleared when it holds this many pieces (Python's is unbounded).
const CACHE_LIMIT: usize = 1 << 16;

/// The split regex; see the module doc for why `IGNORECASE` is spelled out.
const TOKEN_PATTERN: &str =
    r"<\|[sſ]tartoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

/// CLIP's BPE tokenizer. Cheap to share: `Send + Sync`, with an internal
/// cache behind a mutex.
pub struct Tokenizer {
    /// Base symbol id of each byte value (ids 0..256).
    byte_ids: [u32; 256],
    /// (left, right) -> (rank, merged id).
    merges: PairMap,
    /// id -> the bytes it stands for (`</w>` kept as the 4 bytes `</w>`).
    decoder: Vec<Box<[u8]>>,
    sot: u32,
    eot: u32,
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).field("merges", &self.merges.len()).finish()
    }
}

impl Tokenizer {
    /// The tokenizer over the vocabulary shipped in `assets/clip/`
    /// (decompressed and parsed on each call; see [`Tokenizer::shared`]).
    pub fn embedded() -> Result<Tokenizer> {
        Self::from_vocab_bytes(EMBEDDED_VOCAB).context("parsing the embedded CLIP BPE vocabulary")
    }

    /// One process-wide tokenizer over the embedded vocabulary, built on
    /// first use.
    pub fn shared() -> Result<&'static Tokenizer> {
        static SHARED: OnceLock<Tokenizer> = OnceLock::new();
        if let Some(t) = SHARED.get() {
            return Ok(t);
        }
        let t = Self::embedded()?;
        Ok(SHARED.get_or_init(|| t))
    }

    /// The tokenizer over a vocabulary file: `bpe_simple_vocab_16e6.txt.gz`
    /// or the same text uncompressed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| format!("reading CLIP BPE vocabulary {}", path.display()))?;
        Self::from_vocab_bytes(&bytes).with_context(|| format!("parsing CLIP BPE vocabulary {}", path.display()))
    }

    /// The tokenizer over the bytes of a vocabulary file (gzip or plain).
    pub fn from_vocab_bytes(bytes: &[u8]) -> Result<Tokenizer> {
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_string(&mut s)
                .context("decompressing the gzip stream (or it is not UTF-8)")?;
            s
        } else {
            String::from_utf8(bytes.to_vec()).context("the vocabulary is neither gzip nor UTF-8 text")?
        };
        Self::from_merges_text(&text)
    }

    /// Id of `<|startoftext|>` (49406).
    pub fn sot(&self) -> u32 {
        self.sot
    }

    /// Id of `<|endoftext|>` (49407).
    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// Number of token ids (49408).
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// BPE ids of `text`, without SOT/EOT (`SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_text(text);
        let mut ids = Vec::new();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for m in self.pattern.find_iter(&cleaned) {
            let piece = m.as_str();
            if piece == SOT_TEXT {
                ids.push(self.sot);
            } else if piece == EOT_TEXT {
                ids.push(self.eot);
            } else if let Some(hit) = cache.get(piece) {
                ids.extend_from_slice(hit);
            } else {
                let word = self.bpe(piece.as_bytes());
                ids.extend_from_slice(&word);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(piece.to_string(), word);
            }
        }
        ids
    }

    /// `[SOT] + encode(text) + [EOT]`, cut to `context_length` with EOT kept
    /// as the last id when too long (`clip.tokenize(..., truncate=True)`),
    /// padded with 0 to `context_length`.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Result<Vec<u32>> {
        if context_length == 0 {
            bail!("context length must be at least 1");
        }
        let mut ids = Vec::with_capacity(context_length.max(16));
        ids.push(self.sot);
        ids.extend(self.encode(text));
        ids.push(self.eot);
        if ids.len() > context_length {
            ids.truncate(context_length);
            ids[context_length - 1] = self.eot;
        }
        ids.resize(context_length, 0);
        Ok(ids)
    }

    /// [`Tokenizer::tokenize`] of each text, as one row-major
    /// `[texts.len(), context_length]` buffer (the layout of
    /// `clip.tokenize(texts)`).
    pub fn tokenize_batch<S: AsRef<str>>(&self, texts: &[S], context_length: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(texts.len() * context_length);
        for t in texts {
            out.extend(self.tokenize(t.as_ref(), context_length)?);
        }
        Ok(out)
    }

    /// Text of the ids, as `SimpleTokenizer.decode`: the bytes of the tokens,
    /// UTF-8 decoded with U+FFFD for invalid sequences, `</w>` replaced by a
    /// space. SOT/EOT come out as their marker text, padding (id 0) as `!`;
    /// ids outside the vocabulary (where Python raises) are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.decoder.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> &'static Tokenizer {
        Tokenizer::shared().unwrap()
    }

    #[test]
    fn vocabulary_shape() {
        let t = tok();
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!((t.sot(), t.eot()), (49406, 49407));
        assert_eq!(t.merges.len(), NUM_MERGES);
        // ids 0..256 are the bytes in bytes_to_unicode order: '!' first.
        assert_eq!(t.byte_ids[b'!' as usize], 0);
        assert_eq!(t.byte_ids[0], 188);
        assert_eq!(&*t.decoder[256], b"!</w>");
    }

    #[test]
    fn known_ids() {
        let t = tok();
        // From OpenAI's tokenizer.
        assert_eq!(t.encode("a photo of a dog."), vec![320, 1125, 539, 320, 1929, 269]);
        assert_eq!(t.encode("hair drier"), vec![2225, 39877]);
        let row = t.tokenize("a dog", 5).unwrap();
        assert_eq!(row, vec![49406, 320, 1929, 49407, 0]);
        let cut = t.tokenize("a photo of a dog.", 4).unwrap();
        assert_eq!(cut, vec![49406, 320, 1125, 49407]);
        assert!(t.tokenize("x", 0).is_err());
    }

    #[test]
    fn cleanup_pieces() {
        assert_eq!(html_unescape("&amp;amp; &lt3 &notit; &#x41;&#66 &#xZZ; &#128;"), "&amp; <3 ¬it; AB &#xZZ; €");
        assert_eq!(html_unescape("&#0;&#1;&#12;&#xD800;&#99999999999;"), "\u{fffd}\u{c}\u{fffd}\u{fffd}");
        assert_eq!(fix_text("&amp;amp;amp; ﬁ “x” ＡＢ\r\nc"), "& fi \"x\" AB\nc");
        assert_eq!(fix_text("<b>&amp;</b>\n&amp;"), "<b>&amp;</b>\n&amp;");
        assert_eq!(fix_text("\u{1b}[31mred\u{1b}[0m\u{0}"), "red");
        assert_eq!(clean_text("  Hello\t\u{3000}WORLD  "), "hello world");
    }
}
