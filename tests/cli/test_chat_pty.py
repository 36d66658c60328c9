#!/usr/bin/env python3
"""`quatre chat` driven through a pseudo-terminal, as a person would: a reply streams and is followed by its
stats line; commands answer; multi-line input; /save, /reset, /load round-trip the conversation; Ctrl-C stops a
long reply and the chat goes on; Ctrl-D leaves with exit code 0.

Usage: test_chat_pty.py QUATRE_BINARY"""
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

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


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for test in (test_conversation, test_ctrl_c_stops_the_reply_not_the_chat):
            test(tmp)
            print(f"ok {test.__name__}")
