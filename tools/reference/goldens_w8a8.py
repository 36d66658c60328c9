#!/usr/bin/env python3
"""Static W8A8 FP8 goldens from the pure-Python float64 reference forward (goldens_pyref.py, w8a8=True), for the
engine's W8A8 mode: no torch, numpy or transformers needed, runs anywhere.

  python3 tools/reference/goldens_w8a8.py CKPT_DIR/tiny-hf-fp8-s1 [--out ROOT] [--golden-dir DIR]

For the prompts p13, p6, p200 and both softmax-scale modes (hf, release) it writes
ROOT/tests/data/golden/w8a8/<checkpoint>.<prompt>.<mode>.safetensors (ROOT defaults to the repository root) with

  input_ids I64 [T], positions I64 [T], logit_rows I64 [N]   the same as the W8A16 golden of the same case
  logits F32 [N, V]                                           the W8A8 logits of those rows
  hidden_states F32 [L+1, T, D]                               [0] embeddings, [i] output of decoder layer i-1 for
                                                              1 <= i < L, [L] the final RMSNorm output
  last_layer_output F32 [T, D]                                output of decoder layer L-1 before the final norm

(every prompt gets the hidden states: they cost nothing here) and string metadata (see META_DOC below).

W8A8 (MODEL.md §6.2, static activation scales as in transformers FineGrainedFP8 and vLLM fp8 static): every FP8
linear of the text decoder except self_attn.kv_b_proj computes x_q = fp8_e4m3_rne(clamp(x / a, -448, 448)) and
y = (sum_k x_q[k] * W_fp8[n, k]) * (a * weight_scale_inv), W_fp8 the raw E4M3 values; kv_b_proj stays W8A16
(dequantized weight, unquantized input), because the engine absorbs it into the attention as vLLM does. The
existing W8A16 goldens of the same checkpoint are the source of the ids, positions and rows (asserted equal to
goldens_prompts.py) and of the weights hash (asserted equal to the checkpoint's); the script prints, per case,
max |W8A8 logits - W8A16 golden logits|.
"""
import argparse
import array
import contextlib
import json
import math
import os
import random
import struct
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from goldens_ckpt import DTYPE_SIZE, Checkpoint, decode_f32, numel, read_safetensors  # noqa: E402
from goldens_prompts import LOGIT_ROWS_DOC, PROMPT_GENERATOR_DOC, PROMPTS, logit_rows, prompt_ids  # noqa: E402
from goldens_pyref import (MODES, W8A8Linear, expected_scaling, pyref_forward, pyref_head,  # noqa: E402
                           pyref_supported)

REPO_ROOT = os.path.dirname(os.path.dirname(_HERE))
GOLDEN_SUBDIR = "tests/data/golden"
W8A8_SUBDIR = GOLDEN_SUBDIR + "/w8a8"
MAX_FILE_BYTES = 1_000_000

NOTE = ("Static W8A8 FP8 logits of the checkpoint (every FP8 text linear but kv_b_proj takes an E4M3-rounded input "
        "x/activation_scale and the raw E4M3 weight, rescaled by activation_scale*weight_scale_inv), computed by the "
        "pure-Python float64 reference forward for the engine's W8A8 mode.")
W8A8_LINEARS = ("self_attn.q_a_proj, self_attn.q_b_proj, self_attn.kv_a_proj_with_mqa, self_attn.o_proj, "
                "mlp.shared_experts.{gate,up,down}_proj, mlp.experts.gate_up_proj (expert e: activation scale "
                "gate_up_proj_activation_scale[e] shared by gate and up, weight scale gate_up_proj_scale_inv[e,0] for "
                "gate rows, [e,1] for up rows), mlp.experts.down_proj (down_proj_activation_scale[e], "
                "down_proj_scale_inv[e]); a dense mlp.{gate,up,down}_proj would be too; kv_b_proj is W8A16; "
                "embeddings, lm_head, norms and the router gate are BF16 as loaded")
ROUNDING = ("x_q = fp8_e4m3_rne(clamp(x/a, -448, 448)): round to nearest, ties to even, onto the E4M3FN grid "
            "(subnormals m/8*2^-6, max 448); x/a is a float64 division of pyref's float64 activation by the float32 "
            "scale, so an element within float32 rounding of a midpoint may round the other way than in an engine "
            "that divides in float32: compare with a tolerance")
