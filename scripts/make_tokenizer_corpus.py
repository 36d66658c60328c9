#!/usr/bin/env python3
"""Writes the deterministic tokenizer test corpus: JSON lines {"cat": CATEGORY, "text": STR} or, for raw byte
strings that need not be UTF-8, {"cat": "bytes", "hex": HEX}. The same corpus feeds the JavaScript reference
(tests/tokenizer/js_reference_ids.cjs), the tiktoken goldens (tools/reference/tiktoken_goldens.py) and the C++
exactness test. Python 3 standard library only; the output depends on nothing but this file (own PRNG, no
unicodedata), so every machine writes the same bytes.

Code points are drawn only from blocks whose letters, marks, numbers and spaces were all assigned by
Unicode 14.0 (PCRE2 10.42's tables) and kept their categories since: engines with different Unicode versions
(PCRE2 14.0, V8 17.0, the Rust regex crate of tiktoken) must classify them alike.

    python3 scripts/make_tokenizer_corpus.py OUT.jsonl [--english OUT.txt]

--english also writes a long English-like text (about 1 MB of sentences and paragraphs) that the encode
benchmarks of quatre (bench/bench_tokenizer.cpp) and tiktoken (tools/reference/tiktoken_bench.py) share.
"""
import argparse
import json
import os
import sys

# ---------------------------------------------------------------------------------------------------------------
# Deterministic PRNG (splitmix64), independent of Python's random module across versions.


class Rng:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def between(self, lo, hi):  # inclusive
        return lo + self.below(hi - lo + 1)

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, p_percent):
        return self.below(100) < p_percent


def chars(*ranges):
    """Characters of inclusive code point ranges (a single int is a one-character range)."""
    out = []
    for r in ranges:
        lo, hi = (r, r) if isinstance(r, int) else r
        out.extend(chr(c) for c in range(lo, hi + 1))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Alphabets (all assigned, with stable categories, since long before Unicode 14).

LATIN_LOWER = chars((0x61, 0x7A))
LATIN_UPPER = chars((0x41, 0x5A))
LATIN_ACCENTED = chars((0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0xFF), (0x100, 0x17F))
LATIN_TITLECASE = chars(0x1C5, 0x1C8, 0x1CB, 0x1F2)  # Lt
MODIFIER_LETTERS = chars((0x2B0, 0x2C1))  # Lm
SCRIPTS = {
    "greek": chars((0x391, 0x3A1), (0x3A3, 0x3A9), (0x3AC, 0x3CE), (0x1F88, 0x1F8F)),  # incl. Lt
    "cyrillic": chars((0x400, 0x45F)),
    "arabic": chars((0x621, 0x63A), (0x641, 0x64A), (0x64B, 0x652), 0x640),  # letters, harakat (Mn), tatweel (Lm)
    "hebrew": chars((0x5D0, 0x5EA), (0x5B0, 0x5BC)),
    "devanagari": chars((0x905, 0x939), (0x93E, 0x94D)),  # letters and vowel signs (Mc/Mn)
    "thai": chars((0xE01, 0xE2E), (0xE30, 0xE3A), (0xE40, 0xE46), (0xE47, 0xE4E)),
    "cjk": chars((0x4E00, 0x9FA5)),
    "hangul": chars((0xAC00, 0xD7A3), (0x1100, 0x1112)),
    "kana": chars((0x3041, 0x3096), (0x30A1, 0x30FA), 0x30FC, 0x309D, 0x309E, (0xFF66, 0xFF9D)),
}
SCRIPT_PUNCT = {
    "greek": chars(0x387, 0x37E, 0x2C, 0x2E),
    "cyrillic": chars(0x2C, 0x2E, 0x2014, 0xAB, 0xBB, 0x21, 0x3F),
    "arabic": chars(0x60C, 0x61B, 0x61F, 0x66A, (0x660, 0x669)),
    "hebrew": chars(0x5BE, 0x5C3, 0x2C, 0x2E, 0x22),
    "devanagari": chars(0x964, 0x965, (0x966, 0x96F)),
    "thai": chars(0xE2F, 0xE5A, 0xE5B, (0xE50, 0xE59)),
    "cjk": chars(0x3001, 0x3002, 0x300C, 0x300D, 0xFF01, 0xFF08, 0xFF09, 0xFF0C, 0xFF1F, (0xFF10, 0xFF19)),
    "hangul": chars(0x2C, 0x2E, 0x3F, 0x21, 0x7E),
    "kana": chars(0x3001, 0x3002, 0x30FB, 0x300E, 0x300F, 0xFF61),
}
COMBINING = chars((0x300, 0x36F), (0x483, 0x487), (0x1AB0, 0x1ABD), (0x20D0, 0x20DC), (0x1DC0, 0x1DF9))
DIGITS_OTHER = chars((0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19), (0xE50, 0xE59),  # Nd
                     0xB2, 0xB3, 0xB9, 0xBC, 0xBD, 0xBE, (0x2160, 0x216F), (0x2460, 0x2473), 0x3007)  # No, Nl
