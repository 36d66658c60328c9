#!/usr/bin/env python3
"""Encode throughput of Python tiktoken on the texts bench/bench_tokenizer.cpp uses, for comparison: the long
English-like text and the tokenizer corpus (scripts/make_tokenizer_corpus.py --english), with the Encoding built
from tekken.json as tools/reference/tiktoken_goldens.py builds it. Single-threaded (encode_ordinary), best of
--repeat runs. Prints MB/s (10^6 bytes of UTF-8 input per second) and tokens/s.

    python3 scripts/make_tekken_json.py /tmp/tekken.json
    python3 scripts/make_tokenizer_corpus.py /tmp/corpus.jsonl --english /tmp/english.txt
    python3 tools/reference/tiktoken_bench.py --tekken /tmp/tekken.json --corpus /tmp/corpus.jsonl \\
        --english /tmp/english.txt
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiktoken_goldens import corpus_texts, load_tekken, make_encoding  # noqa: E402


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def report(name, n_bytes, n_tokens, seconds):
    print(f"{name:<28} {n_bytes / seconds / 1e6:8.2f} MB/s {n_tokens / seconds / 1e6:8.3f} M tokens/s "
          f"({n_bytes} bytes, {n_tokens} tokens, {seconds * 1e3:.1f} ms)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tekken", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--english", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import tiktoken
    ranks, pattern, _, _ = load_tekken(args.tekken)
    encoding = make_encoding(ranks, pattern)
    english = open(args.english, encoding="utf-8").read()
    texts, _ = corpus_texts(args.corpus)
    print(f"tiktoken {tiktoken.__version__}, single thread, best of {args.repeat}")

    seconds, ids = best_of(args.repeat, lambda: encoding.encode_ordinary(english))
    report("encode english text", len(english.encode("utf-8")), len(ids), seconds)
    corpus_bytes = sum(len(t.encode("utf-8")) for t in texts)
    seconds, n_tokens = best_of(args.repeat, lambda: sum(len(encoding.encode_ordinary(t)) for t in texts))
    report("encode corpus (per string)", corpus_bytes, n_tokens, seconds)


if __name__ == "__main__":
    main()
