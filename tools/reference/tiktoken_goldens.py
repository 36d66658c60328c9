#!/usr/bin/env python3
"""Encodes the tokenizer corpus with Python tiktoken, the engine mistral-common's Tekkenizer runs, and writes the
goldens that tests/tokenizer/test_tekken_reference.cpp compares quatre's encoder with.

The tiktoken.Encoding is built the way mistral-common builds it: mergeable_ranks = token bytes -> rank for the
first default_vocab_size - default_num_special_tokens entries of tekken.json, pat_str = config.pattern, no special
tokens; ids are rank + default_num_special_tokens. Raw-byte corpus lines are decoded with
bytes.decode("utf-8", "replace") first (what quatre's encoder does to invalid UTF-8).

Output (gzip, deterministic): a header line
    # tiktoken_goldens v1 corpus_fnv1a64=<16 hex> lines=<n> tiktoken=<version> tekken_sha256=<hex>
then one line per corpus line: the ids separated by spaces (empty line for empty text).

Needs only the standard library and tiktoken (no network). Typical use, from the repository root:
    python3 scripts/make_tekken_json.py /tmp/tekken.json
    python3 scripts/make_tokenizer_corpus.py /tmp/corpus.jsonl
    python3 tools/reference/tiktoken_goldens.py --tekken /tmp/tekken.json --corpus /tmp/corpus.jsonl \\
        --out tests/data/tokenizer/tiktoken_goldens.txt.gz
"""
import argparse
import base64
import gzip
import hashlib
import io
import json
import platform
import sys


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def load_tekken(path):
    """(mergeable_ranks, pattern, n_special) from a tekken.json, with the loading rules that matter here."""
    raw = open(path, "rb").read()
    doc = json.loads(raw)
    config = doc["config"]
    n_special = config["default_num_special_tokens"]
    n_inner = config["default_vocab_size"] - n_special
    vocab = doc["vocab"]
    if len(vocab) < n_inner:
        sys.exit(f"{path}: {len(vocab)} vocab entries, expected at least {n_inner}")
    ranks = {}
    for i, entry in enumerate(vocab[:n_inner]):
        if entry["rank"] != i:
            sys.exit(f"{path}: vocab[{i}].rank is {entry['rank']}, expected {i}")
        ranks[base64.b64decode(entry["token_bytes"])] = i
    if len(ranks) != n_inner:
        sys.exit(f"{path}: duplicate token bytes")
    return ranks, config["pattern"], n_special, hashlib.sha256(raw).hexdigest()


def corpus_texts(path):
    raw = open(path, "rb").read()
    texts = []
    for line in raw.decode("ascii").splitlines():
        if not line:
            continue
        entry = json.loads(line)
        texts.append(bytes.fromhex(entry["hex"]).decode("utf-8", "replace") if "hex" in entry else entry["text"])
    return texts, fnv1a64(raw)


def make_encoding(ranks, pattern):
    import tiktoken  # imported here so that --help works without it
    return tiktoken.Encoding(name="tekken_quatre_test", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tekken", required=True, help="tekken.json (scripts/make_tekken_json.py)")
    parser.add_argument("--corpus", required=True, help="corpus.jsonl (scripts/make_tokenizer_corpus.py)")
    parser.add_argument("--out", required=True, help="goldens to write (.txt.gz)")
    args = parser.parse_args()

    import tiktoken
    ranks, pattern, n_special, tekken_sha256 = load_tekken(args.tekken)
    texts, corpus_digest = corpus_texts(args.corpus)
    encoding = make_encoding(ranks, pattern)

    body = io.StringIO()
    body.write(f"# tiktoken_goldens v1 corpus_fnv1a64={corpus_digest:016x} lines={len(texts)} "
               f"tiktoken={tiktoken.__version__} python={platform.python_version()} tekken_sha256={tekken_sha256}\n")
    n_tokens = 0
    for text in texts:
        ids = [rank + n_special for rank in encoding.encode_ordinary(text)]
        n_tokens += len(ids)
        body.write(" ".join(map(str, ids)) + "\n")
    with open(args.out, "wb") as f:
        f.write(gzip.compress(body.getvalue().encode("ascii"), compresslevel=9, mtime=0))
    print(f"tiktoken {tiktoken.__version__}: {len(texts)} strings, {n_tokens} tokens -> {args.out}")


if __name__ == "__main__":
    main()