EMOJI = chars((0x1F600, 0x1F64F), (0x1F680, 0x1F6C5), (0x1F300, 0x1F320), (0x1F90D, 0x1F93A), 0x2764, 0x2705,
              0x2B50, 0x26A1, 0x1F44D, 0x1F44B, 0x1F525, 0x1F4AF)
SKIN_TONES = chars((0x1F3FB, 0x1F3FF))
ZWJ, VS16, KEYCAP = "\u200D", "\uFE0F", "\u20E3"
ZWJ_SEQUENCES = [
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",  # family
    "\U0001F469\U0001F3FD\u200D\U0001F4BB",  # woman technologist, skin tone
    "\U0001F3F3\uFE0F\u200D\U0001F308",  # rainbow flag
    "\u2764\uFE0F\u200D\U0001F525",  # heart on fire
    "\U0001F1EB\U0001F1F7", "\U0001F1EF\U0001F1F5", "\U0001F1FA\U0001F1F8",  # flags
    "1\uFE0F\u20E3", "#\uFE0F\u20E3",  # keycaps
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",  # tag sequence (Scotland)
]
# Unicode White_Space plus look-alikes that are not whitespace (U+001C..001F, U+200B, U+180E, U+2060).
WHITESPACE = chars(0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0xA0, 0x1680, (0x2000, 0x200A), 0x2028, 0x2029, 0x202F,
                   0x205F, 0x3000)
NOT_WHITESPACE = chars((0x1C, 0x1F), 0x200B, 0x180E, 0x2060)
# Where the JavaScript regex \s differs from Unicode White_Space (tiktoken): U+0085 is White_Space but not JS
# \s; U+FEFF is JS \s but not White_Space. Strings with them get their own category, skipped by the JS test.
JS_WHITESPACE_DIFFERS = ["\u0085", "\uFEFF"]
ASCII_PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
SPECIAL_LOOKALIKES = ["[INST]", "[/INST]", "</s>", "<s>", "<unk>", "<pad>", "[THINK]", "[/THINK]", "[TOOL_CALLS]",
                      "[ARGS]", "[IMG]", "[IMG_END]", "[MODEL_SETTINGS]", "[/MODEL_SETTINGS]", "[SYSTEM_PROMPT]",
                      "<SPECIAL_38>", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "<|endoftext|>", "<|im_start|>"]
ENGLISH = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
           "word but not what all were we when your can said there use an each which she do how their if will up "
           "other about out many then them these so some her would make like him into time has look two more write "
           "go see number no way could people my than first water been call who oil its now find long down day did "
           "get come made may part tokenizer Mistral model server request HTTPServer XMLHttpRequest iPhone don't "
           "I'll we're it's O'Neil McDonald JSON API URL").split()
# Blocks whose multi-byte characters may appear in random byte soup (stable, see the module comment).
STABLE_RANGES = [(0x80, 0x7FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x1112), (0x2000, 0x206F),
                 (0x3000, 0x30FF), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0xFF01, 0xFF9D), (0xFFFD, 0xFFFD)]


def is_stable(ch):
    c = ord(ch)
    return c < 0x80 or any(lo <= c <= hi for lo, hi in STABLE_RANGES)


