//! Text cleanup, as OpenAI's tokenizer does before splitting:
//! `whitespace_clean(basic_clean(text)).lower()`, `basic_clean` being
//! `ftfy.fix_text` then `html.unescape` twice then `str.strip()`.
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

use super::html::{ftfy_unescape_html, html_unescape};
use regex::Regex;
use std::sync::OnceLock;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// ftfy's `max_decode_length`.
const FTFY_MAX_SEGMENT: usize = 1_000_000;

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
pub(super) const CP1252_C1: [char; 32] = [
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
