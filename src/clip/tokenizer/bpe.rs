//! Byte-level BPE over CLIP's vocabulary: the 256 base symbols in GPT-2's
//! `bytes_to_unicode` order, their `</w>` forms, one token per merge of
//! `bpe_simple_vocab_16e6.txt.gz`, then SOT and EOT; a piece's adjacent pair
//! of lowest merge rank is merged everywhere until no pair has a rank.

use super::{Tokenizer, EOT_TEXT, NUM_MERGES, SOT_TEXT, TOKEN_PATTERN};
use anyhow::{anyhow, bail, Result};
use regex::Regex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// Hasher for the (left id, right id) merge keys packed in a u64.
#[derive(Default)]
pub(super) struct PairHasher(u64);

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

pub(super) type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
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
    pub(super) fn from_merges_text(text: &str) -> Result<Tokenizer> {
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

    /// Byte-level BPE of one piece.
    pub(super) fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
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
}
