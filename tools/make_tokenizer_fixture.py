#!/usr/bin/env python3
"""Write tests/fixtures/tokenizer_ids.json: CLIP token ids from OpenAI's own
tokenizer for a list of awkward strings, which tests/tokenizer.rs holds the
Rust tokenizer (src/clip/tokenizer/) to.

Usage (from the repository root):

    pip install clip-anytorch ftfy regex     # --no-deps clip-anytorch is enough
    python3 tools/make_tokenizer_fixture.py  # writes tests/fixtures/tokenizer_ids.json

    python3 tools/make_tokenizer_fixture.py --fuzz 20000 --seed 0 --out /tmp/f.json
        # random strings instead, for a larger differential check:
        # CLIP_TOKENIZER_FIXTURE=/tmp/f.json cargo test --test tokenizer -- --ignored extra_fixture

    python3 tools/make_tokenizer_fixture.py --write-entities
        # (re)writes src/clip/tokenizer/html_entities.rs: Python's html.entities.html5
        # table and ftfy's all-caps entity additions, as Rust source

torch is not needed: `clip/__init__.py` of clip-anytorch imports torch, so
this script does not `import clip`; it finds the installed package with
importlib, loads `clip/simple_tokenizer.py` by path, and reproduces
`clip.tokenize(texts, context_length=77, truncate=True)` on top of
`SimpleTokenizer.encode` exactly as `clip/clip.py` does it: SOT + ids + EOT;
if longer than the context, cut to `context_length` and set the last token to
EOT; pad with zeros.

For each string the fixture also records `ftfy_fix_encoding`: whether ftfy's
mojibake repair (`fix_encoding`, the one part of `ftfy.fix_text` the Rust
tokenizer does not reproduce) changes the string, i.e. whether
`ftfy.fix_text(s) != ftfy.fix_text(s, fix_encoding=False)`. The Rust test
expects identical ids for every string where that is false.
"""

import argparse
import hashlib
import html
import html.entities
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tokenizer_ids.json")
ENTITIES_RS = os.path.join(ROOT, "src", "clip", "tokenizer", "html_entities.rs")
CONTEXT_LENGTH = 77

COCO = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]

LONG_TEXT = (
    "In the late afternoon the harbour was crowded with small fishing boats, "
    "their hulls painted red, blue and a faded yellow; gulls circled above the "
    "nets while two children on the pier argued about whether the clouds over "
    "the lighthouse looked more like a whale or a sleeping dog. Further along "
    "the quay a man sold roasted chestnuts from a cart, a bicycle leaned against "
    "a lamp post, and somebody had left a red umbrella open on a bench to dry. "
    "Nobody seemed to be in any hurry at all, which is exactly why the "
    "photographer stayed until the light was gone."
)

ALL_WHITESPACE = "".join(
    chr(c) for c in [
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0,
        0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
        0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
    ]
)

