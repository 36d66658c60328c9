#!/usr/bin/env python3
"""The English corpus of the demo model (issue #12): plain documents and chat conversations, split into
train / val / test by a hash of each source item, written as JSON lines for tools/demo/encode_corpus.cjs.

Sources (Debian packages, installed with apt-get; licences in tools/demo/README.md):
  fortunes, fortunes-min  /usr/share/games/fortunes/*  (BSD licence of fortune-mod; Debian main)
  dict-devil              /usr/share/dictd/devil.*     (Ambrose Bierce, The Devil's Dictionary, public domain)
  python3.11-doc          /usr/share/doc/python3.11/html/_sources/{tutorial,faq,howto,reference,library}
                          (PSF License Agreement version 2)

Each source item (one fortune, one dictionary entry, one documentation section or FAQ answer) goes to exactly one
split: sha256("<source>:<key>") decides, ~2% val and ~2% test. An item gives a plain document and, when it suits a
conversation (a Q:/A: fortune, a short fortune, a dictionary entry, an FAQ question), also a chat one, always in
the same split. Deterministic: the same installed packages give byte-identical output.

    python3 tools/demo/make_corpus.py OUT.jsonl [--summary SUMMARY.tsv]
Each line: {"split": "train|val|test", "source": "...", "kind": "raw", "text": "..."} or
           {"split": ..., "source": ..., "kind": "chat", "system": null|"...", "turns": [["user", "assistant"], ...]}
"""
import argparse
import collections
import gzip
import hashlib
import json
import os
import re
import sys

FORTUNE_DIR = "/usr/share/games/fortunes"
# Not prose, not English, or mostly ASCII drawings.
FORTUNE_SKIP = {"ascii-art", "translate-me", "perl", "zippy"}
DEVIL_DICT = "/usr/share/dictd/devil.dict.dz"
DEVIL_INDEX = "/usr/share/dictd/devil.index"
PYDOC_DIR = "/usr/share/doc/python3.11/html/_sources"
PYDOC_PARTS = ["tutorial", "faq", "howto", "reference", "library"]
PYDOC_MAX_CHARS = 3_000_000  # keeps the documentation from dominating the fortunes' everyday English

# Open prompts answered with a fortune: teach the model to answer any user turn in English, then stop.
OPEN_PROMPTS = [
    "Tell me something.", "Say something wise.", "Hello!", "Hi, who are you?", "Give me a quote.",
    "What do you think?", "Tell me a joke.", "Any advice for today?", "What's on your mind?",
    "Can you tell me a story?", "Hello! Who are you?", "Tell me something interesting.",
    "What is the meaning of life?", "Cheer me up.", "Say something funny.", "Good morning!",
    "I need some inspiration.", "What have you learned?", "Talk to me.", "Share a thought with me.",
]
SYSTEM_PROMPTS = [None, None, None, "You are a helpful assistant.", "You are a witty assistant who likes quotes."]
DEFINE_PROMPTS = ["What is {w}?", "Define {w}.", "What does {w} mean?", "What is the meaning of {w}?"]


def fail(message):
    sys.exit(f"make_corpus: {message}")


def h(key):
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def split_of(key):
    r = h("split:" + key) % 1000
    return "val" if r < 20 else "test" if r < 40 else "train"


def pick(key, options):
    return options[h("pick:" + key) % len(options)]


def clean(text):
    text = re.sub(r".\x08", "", text)  # overstriking (x BS x) of the old fortune files
    text = text.replace("\t", "    ").replace("\r", "")
    text = "".join(ch for ch in text if ch == "\n" or ch >= " ")
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()


def one_line(text):
    return re.sub(r"\s+", " ", text).strip()


