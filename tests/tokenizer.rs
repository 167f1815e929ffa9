//! The CLIP tokenizer against OpenAI's: `tests/fixtures/tokenizer_ids.json`
//! holds the ids that `clip.simple_tokenizer.SimpleTokenizer.encode` and
//! `clip.tokenize(..., truncate=True)` give for a list of awkward strings
//! (written by `tools/make_tokenizer_fixture.py`); every id must match.
//!
//! The only strings exempt are those flagged `ftfy_fix_encoding`: mojibake
//! that ftfy's `fix_encoding` repairs, which the Rust tokenizer does not
//! reproduce (see the doc of `mlrpl_engine::clip::tokenizer`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use mlrpl_engine::clip::tokenizer::{clean_text, Tokenizer, CONTEXT_LENGTH};
use serde_json::Value;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_ids.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn tok() -> &'static Tokenizer {
    Tokenizer::shared().unwrap()
}

/// Compares every case of a fixture file; returns (checked, exempt, failures).
fn check_cases(fx: &Value) -> (usize, Vec<String>, Vec<String>) {
    let t = tok();
    assert_eq!(t.sot() as u64, fx["sot"].as_u64().unwrap());
    assert_eq!(t.eot() as u64, fx["eot"].as_u64().unwrap());
    assert_eq!(t.vocab_size() as u64, fx["vocab_size"].as_u64().unwrap());
    let context = fx["context_length"].as_u64().unwrap() as usize;
    let mut failures = Vec::new();
    let mut exempt = Vec::new();
    let mut checked = 0;
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        if case["ftfy_fix_encoding"].as_bool().unwrap() {
            exempt.push(text.to_string());
            continue;
        }
        checked += 1;
        let want_encode = ids(&case["encode"]);
        let want_tokenize = ids(&case["tokenize"]);
        let got_encode = t.encode(text);
        let got_tokenize = t.tokenize(text, context).unwrap();
        if got_encode != want_encode {
            failures.push(format!(
                "encode({text:?}):\n  cleaned {:?}\n  want {want_encode:?}\n  got  {got_encode:?}",
                clean_text(text)
            ));
        }
        if got_tokenize != want_tokenize {
            failures.push(format!("tokenize({text:?}):\n  want {want_tokenize:?}\n  got  {got_tokenize:?}"));
        }
        let want_decode = case["decode"].as_str().unwrap();
        let got_decode = t.decode(&want_encode);
        if got_decode != want_decode {
            failures.push(format!("decode(encode({text:?})):\n  want {want_decode:?}\n  got  {got_decode:?}"));
        }
    }
    (checked, exempt, failures)
}

