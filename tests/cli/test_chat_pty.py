#!/usr/bin/env python3
"""`quatre chat` driven through a pseudo-terminal, as a person would: a reply streams and is followed by its
stats line; commands answer; multi-line input; /save, /reset, /load round-trip the conversation; Ctrl-C stops a
long reply and the chat goes on; Ctrl-D leaves with exit code 0; /image attaches images to the next message (the
reply equals `quatre run --image`), bad files and a model without vision are one-line errors.

Usage: test_chat_pty.py QUATRE_BINARY"""
import json
import os
import pty
import re
import select
import signal
import subprocess
import struct
import sys
import tempfile
import time
import zlib

QUATRE = sys.argv[1]


class Pty:
    """One `quatre chat` process on a pseudo-terminal (its controlling terminal, so ^C is a real SIGINT)."""

    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(QUATRE, [QUATRE, "chat"] + args)
        self.out = ""

    def send(self, text):
        os.write(self.fd, text.encode())

    def expect(self, pattern, timeout=60.0):
        """Reads until `pattern` (a regex) matches the output since the last expect; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.out)
            if m:
                self.out = self.out[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{self.out}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"chat exited while waiting for {pattern!r}; output:\n{self.out}")
                self.out += chunk.decode("utf-8", "replace")

    def wait(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 65536)
            except OSError:
                pass
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("chat did not exit")


STATS = r"\[(\d+) prompt tokens \((\d+) cached\), first token in [0-9.]+ s; (\d+) generated, [0-9.]+ tok/s; (\w+)\]"


def gen_model(dir, *extra):
    subprocess.run([QUATRE, "gen-model", dir, "--preset", "tiny", "--format", "native", *extra], check=True,
                   stdout=subprocess.DEVNULL)


def test_conversation(tmp):
    model = os.path.join(tmp, "tiny")
    gen_model(model)
    chat = Pty(["--model", model, "--temperature", "0", "-n", "8", "--seed", "1"])
    chat.expect(r"/help for commands")
    chat.expect(r"> ")

    chat.send("hello there\r")
    m = chat.expect(STATS)
    assert int(m.group(3)) >= 1 and m.group(4) in ("length", "stop"), m.group(0)
    first_prompt = int(m.group(1))

    chat.send("/help\r")
    chat.expect(r"/reasoning none\|high")
    chat.send("/reasoning sideways\r")
    chat.expect(r"error: /reasoning: expected none or high")
    chat.send("/reasoning high\r")
    chat.expect(r"reasoning effort: high")

    # Multi-line: a continued line, then a """ block; the continuation prompt shows.
    chat.send("first line \\\r")
    chat.expect(r"\.\.\. ")
    chat.send("second line\r")
    m = chat.expect(STATS)
    assert int(m.group(1)) > first_prompt, "the second turn's prompt holds the first turn"
    chat.send('"""\r')
    chat.send("block one\r")
    chat.send("block two\r")
    chat.send('"""\r')
    m = chat.expect(STATS)
    assert int(m.group(2)) > 0, "later turns reuse the conversation's cached blocks"

    saved = os.path.join(tmp, "conversation.json")
    chat.send(f"/save {saved}\r")
    chat.expect(r"saved 6 messages")
    doc = json.load(open(saved))
    assert doc["reasoning_effort"] == "high"
    roles = [m["role"] for m in doc["messages"]]
    assert roles == ["user", "assistant"] * 3, roles
    assert doc["messages"][0]["content"] == "hello there"
    assert doc["messages"][2]["content"] == "first line \nsecond line"
    assert doc["messages"][4]["content"] == "block one\nblock two"

    chat.send("/reset\r")
    chat.expect(r"conversation cleared")
    chat.send(f"/load {saved}\r")
    chat.expect(r"loaded 6 messages")
    chat.send("/load /nonexistent/file.json\r")
    chat.expect(r"error: /load: cannot read")
    chat.send("/frobnicate\r")
    chat.expect(r"error: unknown command /frobnicate")

    chat.send("\x04")  # Ctrl-D at an empty prompt
    assert chat.wait() == 0