TEXTS = [
    # empty and blank
    "",
    " ",
    "     ",
    "\t\n \r\n ",
    "x" + ALL_WHITESPACE + "y" + ALL_WHITESPACE,
    # plain prompts, category names
    "a photo of a dog.",
    "A Photo Of A DOG",
    "hair drier",
    "potted plant",
    "a photo of a hair drier.",
    # contractions
    "don't",
    "I'LL BE THERE, WON'T YOU? she'd've",
    "it's they're we've I'm you'll he'd",
    "''s 'S 'Re rock'n'roll o'clock",
    "it'ſ fine",
    # numbers
    "3.14159",
    "1,000,000",
    "2026",
    "-42 +7 1e-9 0x1F 12:30pm 50% $9.99 #1",
    "½ ² ① Ⅻ ٣٤٥ ໑໒ 𝟙𝟚",
    # punctuation runs
    "!!!???...;;;---",
    "(hello) [world] {foo} <bar> «quoted» …",
    "@#$%^*_+=~`|\\/",
    "wait...what?!?! ---> <--- :-) ;-( ¯\\_(ツ)_/¯",
    # accents, NFC vs NFD, combining marks
    "naïve café résumé Ångström",
    "cafe\u0301 vs caf\u00e9",
    "Zoë Saldaña e\u0301\u0301 a\u0308\u0323 \u0301lone mark",
    "x \u0345 y a\u0345b \u03b1\u0345",
    "Ꭰ ΟΔΟΣ ΣΑΣ σ Σ. İstanbul ǅemal ß ẞ",
    # scripts
    "東京タワーの写真",
    "한국어 텍스트 ᄒᆞᆫ",
    "مرحبا بالعالم",
    "שָׁלוֹם עולם",
    "Привет, мир!",
    "नमस्ते दुनिया ภาษาไทย",
    # emoji
    "🐶🐱 a dog and a cat 👍🏽 👨\u200d👩\u200d👧\u200d👦 🇯🇵 ❤️",
    # HTML entities (ftfy unescapes until nothing changes, then CLIP twice more)
    "&amp; &lt;3 &gt; &quot;quoted&quot; &#39;single&#39;",
    "&amp;amp; &amp;amp;amp; &amp;amp;amp;amp;amp;",
    "fish &amp chips &copy 2020 &notit; &#x41;&#66; &#xZZ; &#;",
    "&EACUTE;T&Eacute; &NTILDE; &nTILDE; &SZLIG;",
    "&#0; &#13; &#128; &#x81; &#xD800; &#1114112; &#12; &#x1F600; &#65&#66",
    "&NotEqualTilde; &fjlig; &ThickSpace; &nbsp;&nbsp;",
    "<b>bold &amp; brave</b> &lt;i&gt;",
    "line one &amp;amp;\nline two <tag> &amp;amp;\nline three &amp;amp;",
    "e&#x301; <x> e&#x301;",
    # ftfy: curly quotes, ligatures, width, line breaks, escapes, controls
    "“curly double” ‘curly single’ it’s ‚low‛ „low double‟ ʼn",
    "ﬁne ﬂour ﬀ ﬃ ﬄ ﬅ ﬆ Ĳssel ŉ ǅ ǈ ǋ",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３！？",
    "ｶﾀｶﾅ ﾊﾞﾝﾊﾟ ﾟﾞ",
    "".join(chr(c) for c in range(0xFF01, 0xFFF0)),
    "tabs\tand\nnewlines\r\nand   multiple    spaces\u00a0nbsp\u2003emsp\u3000ideo",
    "\u2028line sep\u2029para sep\x85next line\rcr",
    "\x1b[31mred\x1b[0m text \x1b[1;4mbold\x1b[m \x1b[x",
    "control\x00chars\x07here\x7f\u200b zero\u200cwidth \ufeffbom \u206a\ufff9\ufffc",
    "c1 \x80 \x85 \x91quoted\x92 \x81 \x9f",
    # special tokens written literally
    "<|startoftext|>",
    "<|endoftext|>",
    "a <|endoftext|> b <|STARTOFTEXT|> c <|ſtartoftext|> <|endoftext|><|endoftext|>",
    # case, URLs, misc
    "MiXeD CaSe TeXt WITH ÜMLAUTS ÄÖÜ ĲSSEL",
    "https://www.example.com/path/to?query=1&amp;b=2#frag",
    "user.name+tag@example.co.uk #hashtag @mention C++ C# .NET",
    "</w> <w> word</w>",
    # long input: truncation must keep EOT last
    LONG_TEXT,
    "supercalifragilisticexpialidocious " * 12,
    "0123456789" * 10,
    # mojibake: ftfy repairs it, the Rust tokenizer does not (flagged)
    "CafÃ© â€œquotedâ€\x9d",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
] + [f"a photo of a {name}." for name in COCO]