# ---------------------------------------------------------------------------------------------------------------
# Generators, one per category; each returns one string (or bytes for "bytes").


def latin_word(rng):
    kind = rng.below(10)
    n = rng.between(1, 9)
    if kind < 4:
        return rng.choice(ENGLISH)
    if kind < 6:
        w = "".join(rng.choice(LATIN_LOWER) for _ in range(n))
        return w.capitalize() if rng.chance(30) else w
    if kind == 6:
        return "".join(rng.choice(LATIN_UPPER) for _ in range(n))  # ALLCAPS
    if kind == 7:  # CamelCase / mixedCASE
        return "".join(rng.choice(LATIN_UPPER) + "".join(rng.choice(LATIN_LOWER) for _ in range(rng.between(0, 5)))
                       for _ in range(rng.between(2, 4)))
    if kind == 8:
        return "".join(rng.choice(LATIN_ACCENTED + LATIN_LOWER) for _ in range(n))
    return rng.choice(LATIN_TITLECASE + MODIFIER_LETTERS) + "".join(rng.choice(LATIN_LOWER) for _ in range(n))


def separator(rng):
    r = rng.below(20)
    if r < 12:
        return " "
    if r < 15:
        return rng.choice([", ", ". ", "; ", ": ", "! ", "? ", " - ", " (", ") ", "'s "])
    if r < 17:
        return rng.choice(["\n", "\n\n", "\r\n", "  ", "\t"])
    return rng.choice(ASCII_PUNCT) + rng.choice(["", " "])


def gen_latin(rng):
    return "".join(latin_word(rng) + separator(rng) for _ in range(rng.between(1, 14))).rstrip(" ") + \
        rng.choice(["", ".", "!", "?", "\n", " "])


def gen_script(rng, script):
    letters, punct = SCRIPTS[script], SCRIPT_PUNCT[script]
    words = []
    for _ in range(rng.between(1, 10)):
        if rng.chance(10):
            words.append(latin_word(rng))
        elif rng.chance(10):
            words.append(str(rng.below(10000)))
        else:
            words.append("".join(rng.choice(letters) for _ in range(rng.between(1, 8))))
        if rng.chance(30):
            words[-1] += rng.choice(punct)
    glue = "" if script in ("cjk", "kana", "thai") and rng.chance(60) else " "
    return glue.join(words)


def gen_emoji(rng):
    parts = []
    for _ in range(rng.between(1, 6)):
        r = rng.below(8)
        if r < 2:
            parts.append(rng.choice(EMOJI))
        elif r == 2:
            parts.append(rng.choice(EMOJI) + rng.choice(SKIN_TONES))
        elif r == 3:
            parts.append(rng.choice(ZWJ_SEQUENCES))
        elif r == 4:
            parts.append(rng.choice(EMOJI) + ZWJ + rng.choice(EMOJI))
        elif r == 5:
            parts.append(rng.choice(EMOJI) + VS16)
        else:
            parts.append(latin_word(rng))
        parts.append(rng.choice(["", "", " ", "\n", ", "]))
    return "".join(parts)


def gen_combining(rng):
    out = []
    for _ in range(rng.between(1, 8)):
        base = rng.choice(["", " ", "1", "-"] + LATIN_LOWER + LATIN_UPPER + SCRIPTS["cyrillic"] + SCRIPTS["greek"])
        marks = "".join(rng.choice(COMBINING) for _ in range(rng.between(1, 4)))
        out.append(base + marks + (latin_word(rng) if rng.chance(40) else ""))
        out.append(rng.choice(["", " ", " ", "\n"]))
    return "".join(out)


def gen_whitespace(rng):
    out = []
    for _ in range(rng.between(1, 10)):
        r = rng.below(6)
        if r < 3:
            out.append("".join(rng.choice(WHITESPACE + [" ", " ", "\n"]) for _ in range(rng.between(1, 6))))
        elif r == 3:
            out.append(rng.choice(NOT_WHITESPACE) * rng.between(1, 3))
        elif r == 4:
            out.append(str(rng.below(1000)) if rng.chance(30) else rng.choice(ASCII_PUNCT))
        else:
            out.append(latin_word(rng))
    return "".join(out)


