//! CLIP's byte-level BPE tokenizer, id-for-id the same as OpenAI's
//! `clip.simple_tokenizer.SimpleTokenizer` and `clip.tokenize(...,
//! truncate=True)`.
//!
//! # What it computes
//!
//! `encode(text)`:
//! 1. **basic_clean**: a reimplementation of `ftfy.fix_text` (see below),
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
//! # ftfy
//!
//! `ftfy.fix_text` (checked against ftfy 6.3.1, its default
//! `TextFixerConfig`) works on segments of the text (each ending after a
//! `\n`, at most 1,000,000 characters) and repeats, per segment, until the
//! segment stops changing: `unescape_html`, `fix_encoding`,
//! `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`,
//! `uncurl_quotes`, `fix_line_breaks`, `fix_surrogates`,
//! `remove_terminal_escapes`, `remove_control_chars`, NFC. Reproduced here,
//! in that order, with the same segmenting and the same fixed-point loop:
//!
//! * `unescape_html` ("auto"): the `&name;`, `&#NN;`, `&#xHH;` references of
//!   ftfy's table (every `;`-terminated HTML5 name plus ftfy's all-caps
//!   variants such as `&EACUTE;`, generated into `html_entities.rs`), only
//!   up to 24 characters and only with the `;`. Like ftfy, it is switched
//!   off for a segment that contains `<`, and for every segment after it.
//! * `fix_c1_controls`: U+0080..U+009F read as Windows-1252 (the five bytes
//!   Windows-1252 leaves undefined stay as they are).
//! * `fix_latin_ligatures`: ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ Ĳ ĳ ŉ Ǳ ǲ ǳ Ǆ ǅ ǆ Ǉ ǈ ǉ Ǌ ǋ ǌ.
//! * `fix_character_width`: U+3000 to a space; U+FF01..U+FFEF to their NFKC
//!   form (fullwidth ASCII, halfwidth katakana and hangul, ...).
//! * `uncurl_quotes`: U+02BC, U+2018..U+201B to `'`; U+201C..U+201F to `"`.
//! * `fix_line_breaks`: CRLF, CR, U+2028, U+2029, U+0085 to `\n`.
//! * `remove_terminal_escapes`: `ESC [ (digits|;)* letter`.
//! * `remove_control_chars`: U+0000..U+0008, U+000B, U+000E..U+001F,
//!   U+007F, U+206A..U+206F, U+FEFF, U+FFF9..U+FFFC.
//! * NFC normalisation.
//!
//! Not reproduced:
//!
//! * `fix_encoding`: ftfy's mojibake detection and repair (re-decoding text
//!   that was UTF-8 read as Latin-1 / Windows-125x / MacRoman / cp437, with
//!   its sub-steps `restore_byte_a0`, `replace_lossy_sequences` and
//!   `decode_inconsistent_utf8`). It only acts on text that ftfy's
//!   heuristic (`ftfy.badness.is_bad`) takes for mojibake, such as `CafÃ©`
//!   or `â€œ`; on such text the ids differ from OpenAI's. Text that is pure
//!   ASCII once its HTML references are decoded is never touched by it
//!   (`Caf&Atilde;&copy;` is: ftfy makes it `Café`, this code `cafã©`).
//!   `tools/make_tokenizer_fixture.py` flags the fixture strings where it
//!   acts (`ftfy_fix_encoding`).
//! * `fix_surrogates`: a Rust `&str` cannot hold surrogates, so there is
//!   nothing to fix.
//!
//! Other differences: Unicode versions. The reference itself mixes them
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

#[path = "html_entities.rs"]
mod html_entities;

/// The context length of every released CLIP model.
pub const CONTEXT_LENGTH: usize = 77;
/// The start-of-text marker, as written in the vocabulary.
pub const SOT_TEXT: &str = "<|startoftext|>";
/// The end-of-text marker, as written in the vocabulary.
pub const EOT_TEXT: &str = "<|endoftext|>";
/// Merges used from the vocabulary file: 49152 - 256 - 2.
pub const NUM_MERGES: usize = 49152 - 256 - 2;

const EMBEDDED_VOCAB: &[u8] = include_bytes!("../../assets/clip/bpe_simple_vocab_16e6.txt.gz");
/// The cache is cleared when it holds this many pieces (Python's is unbounded).
const CACHE_LIMIT: usize = 1 << 16;
/// ftfy's `max_decode_length`.
const FTFY_MAX_SEGMENT: usize = 1_000_000;