def test_ctrl_c_stops_the_reply_not_the_chat(tmp):
    model = os.path.join(tmp, "deep")
    gen_model(model, "--layers", "48")  # ~50x the work per token of `tiny`: a 1,000-token reply takes seconds
    chat = Pty(["--model", model, "--temperature", "0", "-n", "1000", "--ignore-eos"])
    chat.expect(r"> ")
    chat.send("write for a long time\r")
    time.sleep(1.0)
    chat.send("\x03")
    m = chat.expect(STATS)
    assert m.group(4) == "stopped", m.group(0)
    assert 0 < int(m.group(3)) < 1000, m.group(0)
    chat.send("/help\r")  # still alive and answering
    chat.expect(r"/thoughts show\|hide")
    chat.send("\x03")  # Ctrl-C at the prompt drops the line, does not quit
    chat.expect(r"> ")
    chat.send("/quit\r")
    assert chat.wait() == 0


def png(width, height, seed):
    """An RGB PNG of a seeded pattern."""
    rows = (b"\x00" + bytes((x * (5 + seed) + y * 3 * seed + c * 60 + (x * y * (seed + 7)) % 31) & 255
                            for x in range(width) for c in range(3)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def test_images(tmp):
    model = os.path.join(tmp, "vision")
    gen_model(model)
    a, b, text = (os.path.join(tmp, name) for name in ("a.png", "b.png", "notes.txt"))
    open(a, "wb").write(png(60, 45, 1))
    open(b, "wb").write(png(90, 70, 2))
    open(text, "w").write("not an image")
    chat = Pty(["--model", model, "--temperature", "0", "-n", "8"])
    chat.expect(r"> ")
    chat.send("/help\r")
    chat.expect(r"/image PATH")
    chat.send("/image /nonexistent/x.png\r")
    chat.expect(r"error: /image: /nonexistent/x.png: cannot read")
    chat.send(f"/image {text}\r")
    chat.expect(r"error: /image: .*notes.txt: not a PNG, JPEG, WebP or GIF image")
    chat.send(f"/image {a}\r")
    chat.expect(r"attached .*a\.png \(resized to 84x56 px: 3x2 \[IMG\] tokens\); 1 image will go")
    chat.send(f"/image {b}\r")
    chat.expect(r"attached .*b\.png \(resized to 112x84 px: 4x3 \[IMG\] tokens\); 2 images will go")
    chat.send("What differs?\r")
    m = chat.expect(STATS)
    first_prompt = int(m.group(1))

    # The same images and text through `quatre run --image` (generate(), no engine): the same prompt and reply.
    run = subprocess.run([QUATRE, "run", "--model", model, "--image", a, "--image", b, "-p", "What differs?", "-n", "8",
                          "--temperature", "0"], capture_output=True, text=True, check=True)
    assert first_prompt == int(re.search(r"(\d+) prompt tokens", run.stderr).group(1)), (m.group(0), run.stderr)
    saved = os.path.join(tmp, "images.json")
    chat.send(f"/save {saved}\r")
    chat.expect(r"saved 2 messages")
    doc = json.load(open(saved))
    parts = doc["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"], parts
    assert parts[0]["image_url"]["url"] == "file://" + a and parts[1]["image_url"]["url"] == "file://" + b, parts
    assert doc["messages"][1]["content"] == run.stdout[:-1], (doc["messages"][1], run.stdout)

    chat.send("And now?\r")
    m = chat.expect(STATS)
    assert int(m.group(2)) >= first_prompt // 16 * 16, "the second turn reuses the image turn's blocks: " + m.group(0)
    chat.send("/reset\r")
    chat.expect(r"conversation cleared")
    chat.send(f"/load {saved}\r")
    chat.expect(r"loaded 2 messages")
    chat.send("And now?\r")
    m2 = chat.expect(STATS)
    assert m2.group(1) == m.group(1), "the loaded conversation renders the same prompt, images included"
    chat.send("\x04")
    assert chat.wait() == 0

    text_only = os.path.join(tmp, "text-only")
    gen_model(text_only, "--text-only")
    chat = Pty(["--model", text_only, "--temperature", "0", "-n", "4"])
    chat.expect(r"> ")
    chat.send(f"/image {a}\r")
    chat.expect(r"error: /image: this model has no vision tower")
    chat.send(f"/load {saved}\r")
    chat.expect(r"error: /load: .*no vision tower")
    chat.send("hello\r")
    m = chat.expect(STATS)
    assert m.group(4) in ("length", "stop"), m.group(0)
    chat.send("/quit\r")
    assert chat.wait() == 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for test in (test_conversation, test_images, test_ctrl_c_stops_the_reply_not_the_chat):
            test(tmp)
            print(f"ok {test.__name__}")