def gen_js_whitespace_differs(rng):
    out = []
    for _ in range(rng.between(1, 8)):
        r = rng.below(5)
        if r == 0:
            out.append(rng.choice(JS_WHITESPACE_DIFFERS) * rng.between(1, 3))
        elif r == 1:
            out.append(rng.choice(WHITESPACE))
        elif r == 2:  # " \uFEFFword", " \u0085word": the two regexes split these differently
            out.append(" " + rng.choice(JS_WHITESPACE_DIFFERS) + latin_word(rng))
        else:
            out.append(latin_word(rng))
    return "".join(out)


def gen_digits(rng):
    forms = [
        lambda: str(rng.below(10 ** rng.between(1, 12))),
        lambda: f"{rng.below(100000) / 100:.2f}",
        lambda: f"-{rng.below(1000)}",
        lambda: f"{rng.below(10)}.{rng.below(100)}e{rng.choice(['-', '+', ''])}{rng.below(30)}",
        lambda: f"{rng.between(1, 999)},{rng.below(1000):03d},{rng.below(1000):03d}",
        lambda: f"0x{rng.below(1 << 32):X}",
        lambda: f"{rng.between(1990, 2030)}-{rng.between(1, 12):02d}-{rng.between(1, 28):02d}",
        lambda: f"{rng.below(24):02d}:{rng.below(60):02d}",
        lambda: f"+33 6 {rng.below(100):02d} {rng.below(100):02d} {rng.below(100):02d}",
        lambda: f"{rng.below(100)}%",
        lambda: rng.choice(["$", "€", "£", "¥"]) + str(rng.below(10000)),
        lambda: "".join(rng.choice(DIGITS_OTHER) for _ in range(rng.between(1, 5))),
        lambda: "is 22 degrees",
        lambda: "3.14 -42",
    ]
    return (" " if rng.chance(50) else "").join(rng.choice(forms)() + rng.choice(["", " ", " ", ", ", "\n", "x"])
                                                 for _ in range(rng.between(1, 6)))


def identifier(rng):
    w = latin_word(rng).replace("'", "")
    return w if w and not w[0].isdigit() else "x" + w


def gen_code(rng):
    name, arg, other = identifier(rng), identifier(rng), identifier(rng)
    indent = rng.choice(["    ", "  ", "\t"])
    nl = "\r\n" if rng.chance(15) else "\n"
    snippets = [
        f"def {name}({arg}):{nl}{indent}return {arg} * {rng.below(100)}{nl}",
        f"int {name}(int {arg}) {{{nl}{indent}if ({arg} <= {rng.below(9)}) return 1;{nl}{indent}return {arg}*{name}({arg}-1);{nl}}}",
        f"const {name} = ({arg}) => {arg}.map(x => x.{other} ?? null);{nl}",
        f"for (size_t i = 0; i < {arg}.size(); ++i) {{ {other}[i] += {arg}[i]; }}",
        f"# {latin_word(rng)} {latin_word(rng)}: TODO(name) fix #{rng.below(500)}{nl}",
        f"// {gen_latin(rng)}{nl}",
        f"if {arg} != nil {{{nl}{indent}return fmt.Errorf(\"{name}: %w\", {arg}){nl}}}",
        f"SELECT {arg}, COUNT(*) FROM {name} WHERE {other} >= {rng.below(100)} GROUP BY {arg};",
        f"<div class=\"{name}\">{latin_word(rng)}</div>{nl}",
        f"{name}=$(grep -E '^[a-z]+$' /etc/{other} | wc -l) && echo \"${{{name}}}\"",
        f"x += y; z -= w; a *= b; c /= d; e %= f; g &&= h; i ||= j; k ??= l;{indent}",
        f"re = /^(?:[a-z0-9!#$%&'*+/=?^_`{{|}}~-]+)$/i;",
        f"{indent}{indent}{name}.{other}({arg}){nl}{nl}{nl}",
        f"template <typename T> T {name}(const T& {arg}) {{ return {arg}; }}",
        f"    raise ValueError(f\"{{{arg}!r}} is not a valid {name}\"){nl}",
        f"def f(x):{nl}    return",
    ]
    return "".join(rng.choice(snippets) for _ in range(rng.between(1, 3)))