META_DOC = ("case, checkpoint, architecture, weights_fnv1a64, config_fnv1a64, softmax_scale_mode, scaling, "
            "dtype_semantics (fp8-w8a8-static), kv_b (w8a16), w8a8_linears, activation_rounding, source "
            "(pyref-float64), compute_dtype, note, prompt, prompt_generator, logit_rows_rule, hidden_states_layout, "
            "w8a16_golden, w8a16_golden_max_abs_diff, w8a16_golden_rms_diff, pyref_w8a16_vs_golden_max_abs_diff, "
            "sensitivity_f32_division_max_abs_diff, sensitivity_perturbed_max_abs_diff, sensitivity_note")
SENSITIVITY_NOTE = (
    "E4M3 rounding makes the W8A8 forward chaotic: where an input element sits within rounding error of a midpoint, "
    "another implementation rounds it to the other neighbour (one E4M3 step, ~6%), and every later quantized linear "
    "amplifies the change, so one such flip moves the logits by ~0.05-0.15 on this tiny random model; "
    "sensitivity_f32_division_max_abs_diff = max |logits - the same forward with each W8A8 input rounded to float32 "
    "and divided in float32|; sensitivity_perturbed_max_abs_diff = the largest of three forwards with every W8A8 "
    "input element multiplied by 1 + u, u uniform in [-1e-5, 1e-5] (seeded); 0 means no element crossed a midpoint")
HIDDEN_LAYOUT = ("hidden_states[0] = token embeddings; hidden_states[i], 1<=i<L = output (residual stream) of decoder "
                 "layer i-1; hidden_states[L] = the final RMSNorm output (feeds lm_head), as in the W8A16 goldens; "
                 "last_layer_output = output of decoder layer L-1 before the final norm")