/// The split regex; see the module doc for why `IGNORECASE` is spelled out.
const TOKEN_PATTERN: &str =
    r"<\|[sſ]tartoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+";

/// Hasher for the (left id, right id) merge keys packed in a u64.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 32;
    }
}

type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

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

/// GPT-2's `bytes_to_unicode`: the bytes in vocabulary order (printable
/// Latin-1 first, then the rest) and the character each byte is written as.
fn bytes_to_unicode() -> ([u8; 256], [char; 256]) {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut order = [0u8; 256];
    let mut chars = ['\0'; 256];
    let mut n = 0usize;
    for b in 0..=255u8 {
        if printable(b) {
            order[n] = b;
            chars[b as usize] = b as char;
            n += 1;
        }
    }
    let mut extra = 0u32;
    for b in 0..=255u8 {
        if !printable(b) {
            order[n] = b;
            chars[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
            n += 1;
        }
    }
    (order, chars)
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

    fn from_merges_text(text: &str) -> Result<Tokenizer> {
        let (order, chars) = bytes_to_unicode();
        let mut byte_of_char: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, &c) in chars.iter().enumerate() {
            byte_of_char.insert(c, b as u8);
        }

        // The vocabulary, as OpenAI builds it: base symbols, their `</w>`
        // forms, one token per merge, then SOT and EOT.
        let mut vocab: Vec<String> = Vec::with_capacity(512 + NUM_MERGES + 2);
        for &b in &order {
            vocab.push(chars[b as usize].to_string());
        }
        for i in 0..256 {
            let s = format!("{}</w>", vocab[i]);
            vocab.push(s);
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(NUM_MERGES);
        let mut lines = text.split('\n');
        lines.next().ok_or_else(|| anyhow!("empty vocabulary"))?;
        for rank in 0..NUM_MERGES {
            let line = match lines.next() {
                Some(line) if !line.trim().is_empty() => line,
                _ => bail!("vocabulary has only {rank} merges after the header line; CLIP needs {NUM_MERGES}"),
            };
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => {
                    pairs.push((a, b));
                    vocab.push(format!("{a}{b}"));
                }
                _ => bail!("merge line {} is not two symbols: {line:?}", rank + 2),
            }
        }
        vocab.push(SOT_TEXT.to_string());
        vocab.push(EOT_TEXT.to_string());

        // Python builds a dict from these, so a repeated string keeps its
        // last id, and a repeated merge its last rank.
        let mut encoder: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        for (id, s) in vocab.iter().enumerate() {
            encoder.insert(s.as_str(), id as u32);
        }
        let mut merges = PairMap::with_capacity_and_hasher(NUM_MERGES, Default::default());
        for (rank, &(a, b)) in pairs.iter().enumerate() {
            let id = |s: &str| {
                encoder
                    .get(s)
                    .copied()
                    .ok_or_else(|| anyhow!("merge line {}: symbol {s:?} is not in the vocabulary", rank + 2))
            };
            let merged = encoder[vocab[512 + rank].as_str()];
            merges.insert(pair_key(id(a)?, id(b)?), (rank as u32, merged));
        }

        let mut decoder = Vec::with_capacity(vocab.len());
        for s in &vocab {
            let bytes: Option<Vec<u8>> = s.chars().map(|c| byte_of_char.get(&c).copied()).collect();
            decoder.push(
                bytes
                    .ok_or_else(|| anyhow!("token {s:?} has a character outside the byte alphabet"))?
                    .into_boxed_slice(),
            );
        }

        let mut byte_ids = [0u32; 256];
        for (i, &b) in order.iter().enumerate() {
            byte_ids[b as usize] = i as u32;
        }
        Ok(Tokenizer {
            byte_ids,
            merges,
            decoder,
            sot: encoder[SOT_TEXT],
            eot: encoder[EOT_TEXT],
            pattern: Regex::new(TOKEN_PATTERN).expect("token regex"),
            cache: Mutex::new(HashMap::new()),
        })
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

    /// Byte-level BPE of one piece.
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        let mut word: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let Some(last) = word.last_mut() else {
            return word;
        };
        *last += 256;
        let mut next = Vec::with_capacity(word.len());
        while word.len() > 1 {
            let mut best: Option<(u32, u32, u32, u32)> = None; // rank, left, right, merged
            for w in word.windows(2) {
                if let Some(&(rank, merged)) = self.merges.get(&pair_key(w[0], w[1])) {
                    if best.is_none_or(|b| rank < b.0) {
                        best = Some((rank, w[0], w[1], merged));
                    }
                }
            }
            let Some((_, left, right, merged)) = best else {
                break;
            };
            next.clear();
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == left && word[i + 1] == right {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            std::mem::swap(&mut word, &mut next);
        }
        word
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

// ---------------------------------------------------------------------------
// Text cleanup: basic_clean + whitespace_clean + lower.

/// The text exactly as OpenAI's tokenizer splits it:
/// `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let once = html_unescape(&fixed);
    let twice = html_unescape(&once);
    let stripped = twice.trim_matches(py_isspace);
    let mut collapsed = String::with_capacity(stripped.len());
    let mut in_space = false;
    for c in stripped.chars() {
        if c.is_whitespace() {
            if !in_space {
                collapsed.push(' ');
                in_space = true;
            }
        } else {
            collapsed.push(c);
            in_space = false;
        }
    }
    collapsed.trim_matches(py_isspace).to_lowercase()
}

/// Python's `str.isspace` for one character: Unicode `White_Space` plus the
/// information separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The subset of `ftfy.fix_text` described in the module doc.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut start = 0;
    let mut count = 0;
    let mut segment = |seg: &str, out: &mut String| {
        if unescape && seg.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(seg, unescape));
    };
    for (i, c) in text.char_indices() {
        count += 1;
        if c == '\n' || count == FTFY_MAX_SEGMENT {
            let end = i + c.len_utf8();
            segment(&text[start..end], &mut out);
            start = end;
            count = 0;
        }
    }
    if start < text.len() {
        segment(&text[start..], &mut out);
    }
    out
}