def gen_url(rng):
    host = ".".join(identifier(rng).lower() for _ in range(rng.between(1, 3))) + rng.choice([".com", ".org", ".fr", ".io"])
    path = "/".join(identifier(rng) for _ in range(rng.between(0, 4)))
    forms = [
        f"https://{host}/{path}",
        f"http://{host}/{path}?q={identifier(rng)}&page={rng.below(100)}#sec-{rng.below(10)}",
        f"{identifier(rng).lower()}@{host}",
        f"C:\\Users\\{identifier(rng)}\\{identifier(rng)}.txt",
        f"/usr/local/{path}/{identifier(rng)}.so.{rng.below(9)}",
        f"path/to C:\\Win",
        f"ftp://{host}:{rng.between(1, 65535)}/{path}/",
        f"<https://{host}/{path}>",
        f"[{latin_word(rng)}](https://{host}/{path})",
    ]
    return rng.choice(["", "See ", "url: ", "(", "→ "]) + rng.choice(forms) + rng.choice(["", ".", ")", " ok", "\n"])


def json_value(rng, depth):
    r = rng.below(9 if depth < 3 else 6)
    if r == 0:
        return rng.below(100000) - 50000
    if r == 1:
        return rng.below(1000000) / 997.0
    if r == 2:
        return rng.choice([True, False, None])
    if r in (3, 4, 5):
        return rng.choice([gen_latin, lambda g: gen_script(g, rng.choice(list(SCRIPTS))), gen_emoji])(rng)[:40]
    if r in (6, 7):
        return {identifier(rng): json_value(rng, depth + 1) for _ in range(rng.between(0, 4))}
    return [json_value(rng, depth + 1) for _ in range(rng.between(0, 4))]


def gen_json(rng):
    value = {identifier(rng): json_value(rng, 1) for _ in range(rng.between(1, 4))}
    indent = rng.choice([None, None, 2, 4])
    return json.dumps(value, ensure_ascii=rng.chance(30), indent=indent)


def gen_special(rng):
    out = []
    for _ in range(rng.between(1, 6)):
        out.append(rng.choice(SPECIAL_LOOKALIKES) if rng.chance(50) else latin_word(rng))
        out.append(rng.choice(["", "", " ", "\n"]))
    return "".join(out)


def utf8_fragment(rng):
    ch = rng.choice(LATIN_ACCENTED + SCRIPTS["cjk"][:200] + SCRIPTS["thai"] + EMOJI[:40] + SCRIPTS["cyrillic"])
    b = ch.encode("utf-8")
    return b if rng.chance(60) else b[:rng.between(1, len(b))]  # whole or truncated


def gen_bytes(rng):
    while True:
        out = bytearray()
        for _ in range(rng.between(1, 40)):
            r = rng.below(10)
            if r < 3:
                out += bytes([rng.between(0x20, 0x7E)])
            elif r < 5:
                out += bytes([rng.between(0x80, 0xFF)])
            elif r < 7:
                out += utf8_fragment(rng)
            elif r == 7:
                out += rng.choice([b"\xC0\xAF", b"\xE0\x80\xAF", b"\xED\xA0\x80", b"\xED\xBF\xBF", b"\xF4\x90\x80\x80",
                                   b"\xF5\x80", b"\xFF", b"\xFE", b"\x80\x80", b"\xE2\x82", b"\xE2\x28\xA1",
                                   b"\xF0\x9F\x98", b"\xEF\xBF\xBD", b"\xC2"])
            elif r == 8:
                out += rng.choice([b" ", b"\n", b"\r\n", b"\t", b"  "])
            else:
                out += bytes([rng.below(0x20)])
        if all(is_stable(ch) for ch in out.decode("utf-8", "replace")):
            return bytes(out)