def write_safetensors(path, tensors, metadata):
    """Pure-Python safetensors: 8-byte little-endian header length, JSON header (dtype, shape, data_offsets per tensor,
    __metadata__ string map) padded with spaces to 8 bytes, then the raw little-endian data, contiguous, in name
    order. tensors: {name: (dtype "F32" or "I64", shape, flat values)}."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name in sorted(tensors):
        dtype, shape, values = tensors[name]
        raw = array.array({"F32": "f", "I64": "q"}[dtype], values).tobytes()
        if len(raw) != numel(shape) * DTYPE_SIZE[dtype]:
            raise ValueError(f"{name}: {len(raw)} bytes for {dtype}{shape}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_golden(path):
    """{name: python list (flat)}, shapes, metadata of an existing golden."""
    tensors, meta = read_safetensors(path)
    vals, shapes = {}, {}
    for k, (dt, shape, raw) in tensors.items():
        if dt == "I64":
            a = array.array("q")
            a.frombytes(raw)
            vals[k] = a.tolist()
        else:
            vals[k] = decode_f32(dt, raw).tolist()
        shapes[k] = shape
    return vals, shapes, meta


def max_abs_diff(a, b):
    if len(a) != len(b):
        raise SystemExit(f"length mismatch {len(a)} != {len(b)}")
    return max(abs(x - y) for x, y in zip(a, b))


def rms_diff(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))


def flat(rows):
    return [v for r in rows for v in r]


def check_case(ck, golden, ids, rows, mode):
    """The W8A16 golden of the same case must be of this checkpoint, prompt, rows and softmax scale."""
    g, _, meta = golden
    problems = []
    if meta.get("weights_fnv1a64") != ck.weights_fnv1a64:
        problems.append(f"weights_fnv1a64 {meta.get('weights_fnv1a64')} != checkpoint's {ck.weights_fnv1a64}")
    if meta.get("checkpoint") != ck.name or meta.get("softmax_scale_mode") != mode:
        problems.append(f"golden is {meta.get('checkpoint')}/{meta.get('softmax_scale_mode')}")
    if g["input_ids"] != ids or g["positions"] != list(range(len(ids))) or g["logit_rows"] != rows:
        problems.append("input_ids / positions / logit_rows differ from goldens_prompts.py")
    scale = expected_scaling(ck.text_config, mode)
    if abs(float(meta.get("scaling", "nan")) - scale) > 1e-15 * scale:
        problems.append(f"scaling {meta.get('scaling')} != expected {scale!r}")
    if problems:
        raise SystemExit(f"{ck.name}: W8A16 golden disagrees: " + "; ".join(problems))


def run_case(ck, golden_dir, out_dir, prompt, n_random, mode):
    tc = ck.text_config
    ids = prompt_ids(n_random, tc["vocab_size"])
    t_len, rows = len(ids), logit_rows(len(ids))
    positions = list(range(t_len))
    case = f"{ck.name}.{prompt}.{mode}"
    golden_name = f"{case}.safetensors"
    golden = read_golden(os.path.join(golden_dir, golden_name))
    check_case(ck, golden, ids, rows, mode)
    scale = expected_scaling(tc, mode)
    t0 = time.time()
    hidden, final = pyref_forward(ck, ids, positions, scale, w8a8=True)
    logits = pyref_head(ck, final, rows, w8a8=True)
    seconds = time.time() - t0
    sens = {name: max(max_abs_diff(flat(logits), flat(probe_logits(ck, ids, positions, rows, scale, d)))
                      for d in divides) for name, divides in PROBES.items()}
    # the W8A16 pyref against the W8A16 golden: same prompt, rows and layout as this file
    h16, f16 = pyref_forward(ck, ids, positions, scale)
    g = golden[0]
    ref16 = max_abs_diff(flat(pyref_head(ck, f16, rows)), g["logits"])
    if "hidden_states" in g:
        ref16 = max(ref16, max_abs_diff(flat(flat(h16[:-1] + [f16])), g["hidden_states"]),
                    max_abs_diff(flat(h16[-1]), g["last_layer_output"]))
    effect = max_abs_diff(flat(logits), g["logits"])
    n_layers, dim = tc["num_hidden_layers"], tc["hidden_size"]
    tensors = {
        "input_ids": ("I64", [t_len], ids), "positions": ("I64", [t_len], positions),
        "logit_rows": ("I64", [len(rows)], rows),
        "logits": ("F32", [len(rows), tc["vocab_size"]], flat(logits)),
        "hidden_states": ("F32", [n_layers + 1, t_len, dim], flat(flat(hidden[:-1] + [final]))),
        "last_layer_output": ("F32", [t_len, dim], flat(hidden[-1])),
    }
    meta = {
        "case": case, "checkpoint": ck.name, "architecture": ck.arch, "weights_fnv1a64": ck.weights_fnv1a64,
        "config_fnv1a64": ck.config_fnv1a64, "softmax_scale_mode": mode, "scaling": repr(scale),
        "dtype_semantics": "fp8-w8a8-static", "kv_b": "w8a16", "w8a8_linears": W8A8_LINEARS,
        "activation_rounding": ROUNDING, "source": "pyref-float64",
        "compute_dtype": "float64 (stored as float32)", "note": NOTE,
        "prompt": f"{prompt}: BOS + {n_random} pseudo-random ids, T={t_len}, positions 0..{t_len - 1}",
        "prompt_generator": PROMPT_GENERATOR_DOC, "logit_rows_rule": LOGIT_ROWS_DOC,
        "hidden_states_layout": HIDDEN_LAYOUT, "w8a16_golden": f"{GOLDEN_SUBDIR}/{golden_name}",
        "w8a16_golden_max_abs_diff": repr(effect), "pyref_w8a16_vs_golden_max_abs_diff": repr(ref16),
        "w8a16_golden_rms_diff": repr(rms_diff(flat(logits), g["logits"])),
        "sensitivity_f32_division_max_abs_diff": repr(sens["f32_division"]),
        "sensitivity_perturbed_max_abs_diff": repr(sens["perturbed"]), "sensitivity_note": SENSITIVITY_NOTE,
    }
    path = os.path.join(out_dir, f"{case}.safetensors")
    write_safetensors(path, tensors, meta)
    verify_written(path, tensors, meta)
    max_logit = max(abs(v) for r in logits for v in r)
    return {"case": case, "t": t_len, "effect": effect, "ref16": ref16, "max_logit": max_logit, "seconds": seconds,
            "size": os.path.getsize(path), "sens": sens}


def _f32(v):
    """v rounded to the nearest float32 (for a float64 quotient of two float32 values: the float32 quotient)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def f32_division(v, a):
    return _f32(_f32(v) / a)