# ------------------------------------------------------------------------------------------------ fortunes
def fortunes():
    if not os.path.isdir(FORTUNE_DIR):
        fail(f"{FORTUNE_DIR} missing: apt-get install fortunes fortunes-min")
    names = sorted(n for n in os.listdir(FORTUNE_DIR)
                   if "." not in n and n not in FORTUNE_SKIP and os.path.isfile(os.path.join(FORTUNE_DIR, n)))
    if len(names) < 20:
        fail(f"{FORTUNE_DIR}: only {len(names)} fortune files")
    qa = re.compile(r"^\s*Q:\s*(.+?)\s+A:\s*(.+)$", re.S)
    for name in names:
        with open(os.path.join(FORTUNE_DIR, name), "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
        for i, item in enumerate(re.split(r"\n%\n", raw)):
            text = clean(item.rstrip("%"))
            if len(text) < 20:
                continue
            key = f"fortunes/{name}:{i}"
            split = split_of(key)
            yield {"split": split, "source": "fortunes", "kind": "raw", "text": text}
            m = qa.match(text)
            if m:
                yield {"split": split, "source": "fortunes-qa", "kind": "chat", "system": None,
                       "turns": [[one_line(m.group(1)), one_line(m.group(2))]]}
            elif len(text) <= 400:
                yield {"split": split, "source": "fortunes-chat", "kind": "chat",
                       "system": pick(key + "/s", SYSTEM_PROMPTS), "turns": [[pick(key, OPEN_PROMPTS), text]]}


# ------------------------------------------------------------------------------------------------ Devil's Dictionary
def b64_number(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def devil():
    if not os.path.isfile(DEVIL_DICT):
        fail(f"{DEVIL_DICT} missing: apt-get install dict-devil")
    with gzip.open(DEVIL_DICT, "rb") as fh:
        data = fh.read()
    with open(DEVIL_INDEX, encoding="utf-8") as fh:
        index = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    count = 0
    for word, off, length in index:
        if word.startswith("00database"):
            continue
        text = clean(data[b64_number(off):b64_number(off) + b64_number(length)].decode("utf-8", "replace"))
        m = re.match(r"^([A-Z][A-Z' -]*[A-Z]),?\s*(?:[a-z]+\.\s*)*(.*)$", text, re.S)
        if not m or len(text) < 20:
            continue
        count += 1
        key = f"devil:{word}"
        split = split_of(key)
        yield {"split": split, "source": "devil", "kind": "raw", "text": text}
        definition = m.group(2).strip()
        if 20 <= len(definition) <= 1200:
            prompt = pick(key, DEFINE_PROMPTS).format(w=m.group(1).strip().lower())
            yield {"split": split, "source": "devil-chat", "kind": "chat", "system": None,
                   "turns": [[prompt, definition]]}
    if count < 500:
        fail(f"{DEVIL_DICT}: only {count} entries parsed")


# ------------------------------------------------------------------------------------------------ Python docs
HEADING_RULE = re.compile(r"^([=\-~^\"'`*+#:.])\1{2,}\s*$")


def rst_inline(text):
    text = re.sub(r":[a-z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # :role:`x <target>` -> x
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)  # `text <url>`_ -> text
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_*", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"\|([^|\s]+)\|", r"\1", text)
    return text.replace("\\", "")


def rst_sections(path):
    """(title, [paragraph, ...]) of one .rst.txt file: prose only (directives, code blocks, tables dropped)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    sections, title, paras, para = [], None, [], []
    skip_indent = None  # inside a directive or literal block: skip lines indented deeper than this

    def end_para():
        if para:
            text = one_line(rst_inline(" ".join(para)))
            if len(text) >= 40 and sum(c.isalpha() for c in text) >= 0.6 * len(text):
                paras.append(text)
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if line.strip() == "" or indent > skip_indent:
                i += 1
                continue
            skip_indent = None
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and HEADING_RULE.match(nxt) and not HEADING_RULE.match(line) and indent == 0:
            end_para()
            if title is not None or paras:
                sections.append((title, list(paras)))
            title, paras = one_line(rst_inline(line)), []
            i += 2
            continue
        if HEADING_RULE.match(line):
            end_para()
            i += 1
            continue
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped.startswith(">>>") or stripped.startswith("+-") or \
                stripped.startswith("=="):
            end_para()
            skip_indent = indent
            i += 1
            continue
        if stripped == "":
            end_para()
            i += 1
            continue
        para.append(stripped[:-1] if stripped.endswith("::") else stripped)
        if stripped.endswith("::"):
            end_para()
            skip_indent = indent
        i += 1
    end_para()
    if title is not None or paras:
        sections.append((title, list(paras)))
    return sections


def pydoc():
    if not os.path.isdir(PYDOC_DIR):
        fail(f"{PYDOC_DIR} missing: apt-get install python3-doc")
    total = 0
    for part in PYDOC_PARTS:
        folder = os.path.join(PYDOC_DIR, part)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".rst.txt"):
                continue
            for j, (title, paras) in enumerate(rst_sections(os.path.join(folder, name))):
                if not paras:
                    continue
                text = "\n\n".join(([title] if title else []) + paras)
                if total >= PYDOC_MAX_CHARS:
                    return
                total += len(text)
                key = f"pydoc/{part}/{name}:{j}"
                split = split_of(key)
                yield {"split": split, "source": "pydoc", "kind": "raw", "text": text}
                if part == "faq" and title and title.endswith("?"):
                    answer = paras[0] if len(paras[0]) > 200 or len(paras) == 1 else paras[0] + "\n\n" + paras[1]
                    yield {"split": split, "source": "pydoc-faq-chat", "kind": "chat", "system": None,
                           "turns": [[title, answer]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--summary", help="TSV of documents and characters per split and source")
    args = ap.parse_args()
    counts = collections.Counter()
    chars = collections.Counter()
    with open(args.out + ".tmp", "w", encoding="utf-8") as fh:
        for gen in (fortunes, devil, pydoc):
            for doc in gen():
                fh.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
                n = len(doc["text"]) if doc["kind"] == "raw" else sum(len(u) + len(a) for u, a in doc["turns"])
                counts[(doc["split"], doc["source"])] += 1
                chars[(doc["split"], doc["source"])] += n
    os.replace(args.out + ".tmp", args.out)
    lines = ["split\tsource\tdocuments\tcharacters"]
    lines += [f"{s}\t{src}\t{counts[(s, src)]}\t{chars[(s, src)]}" for s, src in sorted(counts)]
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if sum(c for (s, _), c in counts.items() if s == "test") < 100:
        fail("fewer than 100 held-out test documents")


if __name__ == "__main__":
    main()