def load_simple_tokenizer():
    spec = importlib.util.find_spec("clip")
    if spec is None or spec.origin is None:
        sys.exit("clip-anytorch is not installed: pip install --no-deps clip-anytorch ftfy regex")
    path = os.path.join(os.path.dirname(spec.origin), "simple_tokenizer.py")
    mspec = importlib.util.spec_from_file_location("clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def clip_tokenize(tok, text, context_length=CONTEXT_LENGTH):
    """clip.tokenize(text, context_length, truncate=True), one row, as a list."""
    sot = tok.encoder["<|startoftext|>"]
    eot = tok.encoder["<|endoftext|>"]
    tokens = [sot] + tok.encode(text) + [eot]
    if len(tokens) > context_length:
        tokens = tokens[:context_length]
        tokens[-1] = eot
    return tokens + [0] * (context_length - len(tokens))


def write_fixture(texts, path):
    import ftfy

    st = load_simple_tokenizer()
    tok = st.SimpleTokenizer()
    cases = []
    for text in texts:
        ids = tok.encode(text)
        cases.append({
            "text": text,
            "encode": ids,
            "tokenize": clip_tokenize(tok, text),
            "decode": tok.decode(ids),
            "ftfy_fix_encoding": ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False),
        })
    with open(st.default_bpe(), "rb") as f:
        vocab_sha = hashlib.sha256(f.read()).hexdigest()
    doc = {
        "generator": "tools/make_tokenizer_fixture.py",
        "versions": {
            "clip-anytorch": importlib.metadata.version("clip-anytorch"),
            "ftfy": importlib.metadata.version("ftfy"),
            "regex": importlib.metadata.version("regex"),
            "python": platform.python_version(),
            "unicodedata": unicodedata.unidata_version,
        },
        "vocab_sha256": vocab_sha,
        "context_length": CONTEXT_LENGTH,
        "sot": tok.encoder["<|startoftext|>"],
        "eot": tok.encoder["<|endoftext|>"],
        "vocab_size": len(tok.encoder),
        "cases": cases,
    }
    # One line per case keeps the file short and diffs readable.
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=True, indent=1)
    body = ",\n".join("  " + json.dumps(c, ensure_ascii=True) for c in cases)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head[: -len("\n}")] + ',\n "cases": [\n' + body + "\n ]\n}\n")
    flagged = sum(c["ftfy_fix_encoding"] for c in cases)
    print(f"wrote {path}: {len(cases)} strings ({flagged} flagged as mojibake)")


