//! CLIP's BPE tokenizer on arbitrary bytes (as lossy UTF-8): ids stay in the
//! vocabulary, a tokenized prompt has the context length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::clip::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let tokenizer = Tokenizer::shared().unwrap();
    let text = String::from_utf8_lossy(data);
    let ids = tokenizer.encode(&text);
    assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
    if let Ok(tokens) = tokenizer.tokenize(&text, 77) {
        assert_eq!(tokens.len(), 77);
    }
});