/// Whether none of the reproduced fixes can change `seg`.
fn ftfy_noop(seg: &str) -> bool {
    seg.bytes().all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | 0x0c) && b != b'&')
}

/// One `fix_and_explain` on one segment: the fixes, repeated until nothing
/// changes.
fn fix_segment(seg: &str, unescape: bool) -> String {
    if ftfy_noop(seg) {
        return seg.to_string();
    }
    let mut text = seg.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text).into_owned();
        }
        // fix_encoding: not reproduced (see the module doc).
        text = fix_chars(&text);
        text = fix_line_breaks(&text);
        // fix_surrogates: nothing to do for a Rust string.
        if text.contains('\u{1b}') {
            text = terminal_escape_re().replace_all(&text, "").into_owned();
        }
        text.retain(|c| !is_removed_control(c));
        if is_nfc_quick(text.chars()) != IsNormalized::Yes {
            text = text.nfc().collect();
        }
        if text == orig {
            return text;
        }
    }
}

fn terminal_escape_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Python's `\d` on str patterns is Unicode `Nd`, as Rust's.
    RE.get_or_init(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").unwrap())
}

/// `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width` and
/// `uncurl_quotes`, in that order. Each is a character-to-string map over
/// the whole text, so applying them one after the other per character is the
/// same as four passes.
fn fix_chars(text: &str) -> String {
    fn width_then_quotes(c: char, out: &mut String) {
        match c as u32 {
            0x3000 => out.push(' '),
            0xFF01..=0xFFEF => out.extend(std::iter::once(c).nfkc().map(uncurl_quote)),
            _ => out.push(uncurl_quote(c)),
        }
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c1_control(c);
        match latin_ligature(c) {
            Some(parts) => parts.chars().for_each(|p| width_then_quotes(p, &mut out)),
            None => width_then_quotes(c, &mut out),
        }
    }
    out
}

/// Windows-1252 reading of the C1 controls, the five bytes it leaves
/// undefined kept as they are. (Also Python's `html._invalid_charrefs` for
/// 0x80..0x9F.)
const CP1252_C1: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2c6}', '\u{2030}',
    '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}',
    '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}',
    '\u{17e}', '\u{178}',
];

fn c1_control(c: char) -> char {
    match c as u32 {
        v @ 0x80..=0x9F => CP1252_C1[(v - 0x80) as usize],
        _ => c,
    }
}

fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "\u{2bc}n",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "D\u{17d}",
        'ǅ' => "D\u{17e}",
        'ǆ' => "d\u{17e}",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "\u{17f}t",
        'ﬆ' => "st",
        _ => return None,
    })
}

fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

fn fix_line_breaks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            _ => out.push(c),
        }
    }
    out
}

fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

// ---------------------------------------------------------------------------
// HTML character references.

fn html5_lookup(name: &str) -> Option<&'static str> {
    let t = html_entities::HTML5;
    t.binary_search_by(|(k, _)| (*k).cmp(name)).ok().map(|i| t[i].1)
}

fn ftfy_uppercase_lookup(name: &str) -> Option<&'static str> {
    let t = html_entities::FTFY_UPPERCASE;
    t.binary_search_by(|(k, _)| (*k).cmp(name)).ok().map(|i| t[i].1)
}

fn ftfy_entity_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").unwrap())
}

/// ftfy's `unescape_html`: only `;`-terminated references of at most 24
/// characters, from ftfy's table or numeric.
fn ftfy_unescape_html(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    ftfy_entity_re().replace_all(text, |caps: &regex::Captures| {
        let m = &caps[0];
        let name = &m[1..];
        if let Some(v) = html5_lookup(name).or_else(|| ftfy_uppercase_lookup(name)) {
            v.to_string()
        } else if m.starts_with("&#") {
            let u = html_unescape(m);
            if u.contains(';') {
                m.to_string()
            } else {
                u.into_owned()
            }
        } else {
            m.to_string()
        }
    })
}

/// Python's `html.unescape` (HTML5 rules: named references with or without
/// `;` and by longest known prefix, decimal and hex references with
/// Windows-1252 fix-ups for 0x80..0x9F).
pub fn html_unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        match charref(after, &mut out) {
            Some(consumed) => rest = &after[consumed..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// One reference after a `&` (Python's `_charref` regex and
/// `_replace_charref`): pushes its replacement and returns the bytes it
/// consumed, or `None` where the regex does not match.
fn charref(s: &str, out: &mut String) -> Option<usize> {
    let b = s.as_bytes();
    let semicolon = |end: usize| {
        if b.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        }
    };
    if b.first() == Some(&b'#') {
        let (digits, radix, from) = if b.get(1).is_some_and(u8::is_ascii_digit) {
            (b[1..].iter().take_while(|c| c.is_ascii_digit()).count(), 10, 1)
        } else if matches!(b.get(1), Some(b'x' | b'X')) && b.get(2).is_some_and(u8::is_ascii_hexdigit) {
            (b[2..].iter().take_while(|c| c.is_ascii_hexdigit()).count(), 16, 2)
        } else {
            return None;
        };
        let num = s[from..from + digits]
            .chars()
            .try_fold(0u32, |acc, d| acc.checked_mul(radix)?.checked_add(d.to_digit(radix)?))
            .unwrap_or(u32::MAX);
        out.push_str(&numeric_charref(num));
        return Some(semicolon(from + digits));
    }
    // `[^\t\n\f <&#;]{1,32};?`
    let mut end = 0;
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end = i + c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    let full = semicolon(end);
    let name = &s[..full];
    if let Some(v) = html5_lookup(name) {
        out.push_str(v);
        return Some(full);
    }
    // Longest prefix of at least 2 characters that is a known name.
    let cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in cuts.iter().rev() {
        if let Some(v) = html5_lookup(&name[..cut]) {
            out.push_str(v);
            out.push_str(&name[cut..]);
            return Some(full);
        }
    }
    out.push('&');
    out.push_str(name);
    Some(full)
}

fn numeric_charref(num: u32) -> Cow<'static, str> {
    let c = match num {
        0x00 => '\u{fffd}',
        0x0d => '\r',
        0x80..=0x9f => CP1252_C1[(num - 0x80) as usize],
        0xD800..=0xDFFF => '\u{fffd}',
        n if n > 0x10FFFF => '\u{fffd}',
        0x01..=0x08 | 0x0e..=0x1f | 0x7f | 0xfdd0..=0xfdef | 0x0b => return Cow::Borrowed(""),
        n if n & 0xFFFE == 0xFFFE => return Cow::Borrowed(""),
        n => char::from_u32(n).unwrap_or('\u{fffd}'),
    };
    Cow::Owned(c.to_string())
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
