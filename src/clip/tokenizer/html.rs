//! HTML character references: Python's `html.unescape` and ftfy's
//! stricter `unescape_html`, over the generated tables of `html_entities.rs`.

use super::clean::CP1252_C1;
use super::html_entities;
use regex::Regex;
use std::borrow::Cow;
use std::sync::OnceLock;

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
pub(super) fn ftfy_unescape_html(text: &str) -> Cow<'_, str> {
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
