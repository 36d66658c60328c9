#!/usr/bin/env python3
"""Writes a Hugging Face tokenizer (tokenizer.json and tokenizer_config.json) equivalent to a tekken.json of the
layout PROTOCOL.md §1.1 describes (what scripts/make_tekken_json.py writes), for tools that read only the Hugging
Face form: llama.cpp's GGUF converter, in the peer benchmark of issue #6.

The tokenizer is byte-level BPE over the same ranks (id = number of special tokens + rank), the same
pre-tokenization pattern (split, isolated), the special tokens as added tokens (<s>, id 1, put first when special tokens are asked for), and merges recovered
from the ranks
the way a tiktoken vocabulary is converted: every split of a token into two tokens is a merge, merges ordered by
the rank of the token they make, then by the ranks of their halves; with ignore_merges, a piece that is a token is
taken whole, as tiktoken does. tests/tokenizer/hf_tokenizer_ids.cjs checks it against the JavaScript Tekken
encoder with the Hugging Face tokenizers library. Python 3 standard library only.

    python3 scripts/make_hf_tokenizer_json.py TEKKEN.json OUT_DIR
"""
import argparse
import base64
import json
import os
import sys


def fail(message):
    sys.exit(f"make_hf_tokenizer_json: {message}")


def byte_level_alphabet():
    """GPT-2's byte-level map: byte -> one printable character (what the ByteLevel pre-tokenizer produces)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def read_tekken(path):
    try:
        with open(path, encoding="utf-8") as f:
            tekken = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    config = tekken.get("config", {})
    n_special = config.get("default_num_special_tokens")
    vocab_size = config.get("default_vocab_size")
    if not isinstance(n_special, int) or not isinstance(vocab_size, int) or "pattern" not in config:
        fail(f"{path}: config needs pattern, default_vocab_size and default_num_special_tokens")
    entries = sorted(tekken.get("vocab", []), key=lambda v: v["rank"])
    if [v["rank"] for v in entries] != list(range(len(entries))):
        fail(f"{path}: vocab ranks are not 0..{len(entries) - 1}")
    ranks = [base64.b64decode(v["token_bytes"], validate=True) for v in entries][: vocab_size - n_special]
    specials = sorted(tekken.get("special_tokens", []), key=lambda s: s["rank"])
    if [s["rank"] for s in specials] != list(range(n_special)):
        fail(f"{path}: special_tokens ranks are not 0..{n_special - 1}")
    return config["pattern"], ranks, [s["token_str"] for s in specials]


def merges_of(ranks):
    """Every (left, right) split of a token into two tokens, ordered by (rank made, rank left, rank right)."""
    rank_of = {t: r for r, t in enumerate(ranks)}
    merges = []
    for rank, token in enumerate(ranks):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in rank_of and right in rank_of:
                merges.append((rank, rank_of[left], rank_of[right], left, right))
    merges.sort(key=lambda m: m[:3])
    return [(m[3], m[4]) for m in merges]


def tokenizer_json(pattern, ranks, specials):
    alphabet = byte_level_alphabet()

    def text(token):
        return "".join(alphabet[b] for b in token)

    n_special = len(specials)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(specials)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        # encode(..., add_special_tokens) puts <s> first, as the model's prompts begin.
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": specials[1], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": specials[1], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {specials[1]: {"id": specials[1], "ids": [1], "tokens": [specials[1]]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            # The special tokens too: added tokens missing from the model's vocabulary get ids after it.
            "vocab": {**{s: i for i, s in enumerate(specials)}, **{text(t): n_special + r for r, t in enumerate(ranks)}},
            "merges": [f"{text(a)} {text(b)}" for a, b in merges_of(ranks)],
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tekken", help="a tekken.json (PROTOCOL.md §1.1)")
    parser.add_argument("out_dir", help="where to write tokenizer.json and tokenizer_config.json")
    args = parser.parse_args()
    pattern, ranks, specials = read_tekken(args.tekken)
    os.makedirs(args.out_dir, exist_ok=True)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials[1], "eos_token": specials[2],
              "unk_token": specials[0], "add_bos_token": True, "add_eos_token": False,
              "model_max_length": 262144, "clean_up_tokenization_spaces": False}
    for name, value in (("tokenizer.json", tokenizer_json(pattern, ranks, specials)),
                        ("tokenizer_config.json", config)):
        path = os.path.join(args.out_dir, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