def perturbed_division(seed, rel=1e-5):
    rng = random.Random(seed)
    return lambda v, a: v * (1.0 + rel * (2.0 * rng.random() - 1.0)) / a


# Sensitivity probes: the same W8A8 forward with another x/a before the E4M3 rounding (SENSITIVITY_NOTE).
PROBES = {"f32_division": [f32_division], "perturbed": [perturbed_division(s) for s in (1, 2, 3)]}


@contextlib.contextmanager
def w8a8_division(divide):
    saved = W8A8Linear.__dict__["divide"]
    W8A8Linear.divide = staticmethod(divide)
    try:
        yield
    finally:
        W8A8Linear.divide = saved


def probe_logits(ck, ids, positions, rows, scale, divide):
    with w8a8_division(divide):
        _, final = pyref_forward(ck, ids, positions, scale, w8a8=True)
    return pyref_head(ck, final, rows, w8a8=True)


def verify_written(path, tensors, meta):
    """Read the file back with the pure-Python reader: same names, dtypes, shapes, values and metadata."""
    vals, shapes, got_meta = read_golden(path)
    if got_meta != meta or set(vals) != set(tensors):
        raise SystemExit(f"{path}: read back differs (metadata or names)")
    for k, (dtype, shape, values) in tensors.items():
        want = array.array({"F32": "f", "I64": "q"}[dtype], values).tolist()
        if shapes[k] != shape or vals[k] != want:
            raise SystemExit(f"{path}: {k} read back differs")
    size = os.path.getsize(path)
    if size >= MAX_FILE_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} limit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="the FP8 checkpoint directory (tiny-hf-fp8-s1 from make_checkpoints.sh)")
    ap.add_argument("--out", default=REPO_ROOT, help=f"output root; files go to OUT/{W8A8_SUBDIR} (default: repo)")
    ap.add_argument("--golden-dir", default=os.path.join(REPO_ROOT, GOLDEN_SUBDIR),
                    help="where the W8A16 goldens of the checkpoint are (default: the repository's)")
    ap.add_argument("--prompts", default=",".join(p for p, _ in PROMPTS), help="comma-separated: p13,p6,p200")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: hf,release")
    args = ap.parse_args()
    t_start = time.time()
    ck = Checkpoint(args.ckpt)
    problems = pyref_supported(ck.text_config)
    if problems:
        raise SystemExit(f"{ck.name}: pyref does not support {problems}")
    out_dir = os.path.join(args.out, W8A8_SUBDIR)
    os.makedirs(out_dir, exist_ok=True)
    prompts = dict(PROMPTS)
    print(f"{ck.name}: weights_fnv1a64 {ck.weights_fnv1a64}, {len(ck.fp8_parts)} FP8 tensors, "
          f"activation_scheme {ck.activation_scheme}", flush=True)
    print(f"{'case':<30} {'T':>4} {'max|logit|':>10} {'max|W8A8-W8A16 golden|':>22} {'pyref16-golden':>14} "
          f"{'f32 div':>8} {'perturbed':>9} {'pyref s':>7} {'bytes':>7}", flush=True)
    for prompt in [p for p in args.prompts.split(",") if p]:
        for mode in [m for m in args.modes.split(",") if m]:
            if prompt not in prompts or mode not in MODES:
                raise SystemExit(f"unknown prompt {prompt} or mode {mode}")
            r = run_case(ck, args.golden_dir, out_dir, prompt, prompts[prompt], mode)
            print(f"{r['case']:<30} {r['t']:>4} {r['max_logit']:>10.4f} {r['effect']:>22.4g} {r['ref16']:>14.3g} "
                  f"{r['sens']['f32_division']:>8.3g} {r['sens']['perturbed']:>9.3g} {r['seconds']:>7.1f} "
                  f"{r['size']:>7}", flush=True)
            if not 0 < r["effect"] < max(1.0, r["max_logit"]) or not math.isfinite(r["max_logit"]):
                raise SystemExit(f"{r['case']}: W8A8 effect {r['effect']} is zero, non-finite or huge")
            if r["ref16"] > 1e-4:
                raise SystemExit(f"{r['case']}: the W8A16 pyref is {r['ref16']} from its golden")
    print(f"done in {time.time() - t_start:.1f}s, files in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
