#!/usr/bin/env python3
"""The prompts of the demo model's goldens, rendered to ids by quatre itself (`quatre tokenize`, the v15 chat
template for chat prompts; raw prompts are <s> + the text), for tools/demo/train_demo.py on the GPU host.

    python3 tools/demo/make_prompts.py QUATRE TEKKEN_JSON OUT.json
"""
import json
import subprocess
import sys
import tempfile

PROMPTS = [
    {"name": "raw-once", "kind": "raw", "text": "Once upon a time"},
    {"name": "raw-life", "kind": "raw", "text": "The meaning of life is"},
    {"name": "chat-hello", "kind": "chat", "messages": [{"role": "user", "content": "Hello! Who are you?"}]},
    {"name": "chat-python", "kind": "chat", "messages": [{"role": "user", "content": "What is Python?"}]},
    {"name": "chat-system-joke", "kind": "chat", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me a joke."}]},
]


def tokenize(quatre, tekken, *args):
    r = subprocess.run([quatre, "tokenize", "--tokenizer", tekken, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"make_prompts: quatre tokenize {args}: {r.stderr.strip()}")
    return [int(t) for t in r.stdout.strip().split("\n")[0].split(",")]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    quatre, tekken, out = sys.argv[1:]
    for p in PROMPTS:
        if p["kind"] == "raw":
            p["ids"] = [1] + tokenize(quatre, tekken, p["text"])
        else:
            with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
                json.dump({"messages": p["messages"]}, fh)
                fh.flush()
                p["ids"] = tokenize(quatre, tekken, "--chat", fh.name)
        if p["ids"][0] != 1 or len(p["ids"]) < 3:
            sys.exit(f"make_prompts: {p['name']}: unexpected ids {p['ids']}")
    with open(out, "w") as fh:
        json.dump(PROMPTS, fh, indent=1)
    for p in PROMPTS:
        print(p["name"], p["ids"])


if __name__ == "__main__":
    main()