#[test]
fn ids_match_openai_fixture() {
    let fx = fixture();
    assert_eq!(fx["context_length"].as_u64(), Some(CONTEXT_LENGTH as u64));
    let (checked, exempt, failures) = check_cases(&fx);
    assert!(checked >= 40, "fixture has only {checked} strings");
    eprintln!("{checked} fixture strings checked; {} exempt as mojibake ftfy repairs: {exempt:?}", exempt.len());
    assert!(exempt.len() <= 2, "unexpected mojibake-flagged strings: {exempt:?}");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// A larger differential check against a fixture written elsewhere, e.g.
/// `python3 tools/make_tokenizer_fixture.py --fuzz 20000 --out /tmp/f.json`
/// then `CLIP_TOKENIZER_FIXTURE=/tmp/f.json cargo test --test tokenizer --
/// --ignored extra_fixture`.
#[test]
#[ignore = "needs CLIP_TOKENIZER_FIXTURE"]
fn extra_fixture_from_env() {
    let path = std::env::var("CLIP_TOKENIZER_FIXTURE").expect("set CLIP_TOKENIZER_FIXTURE");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (checked, exempt, failures) = check_cases(&fx);
    eprintln!("{path}: {checked} strings checked, {} exempt as mojibake", exempt.len());
    let shown: Vec<_> = failures.iter().take(20).cloned().collect();
    assert!(failures.is_empty(), "{} mismatches, first ones:\n{}", failures.len(), shown.join("\n"));
}

#[test]
fn batch_is_row_major_tokenize() {
    let t = tok();
    let texts = ["a photo of a dog.", "", "hair drier", &"word ".repeat(100)];
    let batch = t.tokenize_batch(&texts, CONTEXT_LENGTH).unwrap();
    assert_eq!(batch.len(), texts.len() * CONTEXT_LENGTH);
    for (row, text) in batch.chunks(CONTEXT_LENGTH).zip(texts) {
        assert_eq!(row, t.tokenize(text, CONTEXT_LENGTH).unwrap().as_slice());
        assert_eq!(row[0], t.sot());
        assert!(row.contains(&t.eot()));
    }
    // The long one is cut with EOT last.
    assert_eq!(batch[4 * CONTEXT_LENGTH - 1], t.eot());
    // Short contexts.
    assert_eq!(t.tokenize("a dog", 1).unwrap(), vec![t.eot()]);
    assert_eq!(t.tokenize("a dog", 2).unwrap(), vec![t.sot(), t.eot()]);
    assert!(t.tokenize("a dog", 0).is_err());
}

#[test]
fn decode_round_trips_ascii() {
    let t = tok();
    let texts = [
        "a photo of a dog.",
        "don't stop believing, it's 3.14159!",
        "https://example.com/x?y=1#z",
        "MiXeD CaSe; (brackets) [and] {braces} <|endoftext|>",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
    ];
    for text in texts {
        let ids = t.encode(text);
        let decoded = t.decode(&ids);
        // Every piece ends in `</w>`, which decodes to a space.
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squash(&decoded), squash(&clean_text(text)), "{text:?} -> {ids:?} -> {decoded:?}");
    }
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-tokenizer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn from_file_matches_embedded_and_errors_name_the_path() {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/clip/bpe_simple_vocab_16e6.txt.gz");
    let from_file = Tokenizer::from_file(&asset).unwrap();
    let text = "A photo of a Ｈａｉｒ drier &amp; ﬁsh — 東京 🐶";
    assert_eq!(from_file.encode(text), tok().encode(text));

    let missing = temp_path("no-such-vocab.txt.gz");
    let err = format!("{}", Tokenizer::from_file(&missing).unwrap_err());
    assert!(err.contains(&missing.display().to_string()), "{err}");

    // Truncated gzip stream.
    let bytes = std::fs::read(&asset).unwrap();
    let truncated = temp_path("truncated.txt.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Tokenizer::from_file(&truncated).unwrap_err();
    assert!(format!("{err}").contains(&truncated.display().to_string()), "{err:#}");

    // Not gzip, not UTF-8.
    let garbage = temp_path("garbage.bin");
    std::fs::write(&garbage, [0xffu8, 0xfe, 0x00, 0x80, 0x81]).unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err();
    assert!(format!("{err}").contains(&garbage.display().to_string()), "{err:#}");

    // Text with too few merges.
    let short = temp_path("short.txt");
    std::fs::write(&short, "#version: 0.2\ni n\nt h\n").unwrap();
    let err = Tokenizer::from_file(&short).unwrap_err();
    assert!(format!("{err}").contains(&short.display().to_string()), "{err:#}");
    assert!(format!("{err:#}").contains("merges"), "{err:#}");

    let _ = std::fs::remove_dir_all(missing.parent().unwrap());
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

/// `cargo test --release --test tokenizer -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release mode"]
fn time_10k_category_prompts() {
    let fx = fixture();
    let names: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str()?.strip_prefix("a photo of a ").map(str::to_string))
        .collect();
    let prompts: Vec<String> = (0..10_000).map(|i| format!("a photo of a {}", names[i % names.len()])).collect();

    let start = Instant::now();
    let t = Tokenizer::embedded().unwrap();
    let build = start.elapsed();

    let start = Instant::now();
    let batch = t.tokenize_batch(&prompts, CONTEXT_LENGTH).unwrap();
    let first = start.elapsed();
    let start = Instant::now();
    let again = t.tokenize_batch(&prompts, CONTEXT_LENGTH).unwrap();
    let second = start.elapsed();
    assert_eq!(batch, again);

    // Distinct words: no cache hits across prompts.
    let unique: Vec<String> = (0..10_000).map(|i| format!("a photo of a thing{i} number{}", i * 7919)).collect();
    let start = Instant::now();
    let _ = t.tokenize_batch(&unique, CONTEXT_LENGTH).unwrap();
    let distinct = start.elapsed();
    eprintln!(
        "build {build:?}; 10k category prompts: {first:?} (cold cache), {second:?} (warm); \
         10k prompts with distinct words: {distinct:?}"
    );
}