def gen_long(rng):
    unit = rng.choice(["a", "ab", " ", "=", "-", "0", "\n", "é", "中", "abc", "xyz "])
    forms = [
        lambda: unit * rng.between(100, 700),
        lambda: "".join(rng.choice(LATIN_LOWER) for _ in range(rng.between(100, 900))),  # one long word
        lambda: "".join(rng.choice(SCRIPTS["cjk"]) for _ in range(rng.between(60, 300))),
        lambda: "".join(rng.choice(ASCII_PUNCT) for _ in range(rng.between(100, 600))),
        lambda: " ".join(gen_latin(rng) for _ in range(rng.between(10, 40))),
    ]
    return rng.choice(forms)()


def gen_mixed(rng):
    gens = [gen_latin, gen_emoji, gen_combining, gen_whitespace, gen_digits, gen_code, gen_url, gen_special,
            lambda g: gen_script(g, g.choice(list(SCRIPTS)))]
    return "".join(rng.choice(gens)(rng)[:rng.between(5, 80)] for _ in range(rng.between(2, 5)))


CATEGORIES = [  # (name, count, generator)
    ("latin", 1400, gen_latin),
    *[(script, 400, (lambda s: lambda g: gen_script(g, s))(script)) for script in SCRIPTS],
    ("emoji", 600, gen_emoji),
    ("combining", 500, gen_combining),
    ("whitespace", 900, gen_whitespace),
    ("js_whitespace_differs", 200, gen_js_whitespace_differs),
    ("digits", 600, gen_digits),
    ("code", 800, gen_code),
    ("url", 500, gen_url),
    ("json", 600, gen_json),
    ("special_lookalike", 400, gen_special),
    ("bytes", 1000, gen_bytes),
    ("mixed", 1000, gen_mixed),
    ("long", 40, gen_long),
]

FIXED = [  # PROTOCOL §1.4/§1.5 examples and edge cases, first in the file
    "Hello, how are you?", "Plz tekkenize me", "  leading and trailing  ", "line1\nline2\r\n\r\nline3\n\n\n",
    "CamelCaseWordsHTTPServerXMLHttpRequest", "don't I'll", "3.14 -42", "is 22 degrees", "def f(x):\n    return",
    "path/to C:\\Win", "\U0001F600ok", "", " ", "\n", "\r\n", "a", "[INST]", "</s>", "<s>", "[THINK]",
    "\u00A0\u00A0x", "x\u2028y", "\u3000\u3000日本", "\u180E\u180Ex", "x \u180E", "\u200Bx", "\u001C\u001D",
]


def english_text(n_bytes):
    """Sentences of common words with capitals, punctuation, numbers and paragraph breaks."""
    rng = Rng(0xE9611511)
    words = [w for w in ENGLISH if w.isascii()]
    paragraphs, size = [], 0
    while size < n_bytes:
        sentences = []
        for _ in range(rng.between(2, 7)):
            sentence = [rng.choice(words) if rng.chance(85) else  # plus pseudo-words that BPE must merge
                        "".join(rng.choice(LATIN_LOWER) for _ in range(rng.between(3, 10)))
                        for _ in range(rng.between(4, 18))]
            if rng.chance(15):
                sentence.insert(rng.below(len(sentence)), str(rng.below(3000)))
            if rng.chance(25):
                k = rng.below(len(sentence) - 1)
                sentence[k] += ","
            text = " ".join(sentence)
            sentences.append(text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"]))
        paragraphs.append(" ".join(sentences))
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs) + "\n"


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description="Writes the tokenizer test corpus (see the module comment).")
    parser.add_argument("out", help="corpus.jsonl to write")
    parser.add_argument("--english", help="also write the benchmark's English-like text here")
    args = parser.parse_args()
    lines = [json.dumps({"cat": "fixed", "text": t}) for t in FIXED]
    for index, (name, count, gen) in enumerate(CATEGORIES):
        rng = Rng(0x5EED0000 + index)
        for _ in range(count):
            value = gen(rng)
            if isinstance(value, bytes):
                lines.append(json.dumps({"cat": name, "hex": value.hex()}))
            else:
                lines.append(json.dumps({"cat": name, "text": value}))
    write_atomically(args.out, "\n".join(lines) + "\n")
    if args.english:
        write_atomically(args.english, english_text(1 << 20))


if __name__ == "__main__":
    main()