def fuzz_texts(n, seed):
    """Random strings built from the pieces the cleanup and the split treat
    specially, for a larger differential check than the fixture."""
    import random

    rng = random.Random(seed)
    names = sorted(html.entities.html5)

    def assigned(lo, hi):
        # Only characters this Python's unicodedata knows: for characters
        # assigned later, the reference itself depends on the versions of
        # Python (NFC, lower) and of the regex module (\p{L}, \p{N}).
        while True:
            c = rng.randint(lo, hi)
            if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn":
                return chr(c)
    pools = [
        lambda: rng.choice(["a", "photo", "of", "the", "Dog", "CAT", "hair", "drier", "xyzzy", "q"]),
        lambda: rng.choice(["'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'d", "'", "''", "ſ", "'ſ"]),
        lambda: "".join(rng.choice("0123456789.,-+%$") for _ in range(rng.randint(1, 6))),
        lambda: "".join(rng.choice("!?.;:-_()[]{}<>@#$%^*=~`|\\/\"") for _ in range(rng.randint(1, 5))),
        lambda: "&" + rng.choice(names) + rng.choice(["", ";", "x", " "]),
        lambda: "&" + rng.choice(names).rstrip(";").upper() + ";",
        lambda: rng.choice(["&#", "&#x", "&#X"]) + format(ord(assigned(0, 0x11000)) if rng.random() < 0.8 else rng.randint(0, 0x11000), rng.choice(["d", "x", "X"])) + rng.choice(["", ";"]),
        lambda: rng.choice(["&amp;", "&amp;amp;", "&lt;", "&gt;", "&", "&&", "&;", "<", ">"]),
        lambda: rng.choice(ALL_WHITESPACE) * rng.randint(1, 3),
        lambda: chr(rng.choice(list(range(0, 0x20)) + [0x7F] + list(range(0x80, 0xA0)))),
        lambda: "\x1b[" + rng.choice(["31", "0", "1;4", "", "\u0663"]) + rng.choice(["m", "K", "", "7"]),
        lambda: rng.choice("\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u02bc\u0149\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06\u0132\u0133\u01c4\u01c5\u01c6\u01c7\u01c8\u01c9\u01ca\u01cb\u01cc\u01f1\u01f2\u01f3"),
        lambda: chr(rng.choice([0x3000] + list(range(0xFF01, 0xFFF0)))),
        lambda: chr(rng.choice([0x345, 0x17F, 0x130, 0x131, 0x3A3, 0x3C2, 0xDF, 0x1E9E, 0x212A, 0x2126, 0x200B, 0x200D, 0xFEFF, 0x206A, 0xFFFC, 0x2028, 0x2029])),
        lambda: chr(rng.randint(0x300, 0x36F)),
        lambda: "".join(assigned(lo, hi) for lo, hi in [rng.choice([
            (0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
            (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
            (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x1D400, 0x1D7FF), (0x2150, 0x218F), (0x2460, 0x24FF),
        ])] * rng.randint(1, 4)),
        lambda: rng.choice(["<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|ſtartoftext|>"]),
        lambda: assigned(0, 0x10FFFF),
        lambda: "e\u0301",
    ]
    weights = [30, 4, 5, 5, 3, 2, 3, 3, 6, 3, 1, 3, 3, 2, 2, 8, 1, 2, 1]
    texts = []
    for _ in range(n):
        parts = rng.choices(pools, weights, k=rng.randint(0, 24))
        sep = lambda: rng.choice([" ", " ", " ", "", "\n", "  "])
        texts.append("".join(p() + sep() for p in parts))
    return texts


def rust_str(s):
    out = []
    for ch in s:
        c = ord(ch)
        if 0x20 <= c < 0x7F and ch not in '"\\':
            out.append(ch)
        else:
            out.append(f"\\u{{{c:x}}}")
    return '"' + "".join(out) + '"'


def write_entities():
    import ftfy
    from ftfy.chardata import HTML_ENTITIES

    html5 = html.entities.html5
    upper = sorted(
        (k[1:], v) for k, v in HTML_ENTITIES.items() if k[1:] not in html5
    )
    # ftfy's table is exactly: every html5 name that ends in ';', plus `upper`.
    assert all(HTML_ENTITIES["&" + k] == v for k, v in html5.items() if k.endswith(";"))
    assert len(HTML_ENTITIES) == sum(k.endswith(";") for k in html5) + len(upper)
    lines = [
        "//! HTML character reference tables, generated by",
        "//! `python3 tools/make_tokenizer_fixture.py --write-entities`; do not edit.",
        f"//! Source: Python {platform.python_version()} `html.entities.html5` and",
        f"//! ftfy {importlib.metadata.version('ftfy')} `ftfy.chardata.HTML_ENTITIES`.",
        "",
        "/// `html.entities.html5`: entity name (without the `&`, with the `;` where",
        "/// the name has one) and its replacement, sorted by name.",
        "pub(crate) static HTML5: &[(&str, &str)] = &[",
    ]
    for k in sorted(html5):
        lines.append(f"    ({rust_str(k)}, {rust_str(html5[k])}),")
    lines += [
        "];",
        "",
        "/// The all-caps names that ftfy's `unescape_html` decodes on top of the",
        "/// `;`-terminated names of `HTML5` (such as `EACUTE;` for `É`): name without",
        "/// the `&`, and the replacement, sorted by name.",
        "pub(crate) static FTFY_UPPERCASE: &[(&str, &str)] = &[",
    ]
    for k, v in upper:
        lines.append(f"    ({rust_str(k)}, {rust_str(v)}),")
    lines += ["];", ""]
    with open(ENTITIES_RS, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {ENTITIES_RS}: {len(html5)} html5 names, {len(upper)} ftfy all-caps names")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-entities", action="store_true",
                    help="write src/clip/tokenizer/html_entities.rs instead of the fixture")
    ap.add_argument("--fuzz", type=int, metavar="N",
                    help="write N random strings (a larger differential check) instead of "
                         "the fixture's list; see the ignored test `extra_fixture_from_env`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output path (default tests/fixtures/tokenizer_ids.json)")
    args = ap.parse_args()
    if args.write_entities:
        write_entities()
    elif args.fuzz:
        # Character references can still produce characters this Python does
        # not know (e.g. &#x33253;); leave those strings out too.
        st = load_simple_tokenizer()
        known = lambda t: all(unicodedata.category(c) != "Cn"
                              for c in st.whitespace_clean(st.basic_clean(t)))
        texts = [t for t in fuzz_texts(args.fuzz, args.seed) if known(t)]
        print(f"{args.fuzz - len(texts)} strings with characters unknown to unicodedata "
              f"{unicodedata.unidata_version} left out")
        write_fixture(texts, args.out or "/tmp/tokenizer_fuzz.json")
    else:
        write_fixture(TEXTS, args.out or FIXTURE)


if __name__ == "__main__":
    main()
