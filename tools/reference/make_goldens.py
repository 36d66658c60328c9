#!/usr/bin/env python3
"""Golden reference logits for quatre, computed with Hugging Face transformers (5.17) on checkpoints written by
`quatre gen-model --format hf`.

For every checkpoint directory given, for both softmax-scale modes and for three prompts, it writes one small
safetensors file OUT/tests/data/golden/<checkpoint>.<prompt>.<mode>.safetensors (see README.md in this folder for
the exact contents), a MANIFEST.tsv next to them, and packs all of them into one uncompressed tar.

Modes:
  hf       transformers 5.17 as is: softmax scale (dn+dr)^-0.5 * mscale^2 (modeling_mistral4.yarn_apply_mscale)
  release  Mistral's release semantics (params.json yarn.apply_scale=false): plain (dn+dr)^-0.5; obtained by
           replacing modeling_mistral4.yarn_apply_mscale with the identity before the model is constructed

Loading:
  BF16 checkpoints  from_pretrained(dtype=float32, attn/experts "eager", output_loading_info=True); any missing,
                    unexpected or mismatched key is fatal; then model.float() (renamed legacy tensors keep bf16)
  FP8 checkpoints   transformers cannot run them on the reference host, so this script dequantizes them itself
                    (W = float(fp8) * weight_scale_inv, per-expert, gate/up halves with their own scale; activation
                    scales are ignored: W8A16), builds the model class from config.json without
                    quantization_config and load_state_dict(strict=True)s the float32 weights
  Both paths end with the same check: every entry of model.state_dict() equals, bit for bit, the float32 tensor
  this script decoded from the safetensors files itself (so nothing was silently random-initialised), all
  parameters are float32, attention and experts run "eager", and every layer's self_attn.scaling equals the value
  expected for the mode.

Independent check ("pyref"): a pure-Python float64 forward pass written from MODEL.md §3-§4 (no torch) is run on
the same decoded weights for every prompt; its max |logit difference| to transformers is recorded in the metadata
and in the summary. It never fails the run (goldens are transformers' numbers); a large value is flagged.

Pure-Python parts (no torch/transformers/numpy/safetensors needed), testable anywhere:
  python3 tools/reference/make_goldens.py --self-check [CKPT_DIR ...]
  python3 tools/reference/make_goldens.py --hash CKPT_DIR ...
Reference host (see make_goldens.sh):
  python3 tools/reference/make_goldens.py --out WORK --tar OUT/goldens.tar CKPT_DIR ...
"""
import argparse
import array
import contextlib
import io
import json
import math
import operator
import os
import struct
import sys
import tarfile
import tempfile
import time
import traceback

GOLDEN_SUBDIR = "tests/data/golden"
BOS_ID = 1
N_GREEDY = 32
ID_LOW = 1000  # random prompt ids are drawn from [ID_LOW, vocab_size)
# (name, number of pseudo-random ids after BOS). The first prompt also gets hidden states and per-step decode logits.
PROMPTS = (("p13", 12), ("p6", 5), ("p200", 199))
SHORT_PROMPT_MAX = 32  # prompts up to this length store all logits rows and get a greedy continuation
MODES = ("hf", "release")
MAX_FILE_BYTES = 1_000_000

LCG_A = 6364136223846793005
LCG_C = 1442695040888963407
MASK64 = (1 << 64) - 1

PROMPT_GENERATOR_DOC = (
    "ids[0]=BOS=1; state=T (the prompt length, e.g. 13 for p13); for j in 1..T-1: "
    "state=(6364136223846793005*state+1442695040888963407) mod 2^64; ids[j]=1000+((state>>33) mod (vocab-1000))"
)
LOGIT_ROWS_DOC = "T<=32: every row; otherwise rows 0,8,16,... (<T) plus the last 4 rows, ascending, no duplicates"

# Mistral4Config defaults (configuration_mistral4.py), used only by the pure-Python reference when a key is absent.
TEXT_DEFAULTS = {
    "intermediate_size": 12288, "moe_intermediate_size": 2048, "n_shared_experts": 1, "n_routed_experts": 128,
    "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1, "num_experts_per_tok": 4,
    "first_k_dense_replace": 0, "norm_topk_prob": True, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_interleave": True, "attention_bias": False,
}


# ---------------------------------------------------------------------------------------------------------------------
# Pure-Python helpers
# ---------------------------------------------------------------------------------------------------------------------

def fnv1a64_update(h, data):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


FNV_OFFSET = 0xCBF29CE484222325


def fnv1a64(data):
    return fnv1a64_update(FNV_OFFSET, data)


def safetensors_files(ckpt_dir):
    return sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors"))


def weights_fnv1a64(ckpt_dir):
    """64-bit FNV-1a over the bytes of every *.safetensors file of the directory, in sorted file-name order,
    concatenated; 16 lowercase hex digits."""
    files = safetensors_files(ckpt_dir)
    if not files:
        raise SystemExit(f"{ckpt_dir}: no *.safetensors files")
    h = FNV_OFFSET
    for f in files:
        with open(os.path.join(ckpt_dir, f), "rb") as fh:
            h = fnv1a64_update(h, fh.read())
    return f"{h:016x}"


def prompt_ids(n_random, vocab_size):
    """BOS followed by n_random pseudo-random ids in [ID_LOW, vocab_size) (PROMPT_GENERATOR_DOC)."""
    if vocab_size <= ID_LOW:
        raise ValueError(f"vocab_size {vocab_size} must exceed {ID_LOW}")
    state = n_random + 1
    ids = [BOS_ID]
    for _ in range(n_random):
        state = (LCG_A * state + LCG_C) & MASK64
        ids.append(ID_LOW + ((state >> 33) % (vocab_size - ID_LOW)))
    return ids


def logit_rows(t):
    if t <= SHORT_PROMPT_MAX:
        return list(range(t))
    return sorted(set(range(0, t, 8)) | set(range(max(0, t - 4), t)))


VLM_ARCH = "Mistral3ForConditionalGeneration"
CAUSAL_ARCH = "Mistral4ForCausalLM"
LEGACY_TO_MODULE = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
VLM_MODULE_PREFIXES = ("model.language_model.", "model.vision_tower.", "model.multi_modal_projector.", "lm_head.")


def to_module_name(name, arch):
    """On-disk tensor name -> transformers in-memory (state_dict) name. Legacy VLM prefixes are renamed; names already
    in module form pass; anything else is an error."""
    if arch == VLM_ARCH:
        for old, new in LEGACY_TO_MODULE:
            if name.startswith(old):
                return new + name[len(old):]
        if name.startswith(VLM_MODULE_PREFIXES):
            return name
        raise ValueError(f"unexpected tensor name for {arch}: {name}")
    if arch == CAUSAL_ARCH:
        if name.startswith(("model.", "lm_head.")):
            return name
        raise ValueError(f"unexpected tensor name for {arch}: {name}")
    raise ValueError(f"unsupported architecture {arch}")


def _fp8_e4m3fn_value(b):
    sign = -1.0 if b & 0x80 else 1.0
    e = (b >> 3) & 0xF
    m = b & 0x7
    if e == 0xF and m == 0x7:
        return float("nan")
    if e == 0:
        return sign * (m / 8.0) * 2.0 ** -6
    return sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)


FP8_E4M3_LUT = [_fp8_e4m3fn_value(b) for b in range(256)]
DTYPE_SIZE = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "BOOL": 1, "U8": 1}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def decode_f32(dtype, raw):
    """Raw little-endian tensor bytes -> array('f') (float32 values; exact for BF16/F16/F8)."""
    if dtype == "F32":
        a = array.array("f")
        a.frombytes(raw)
        return a
    if dtype == "BF16":
        h = array.array("H")
        h.frombytes(raw)
        u = array.array("I", [v << 16 for v in h])
        a = array.array("f")
        a.frombytes(u.tobytes())
        return a
    if dtype == "F16":
        return array.array("f", struct.unpack(f"<{len(raw) // 2}e", raw))
    if dtype == "F8_E4M3":
        lut = FP8_E4M3_LUT
        return array.array("f", [lut[b] for b in raw])
    raise ValueError(f"cannot decode dtype {dtype}")


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)}, metadata. Pure Python; checks offsets and sizes."""
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short")
    n = struct.unpack_from("<Q", data, 0)[0]
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} past end of file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dtype, shape = info["dtype"], list(info["shape"])
        b, e = info["data_offsets"]
        if dtype not in DTYPE_SIZE:
            raise ValueError(f"{path}: {name}: unsupported dtype {dtype}")
        if e - b != numel(shape) * DTYPE_SIZE[dtype] or base + e > len(data):
            raise ValueError(f"{path}: {name}: bad data_offsets {b},{e} for {dtype}{shape}")
        out[name] = (dtype, shape, data[base + b:base + e])
    return out, meta


class Checkpoint:
    """A gen-model HF checkpoint decoded to float32 in pure Python, keyed by transformers module names."""

    def __init__(self, ckpt_dir):
        if sys.byteorder != "little":
            raise SystemExit("this script assumes a little-endian host")
        self.dir = os.path.abspath(ckpt_dir.rstrip("/"))
        self.name = os.path.basename(self.dir)
        with open(os.path.join(self.dir, "config.json"), "rb") as fh:
            raw_cfg = fh.read()
        self.config_fnv1a64 = f"{fnv1a64(raw_cfg):016x}"
        self.config = json.loads(raw_cfg)
        archs = self.config.get("architectures") or []
        if len(archs) != 1 or archs[0] not in (VLM_ARCH, CAUSAL_ARCH):
            raise SystemExit(f"{self.dir}: architectures {archs} not supported")
        self.arch = archs[0]
        tc = self.config["text_config"] if self.arch == VLM_ARCH else self.config
        self.text_config = dict(TEXT_DEFAULTS)
        self.text_config.update(tc)
        self.lm_prefix = "model.language_model." if self.arch == VLM_ARCH else "model."
        self.files = safetensors_files(self.dir)
        if not self.files:
            raise SystemExit(f"{self.dir}: no *.safetensors files")
        raw = {}
        self.file_metadata = {}
        for f in self.files:
            tensors, meta = read_safetensors(os.path.join(self.dir, f))
            self.file_metadata.update(meta)
            for k, v in tensors.items():
                mk = to_module_name(k, self.arch)
                if mk in raw:
                    raise SystemExit(f"{self.dir}: tensor {mk} appears twice")
                raw[mk] = v
        self._dequantize(raw)
        self._pyref_cache = None
        self._weights_fnv = None

    @property
    def weights_fnv1a64(self):
        if self._weights_fnv is None:
            self._weights_fnv = weights_fnv1a64(self.dir)
        return self._weights_fnv

    def _dequantize(self, raw):
        has_fp8 = any(v[0] == "F8_E4M3" for v in raw.values())
        qc = self.config.get("quantization_config")
        if has_fp8:
            if not qc or qc.get("quant_method") != "fp8" or qc.get("weight_block_size") is not None:
                raise SystemExit(f"{self.dir}: FP8 tensors need quantization_config fp8 with weight_block_size null, "
                                 f"got {qc}")
        elif qc:
            raise SystemExit(f"{self.dir}: quantization_config present but no F8_E4M3 tensor")
        weight_scale, act_scale, weights = {}, {}, {}
        for k, v in raw.items():
            if k.endswith("_scale_inv"):  # X.weight_scale_inv -> X.weight; experts.P_scale_inv -> experts.P
                weight_scale[k[:-len("_scale_inv")]] = (k, v)
            elif k.endswith(".activation_scale"):
                act_scale[k[:-len(".activation_scale")] + ".weight"] = (k, v)
            elif k.endswith("_activation_scale"):
                act_scale[k[:-len("_activation_scale")]] = (k, v)
            else:
                weights[k] = v
        for table, what in ((weight_scale, "weight scale"), (act_scale, "activation scale")):
            for base, (k, (dt, shape, b)) in table.items():
                if base not in weights or weights[base][0] != "F8_E4M3":
                    raise SystemExit(f"{self.dir}: {what} {k} has no F8_E4M3 weight {base}")
                vals = decode_f32(dt, b)
                if not all(math.isfinite(x) and x > 0 for x in vals):
                    raise SystemExit(f"{self.dir}: {k} has a non-positive or non-finite value")
        self.tensors = {}
        self.fp8_parts = {}  # module name -> (shape, raw fp8 bytes, scale shape, scale values); host cross-check
        dtypes = set()
        for k, (dt, shape, b) in weights.items():
            dtypes.add(dt)
            if dt != "F8_E4M3":
                if k in weight_scale:
                    raise SystemExit(f"{self.dir}: {k} is {dt} but has a weight scale")
                self.tensors[k] = (shape, decode_f32(dt, b))
                continue
            if k not in weight_scale:
                raise SystemExit(f"{self.dir}: FP8 weight {k} has no weight_scale_inv")
            sk, (sdt, sshape, sb) = weight_scale[k]
            scale = decode_f32(sdt, sb)
            self.tensors[k] = (shape, dequantize_fp8(k, shape, b, sshape, scale))
            self.fp8_parts[k] = (shape, b, sshape, scale)
        if has_fp8:
            self.dtype_semantics = "fp8-w8a16-dequantized"
        elif dtypes == {"BF16"}:
            self.dtype_semantics = "bf16"
        else:
            self.dtype_semantics = "+".join(sorted(d.lower() for d in dtypes))

    def matrix(self, name):
        shape, a = self.tensors[name]
        if len(shape) != 2:
            raise ValueError(f"{name}: expected 2-D, got {shape}")
        r, c = shape
        return [a[i * c:(i + 1) * c].tolist() for i in range(r)]

    def vector(self, name):
        shape, a = self.tensors[name]
        if len(shape) != 1:
            raise ValueError(f"{name}: expected 1-D, got {shape}")
        return a.tolist()

    def stacked(self, name):
        """[E, R, C] -> list over e of R row lists."""
        shape, a = self.tensors[name]
        e_, r, c = shape
        return [[a[(e * r + i) * c:(e * r + i + 1) * c].tolist() for i in range(r)] for e in range(e_)]


def dequantize_fp8(name, shape, raw, scale_shape, scale):
    """float32(fp8) * scale. 2-D weights: one scalar. Stacked experts [E, R, C]: scale numel E*k ([E,k,1], [E,1,1] or
    [E]); row r of expert e uses scale[e, r // (R/k)] (gate_up [E,2,1]: gate rows [0,I) use [e,0], up rows [I,2I)
    use [e,1]). The product of an e4m3 value and an f32 scale is exact in float64, so rounding it once to float32
    gives the same bits as a float32 multiply."""
    lut = FP8_E4M3_LUT
    out = array.array("f")
    if len(shape) == 2:
        if len(scale) != 1:
            raise SystemExit(f"{name}: per-tensor scale expected, got shape {scale_shape} (block-wise unsupported)")
        s = scale[0]
        out.extend([lut[b] * s for b in raw])
        return out
    if len(shape) == 3:
        e_, r, c = shape
        if len(scale) % e_ != 0:
            raise SystemExit(f"{name}: scale shape {scale_shape} does not match {shape}")
        k = len(scale) // e_
        if k < 1 or r % k != 0 or any(d != 1 for d in scale_shape[2:]) or (
                len(scale_shape) >= 2 and scale_shape[1] != k):
            raise SystemExit(f"{name}: scale shape {scale_shape} does not match {shape}")
        block = r // k
        for e in range(e_):
            for j in range(k):
                s = scale[e * k + j]
                lo = (e * r + j * block) * c
                out.extend([lut[b] * s for b in raw[lo:lo + block * c]])
        return out
    raise SystemExit(f"{name}: FP8 tensor of rank {len(shape)} unsupported")


# ---------------------------------------------------------------------------------------------------------------------
# Pure-Python float64 reference forward pass (MODEL.md §3-§4), independent of transformers
# ---------------------------------------------------------------------------------------------------------------------

def yarn_get_mscale(scale, m):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_type(rp):
    return rp.get("rope_type", rp.get("type", "default"))


def expected_scaling(tc, mode):
    """Softmax scale: (dn+dr)^-0.5, times mscale(factor, mscale_all_dim)^2 in mode "hf" when the rope is not default and
    mscale_all_dim is truthy (transformers 5.17); plain in mode "release". Same float operation order as transformers."""
    s = (tc["qk_nope_head_dim"] + tc["qk_rope_head_dim"]) ** (-0.5)
    if mode == "hf":
        rp = tc.get("rope_parameters") or {}
        if rope_type(rp) != "default":
            msad = rp.get("mscale_all_dim", 0)
            if msad:
                m = yarn_get_mscale(rp["factor"], msad)
                s = s * m * m
    elif mode != "release":
        raise ValueError(mode)
    return s


def yarn_inv_freq(tc):
    """MODEL.md §4.1 in float64 with dim = qk_rope_head_dim."""
    rp = tc["rope_parameters"]
    dim = tc["qk_rope_head_dim"]
    theta = rp["rope_theta"]
    half = dim // 2
    pos_freq = [theta ** (2 * i / dim) for i in range(half)]
    if rope_type(rp) == "default":
        return [1.0 / p for p in pos_freq]
    if rope_type(rp) != "yarn":
        raise ValueError(f"rope type {rope_type(rp)} not supported by the reference")
    s = rp["factor"]
    l0 = rp["original_max_position_embeddings"]
    beta_fast = rp.get("beta_fast") or 32
    beta_slow = rp.get("beta_slow") or 1

    def corr(r):
        return dim * math.log(l0 / (2 * math.pi * r)) / (2 * math.log(theta))

    low, high = corr(beta_fast), corr(beta_slow)
    if rp.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    out = []
    for i in range(half):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        out.append((1.0 / (s * pos_freq[i])) * ramp + (1.0 / pos_freq[i]) * (1.0 - ramp))
    return out


def yarn_attention_factor(tc):
    rp = tc["rope_parameters"]
    if rope_type(rp) == "default":
        return 1.0
    if rp.get("attention_factor") is not None:
        return float(rp["attention_factor"])
    f = rp["factor"]
    if rp.get("mscale") and rp.get("mscale_all_dim"):
        return yarn_get_mscale(f, rp["mscale"]) / yarn_get_mscale(f, rp["mscale_all_dim"])
    return yarn_get_mscale(f, 1)


def llama4_scale(tc, p):
    rp = tc["rope_parameters"]
    beta = rp.get("llama_4_scaling_beta")
    if beta is None:
        return 1.0
    return 1.0 + beta * math.log(1 + math.floor(p / rp["original_max_position_embeddings"]))


def _matvec(m, x):
    mul = operator.mul
    return [sum(map(mul, row, x)) for row in m]


def _dot(a, b):
    return sum(map(operator.mul, a, b))


def _rms(x, w, eps):
    r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [wi * xi * r for wi, xi in zip(w, x)]


def _silu(z):
    if z >= 0:
        return z / (1.0 + math.exp(-z))
    e = math.exp(z)
    return z * e / (1.0 + e)


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    s = sum(e)
    return [x / s for x in e]


def _rope_interleaved(x, p, inv_freq, att):
    out = list(x)
    for i, f in enumerate(inv_freq):
        a = p * f
        c, s = math.cos(a) * att, math.sin(a) * att
        x0, x1 = x[2 * i], x[2 * i + 1]
        out[2 * i] = x0 * c - x1 * s
        out[2 * i + 1] = x1 * c + x0 * s
    return out


def pyref_supported(tc):
    problems = []
    if tc.get("q_lora_rank") is None:
        problems.append("q_lora_rank null")
    if not tc.get("rope_interleave", True):
        problems.append("rope_interleave false")
    if tc.get("hidden_act") != "silu":
        problems.append(f"hidden_act {tc.get('hidden_act')}")
    if tc.get("n_group", 1) != 1 or tc.get("topk_group", 1) != 1:
        problems.append("grouped routing")
    if tc.get("attention_bias"):
        problems.append("attention_bias")
    return problems


def pyref_weights(ck):
    if ck._pyref_cache is not None:
        return ck._pyref_cache
    tc, p = ck.text_config, ck.lm_prefix
    w = {"embed": ck.matrix(p + "embed_tokens.weight"), "norm": ck.vector(p + "norm.weight"),
         "lm_head": ck.matrix("lm_head.weight"), "layers": []}
    for li in range(tc["num_hidden_layers"]):
        q = f"{p}layers.{li}."
        lw = {"in_ln": ck.vector(q + "input_layernorm.weight"), "post_ln": ck.vector(q + "post_attention_layernorm.weight"),
              "q_a": ck.matrix(q + "self_attn.q_a_proj.weight"), "q_a_ln": ck.vector(q + "self_attn.q_a_layernorm.weight"),
              "q_b": ck.matrix(q + "self_attn.q_b_proj.weight"),
              "kv_a": ck.matrix(q + "self_attn.kv_a_proj_with_mqa.weight"),
              "kv_a_ln": ck.vector(q + "self_attn.kv_a_layernorm.weight"),
              "kv_b": ck.matrix(q + "self_attn.kv_b_proj.weight"), "o": ck.matrix(q + "self_attn.o_proj.weight")}
        if li < tc["first_k_dense_replace"]:
            lw["dense"] = tuple(ck.matrix(q + f"mlp.{n}_proj.weight") for n in ("gate", "up", "down"))
        else:
            lw["router"] = ck.matrix(q + "mlp.gate.weight")
            lw["gate_up"] = ck.stacked(q + "mlp.experts.gate_up_proj")
            lw["down"] = ck.stacked(q + "mlp.experts.down_proj")
            lw["shared"] = tuple(ck.matrix(q + f"mlp.shared_experts.{n}_proj.weight") for n in ("gate", "up", "down"))
        w["layers"].append(lw)
    ck._pyref_cache = w
    return w


def pyref_logits(ck, ids, positions, rows, scale):
    """float64 logits [len(rows)][V] following MODEL.md §3 (expanded MLA, interleaved YaRN RoPE, Llama-4 query
    temperature, softmax routing over all experts, top-k renormalised, shared expert unweighted)."""
    tc = ck.text_config
    w = pyref_weights(ck)
    nh, dn, dr, dv = tc["num_attention_heads"], tc["qk_nope_head_dim"], tc["qk_rope_head_dim"], tc["v_head_dim"]
    dkv, k_top, eps = tc["kv_lora_rank"], tc["num_experts_per_tok"], tc["rms_norm_eps"]
    i_moe = tc["moe_intermediate_size"]
    dqk = dn + dr
    inv_freq = yarn_inv_freq(tc)
    att = yarn_attention_factor(tc)
    t_len = len(ids)
    x = [list(w["embed"][i]) for i in ids]
    for lw in w["layers"]:
        qs, ks, vs = [], [], []
        for t in range(t_len):
            p = positions[t]
            h = _rms(x[t], lw["in_ln"], eps)
            q = _matvec(lw["q_b"], _rms(_matvec(lw["q_a"], h), lw["q_a_ln"], 1e-6))
            ckv = _matvec(lw["kv_a"], h)
            c = _rms(ckv[:dkv], lw["kv_a_ln"], 1e-6)
            k_rope = _rope_interleaved(ckv[dkv:], p, inv_freq, att)
            kvb = _matvec(lw["kv_b"], c)
            l4 = llama4_scale(tc, p)
            qh, kh, vh = [], [], []
            for hd in range(nh):
                qq = q[hd * dqk:(hd + 1) * dqk]
                qh.append([v * l4 for v in qq[:dn] + _rope_interleaved(qq[dn:], p, inv_freq, att)])
                kk = kvb[hd * (dn + dv):(hd + 1) * (dn + dv)]
                kh.append(kk[:dn] + k_rope)
                vh.append(kk[dn:])
            qs.append(qh)
            ks.append(kh)
            vs.append(vh)
        for t in range(t_len):
            o = []
            for hd in range(nh):
                qv = qs[t][hd]
                probs = _softmax([_dot(qv, ks[u][hd]) * scale for u in range(t + 1)])
                acc = [0.0] * dv
                for u, pu in enumerate(probs):
                    vv = vs[u][hd]
                    for j in range(dv):
                        acc[j] += pu * vv[j]
                o.extend(acc)
            a = _matvec(lw["o"], o)
            x[t] = [xi + ai for xi, ai in zip(x[t], a)]
        for t in range(t_len):
            u = _rms(x[t], lw["post_ln"], eps)
            if "dense" in lw:
                g, up, dn_m = lw["dense"]
                y = _matvec(dn_m, [_silu(a) * b for a, b in zip(_matvec(g, u), _matvec(up, u))])
            else:
                probs = _softmax(_matvec(lw["router"], u))
                idx = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[:k_top]
                wts = [probs[e] for e in idx]
                if tc["norm_topk_prob"]:
                    den = sum(wts) + 1e-20
                    wts = [v / den for v in wts]
                wts = [v * tc["routed_scaling_factor"] for v in wts]
                g, up, dn_m = lw["shared"]
                y = _matvec(dn_m, [_silu(a) * b for a, b in zip(_matvec(g, u), _matvec(up, u))])
                for e, we in zip(idx, wts):
                    gu = _matvec(lw["gate_up"][e], u)
                    ye = _matvec(lw["down"][e], [_silu(a) * b for a, b in zip(gu[:i_moe], gu[i_moe:])])
                    y = [yi + we * v for yi, v in zip(y, ye)]
            x[t] = [xi + yi for xi, yi in zip(x[t], y)]
    return [_matvec(w["lm_head"], _rms(x[t], w["norm"], eps)) for t in rows]


# ---------------------------------------------------------------------------------------------------------------------
# Self-check (pure Python)
# ---------------------------------------------------------------------------------------------------------------------

def _close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def self_check(ckpt_dirs):
    fails = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            fails.append(what)

    # FNV-1a 64 test vectors (Fowler/Noll/Vo reference suite)
    for data, want in ((b"", "cbf29ce484222325"), (b"a", "af63dc4c8601ec8c"), (b"foobar", "85944171f73967e8")):
        check(f"{fnv1a64(data):016x}" == want, f"fnv1a64({data!r}) == {want}")
    with tempfile.TemporaryDirectory() as d:
        for fname, data in (("b.safetensors", b"bar"), ("a.safetensors", b"foo"), ("c.json", b"x")):
            with open(os.path.join(d, fname), "wb") as fh:
                fh.write(data)
        check(weights_fnv1a64(d) == "85944171f73967e8", "weights_fnv1a64 hashes *.safetensors in sorted order")

    # Prompt generator: fixed values (recompute in C++ from PROMPT_GENERATOR_DOC), ranges, lengths
    want13 = [1, 1525, 1373, 1022, 1275, 1408, 1507, 1390, 1218, 1501, 1202, 1507, 1123]  # also checked with bc
    want6 = [1, 1151, 1398, 1237, 1135, 1060]
    got13, got6 = prompt_ids(12, 1536), prompt_ids(5, 1536)
    check(got13 == want13, f"prompt p13 (vocab 1536) = {got13}")
    check(got6 == want6, f"prompt p6 (vocab 1536) = {got6}")
    p200 = prompt_ids(199, 1536)
    check(len(p200) == 200 and p200[0] == BOS_ID and all(ID_LOW <= i < 1536 for i in p200[1:]),
          "prompt p200: 200 ids, BOS first, others in [1000, 1536)")
    big = prompt_ids(199, 131072)
    check(all(ID_LOW <= i < 131072 for i in big[1:]) and len(set(big)) > 190, "prompt ids spread over a large vocab")
    s = 200  # state starts at T
    s = (LCG_A * s + LCG_C) & MASK64
    check(p200[1] == ID_LOW + ((s >> 33) % 536), "generator matches its documented formula")

    # Logit rows
    r200 = logit_rows(200)
    check(r200 == list(range(0, 193, 8)) + [196, 197, 198, 199], f"logit rows for T=200: {len(r200)} rows")
    check(logit_rows(13) == list(range(13)) and logit_rows(32) == list(range(32)), "all rows for T<=32")
    check(logit_rows(33) == [0, 8, 16, 24, 29, 30, 31, 32], "logit rows for T=33 (no duplicates)")

    # Name mapping
    cases = [
        (VLM_ARCH, "language_model.model.layers.0.mlp.experts.gate_up_proj",
         "model.language_model.layers.0.mlp.experts.gate_up_proj"),
        (VLM_ARCH, "language_model.model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        (VLM_ARCH, "language_model.lm_head.weight", "lm_head.weight"),
        (VLM_ARCH, "vision_tower.transformer.layers.1.attention.q_proj.weight",
         "model.vision_tower.transformer.layers.1.attention.q_proj.weight"),
        (VLM_ARCH, "multi_modal_projector.patch_merger.merging_layer.weight",
         "model.multi_modal_projector.patch_merger.merging_layer.weight"),
        (VLM_ARCH, "language_model.model.layers.1.self_attn.q_a_proj.weight_scale_inv",
         "model.language_model.layers.1.self_attn.q_a_proj.weight_scale_inv"),
        (VLM_ARCH, "model.language_model.norm.weight", "model.language_model.norm.weight"),
        (VLM_ARCH, "lm_head.weight", "lm_head.weight"),
        (CAUSAL_ARCH, "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.gate_proj.weight"),
        (CAUSAL_ARCH, "lm_head.weight", "lm_head.weight"),
    ]
    for arch, name, want in cases:
        check(to_module_name(name, arch) == want, f"{arch}: {name} -> {want}")
    for arch, name in ((VLM_ARCH, "model.layers.0.mlp.gate.weight"), (VLM_ARCH, "language_model.foo"),
                       (CAUSAL_ARCH, "language_model.model.norm.weight"), (CAUSAL_ARCH, "vision_tower.ln_pre.weight")):
        try:
            to_module_name(name, arch)
            check(False, f"{arch}: {name} rejected")
        except ValueError:
            check(True, f"{arch}: {name} rejected")

    # Decoders
    check(FP8_E4M3_LUT[0x7E] == 448.0 and FP8_E4M3_LUT[0xFE] == -448.0 and FP8_E4M3_LUT[0x38] == 1.0
          and FP8_E4M3_LUT[0x01] == 2.0 ** -9 and FP8_E4M3_LUT[0x08] == 2.0 ** -6 and FP8_E4M3_LUT[0x80] == 0.0
          and math.isnan(FP8_E4M3_LUT[0x7F]) and math.isnan(FP8_E4M3_LUT[0xFF]) and FP8_E4M3_LUT[0x3C] == 1.5,
          "FP8 E4M3FN decode table")
    check(list(decode_f32("BF16", bytes([0x80, 0x3F, 0x00, 0xC0, 0x49, 0x40]))) == [1.0, -2.0, 3.140625], "BF16 decode")
    dq = dequantize_fp8("t", [2, 4, 1], bytes([0x38] * 8), [2, 2, 1], array.array("f", [1.0, 2.0, 3.0, 4.0]))
    check(list(dq) == [1, 1, 2, 2, 3, 3, 4, 4], "stacked dequant: [E,2,1] scales the two row halves separately")
    dq = dequantize_fp8("t", [2, 2, 1], bytes([0x38] * 4), [2, 1, 1], array.array("f", [0.5, 0.25]))
    check(list(dq) == [0.5, 0.5, 0.25, 0.25], "stacked dequant: [E,1,1]")

    # RoPE / scale formulas against MODEL.md §0, §4 and the probe log
    tiny = {"qk_nope_head_dim": 16, "qk_rope_head_dim": 32, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0, "original_max_position_embeddings": 64,
        "beta_fast": 4.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}}
    check(expected_scaling(tiny, "hf") == 0.235470896631015, "tiny hf scaling 0.235470896631015 (probe)")
    check(expected_scaling(tiny, "release") == 0.14433756729740643, "tiny release scaling 0.14433756729740643 (probe)")
    probe_inv = [1.0, 0.5623413324356079, 0.24211187660694122, 0.09447108954191208, 0.02968750149011612,
                 0.003514633048325777, 0.0019764236640185118, 0.0011114246444776654, 0.0006249999860301614]
    got = yarn_inv_freq(tiny)
    check(len(got) == 16 and all(_close(a, b, 2e-7) for a, b in zip(got, probe_inv)), "tiny inv_freq vs probe (fp32)")
    check(yarn_attention_factor(tiny) == 1.0, "tiny attention_factor 1.0")
    real = {"qk_nope_head_dim": 64, "qk_rope_head_dim": 64, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 128.0, "original_max_position_embeddings": 8192,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}}
    check(_close(expected_scaling(real, "hf"), 0.19496949, 1e-7) and
          expected_scaling(real, "release") == 0.08838834764831845, "real scalings 0.1949695 / 0.0883883")
    table = {0: 1.0, 12: 3.162277660e-02, 13: 2.190385448e-02, 20: 1.231463897e-03, 24: 8.413461538e-05,
             25: 5.858548510e-06, 31: 1.041813619e-06}
    inv = yarn_inv_freq(real)
    check(all(_close(inv[i], v, 1e-9) for i, v in table.items()), "real inv_freq vs MODEL.md §4.1 table")
    l4 = {0: 1.0, 8192: 1.0693147, 16384: 1.1098612, 32768: 1.1609438, 131072: 1.2833213, 262143: 1.3465736}
    check(all(abs(llama4_scale(real, p) - v) < 5e-8 for p, v in l4.items()), "l4(pos) vs MODEL.md §3.6")

    # Real checkpoints, if given: decoding, dequantization, and the pure-Python reference
    cks = []
    for d in ckpt_dirs:
        t0 = time.time()
        ck = Checkpoint(d)
        cks.append(ck)
        tc = ck.text_config
        print(f"---- {ck.name}: {ck.arch}, {ck.dtype_semantics}, {len(ck.tensors)} tensors, "
              f"weights_fnv1a64 {ck.weights_fnv1a64}, seed {ck.file_metadata.get('quatre.seed')} "
              f"({time.time() - t0:.1f}s)")
        check(all(all(math.isfinite(v) for v in a) for _, a in ck.tensors.values()), f"{ck.name}: all weights finite")
        problems = pyref_supported(tc)
        if problems:
            print(f"     pyref unsupported: {problems}")
            continue
        ids = prompt_ids(5, tc["vocab_size"])
        pos = list(range(len(ids)))
        t0 = time.time()
        out = {m: pyref_logits(ck, ids, pos, list(range(len(ids))), expected_scaling(tc, m)) for m in MODES}
        ok = all(len(r) == tc["vocab_size"] and all(math.isfinite(v) for v in r) for m in MODES for r in out[m])
        check(ok, f"{ck.name}: pyref p6 logits finite, {tc['vocab_size']} wide ({time.time() - t0:.1f}s)")
        diff = max(abs(a - b) for r1, r2 in zip(out["hf"], out["release"]) for a, b in zip(r1, r2))
        check(diff > 1e-6, f"{ck.name}: hf and release scales give different logits (max diff {diff:.3g})")
        pre = pyref_logits(ck, ids[:3], pos[:3], [0, 1, 2], expected_scaling(tc, "hf"))
        check(all(a == b for r1, r2 in zip(pre, out["hf"][:3]) for a, b in zip(r1, r2)),
              f"{ck.name}: pyref is causal (prefix rows unchanged by later tokens)")
        for m in MODES:
            last = out[m][-1]
            print(f"     pyref p6 {m}: max|logit| {max(abs(v) for r in out[m] for v in r):.4f}, "
                  f"argmax last row {max(range(len(last)), key=last.__getitem__)}")
    # FP8 vs BF16 of the same preset and seed: dequantized weights must be close (E4M3 rel. error <= 2^-4 per value)
    for a in cks:
        for b in cks:
            if a.dtype_semantics != "fp8-w8a16-dequantized" or b.dtype_semantics != "bf16":
                continue
            if (a.arch, a.file_metadata.get("quatre.seed")) != (b.arch, b.file_metadata.get("quatre.seed")):
                continue
            if set(a.tensors) != set(b.tensors) or a.text_config.get("rope_parameters") != b.text_config.get(
                    "rope_parameters") or any(a.tensors[k][0] != b.tensors[k][0] for k in a.tensors):
                continue
            worst, worst_name = 0.0, ""
            for k in a.fp8_parts:
                x, y = a.tensors[k][1], b.tensors[k][1]
                num = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)))
                den = math.sqrt(sum(q * q for q in y)) or 1.0
                if num / den > worst:
                    worst, worst_name = num / den, k
            check(0 < worst < 0.05, f"{a.name} dequantized vs {b.name}: worst relative L2 error {worst:.4f} "
                                    f"({worst_name}); {len(a.fp8_parts)} FP8 tensors")
    print(f"self-check: {'FAILED ' + str(len(fails)) if fails else 'all passed'}")
    return 1 if fails else 0


# ---------------------------------------------------------------------------------------------------------------------
# Reference host: transformers
# ---------------------------------------------------------------------------------------------------------------------

class Host:
    """Lazily imported torch/transformers and everything that needs them."""

    def __init__(self, device):
        import torch
        import transformers
        from transformers.models.mistral4 import modeling_mistral4 as m4
        self.torch, self.transformers, self.m4 = torch, transformers, m4
        self.device = torch.device(device)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        try:
            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        self.fp8_lut_checked = False

    def to_torch(self, shape, arr):
        t = self.torch.frombuffer(bytearray(arr.tobytes()), dtype=self.torch.float32)
        return t.reshape(tuple(shape)).clone()

    def check_fp8_decoding(self, ck):
        """Our table and our dequantization against torch's float8_e4m3fn conversion, for every FP8 tensor."""
        torch = self.torch
        if not self.fp8_lut_checked:
            mine = torch.tensor(FP8_E4M3_LUT, dtype=torch.float32)
            theirs = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
            nan = torch.isnan(mine)
            if not (torch.equal(nan, torch.isnan(theirs)) and torch.equal(mine[~nan], theirs[~nan])):
                raise SystemExit("FP8 E4M3 decode table disagrees with torch.float8_e4m3fn")
            self.fp8_lut_checked = True
        for k, (shape, raw, sshape, scale) in ck.fp8_parts.items():
            w = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(torch.float8_e4m3fn).reshape(shape)
            w = w.to(torch.float32)
            s = torch.tensor(list(scale), dtype=torch.float32)
            if len(shape) == 2:
                ref = w * s.reshape(())
            else:
                e_, r, c = shape
                kk = s.numel() // e_
                ref = (w.reshape(e_, kk, r // kk, c) * s.reshape(e_, kk, 1, 1)).reshape(shape)
            if not torch.equal(ref, self.to_torch(*ck.tensors[k])):
                raise SystemExit(f"{ck.name}: {k}: pure-Python dequantization differs from torch's")

    @contextlib.contextmanager
    def scale_mode(self, mode):
        orig = getattr(self.m4, "yarn_apply_mscale", None)
        if mode == "release" and orig is not None:
            self.m4.yarn_apply_mscale = lambda rope_parameters, scaling: scaling
        try:
            yield
        finally:
            if orig is not None:
                self.m4.yarn_apply_mscale = orig

    def language_model(self, model):
        lms = [m for m in model.modules() if isinstance(m, self.m4.Mistral4Model)]
        if len(lms) != 1:
            raise SystemExit(f"expected one Mistral4Model, found {len(lms)}")
        return lms[0]

    def load(self, ck, mode):
        torch, transformers = self.torch, self.transformers
        cls = getattr(transformers, ck.arch)
        with self.scale_mode(mode):
            if ck.dtype_semantics == "fp8-w8a16-dequantized":
                cfg = {k: v for k, v in ck.config.items() if k != "quantization_config"}
                with tempfile.TemporaryDirectory() as tmp:
                    with open(os.path.join(tmp, "config.json"), "w") as fh:
                        json.dump(cfg, fh)
                    config = transformers.AutoConfig.from_pretrained(tmp)
                model = cls._from_config(config, dtype=torch.float32, attn_implementation="eager",
                                         experts_implementation="eager")
                model.float()
                sd = {k: self.to_torch(*v) for k, v in ck.tensors.items()}
                model.load_state_dict(sd, strict=True)
                load_path = ("config.json without quantization_config -> _from_config(float32, eager) -> "
                             "load_state_dict(strict=True) of the script's own float32 dequantization")
            else:
                model, info = cls.from_pretrained(ck.dir, dtype=torch.float32, attn_implementation="eager",
                                                  experts_implementation="eager", output_loading_info=True)
                bad = {k: v for k, v in info.items() if v}
                if bad:
                    raise SystemExit(f"{ck.name}: from_pretrained loading info not clean: {bad}")
                model.float()
                load_path = "from_pretrained(dtype=float32, eager, output_loading_info clean) -> model.float()"
        model.eval()
        model.to(self.device)
        # eager attention and eager experts everywhere
        if any(getattr(m.config, "_experts_implementation", None) != "eager"
               for m in model.modules() if isinstance(m, self.m4.Mistral4Experts)):
            model.set_experts_implementation("eager")
        if any(m.config._attn_implementation != "eager"
               for m in model.modules() if isinstance(m, self.m4.Mistral4Attention)):
            model.set_attn_implementation("eager")
        for m in model.modules():
            if isinstance(m, self.m4.Mistral4Experts) and m.config._experts_implementation != "eager":
                raise SystemExit(f"{ck.name}: experts implementation is {m.config._experts_implementation}")
            if isinstance(m, self.m4.Mistral4Attention) and m.config._attn_implementation != "eager":
                raise SystemExit(f"{ck.name}: attention implementation is {m.config._attn_implementation}")
        # float32 everywhere
        for n, p in list(model.named_parameters()) + list(model.named_buffers()):
            if p.is_floating_point() and p.dtype != torch.float32:
                raise SystemExit(f"{ck.name}: {n} is {p.dtype} after float()")
        # every weight is exactly what the files hold
        sd = model.state_dict()
        if set(sd) != set(ck.tensors):
            raise SystemExit(f"{ck.name}: state_dict keys differ from the checkpoint: only in model "
                             f"{sorted(set(sd) - set(ck.tensors))[:8]}, only in files "
                             f"{sorted(set(ck.tensors) - set(sd))[:8]}")
        for k, v in sd.items():
            if not torch.equal(v.detach().cpu(), self.to_torch(*ck.tensors[k])):
                raise SystemExit(f"{ck.name}: loaded {k} differs from the checkpoint file")
        # softmax scale
        want = expected_scaling(ck.text_config, mode)
        attns = [m for m in model.modules() if isinstance(m, self.m4.Mistral4Attention)]
        if mode == "release" and not hasattr(self.m4, "yarn_apply_mscale"):
            for a in attns:
                a.scaling = want
        got = [a.scaling for a in attns]
        if len(attns) != ck.text_config["num_hidden_layers"] or any(abs(g - want) > 1e-15 * want for g in got):
            raise SystemExit(f"{ck.name}: self_attn.scaling {got} != expected {want!r} for mode {mode}")
        return model, load_path

    def run_case(self, ck, model, mode, prompt, n_random, first, load_path, pyref, out_dir):
        torch = self.torch
        tc = ck.text_config
        vocab, n_layers = tc["vocab_size"], tc["num_hidden_layers"]
        ids = prompt_ids(n_random, vocab)
        t_len = len(ids)
        rows = logit_rows(t_len)
        dev = self.device
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        pos = torch.arange(t_len, dtype=torch.long, device=dev)[None]
        lm = self.language_model(model)
        scaling = self.language_model(model).layers[0].self_attn.scaling
        meta = {
            "case": f"{ck.name}.{prompt}.{mode}", "checkpoint": ck.name, "architecture": ck.arch,
            "weights_fnv1a64": ck.weights_fnv1a64, "config_fnv1a64": ck.config_fnv1a64,
            "softmax_scale_mode": mode, "scaling": repr(scaling),
            "expected_scaling": repr(expected_scaling(tc, mode)),
            "has_yarn_apply_mscale": str(hasattr(self.m4, "yarn_apply_mscale")).lower(),
            "dtype_semantics": ck.dtype_semantics, "compute_dtype": "float32",
            "attn_implementation": "eager", "experts_implementation": "eager", "device": str(dev),
            "load_path": load_path,
            "transformers_version": self.transformers.__version__, "torch_version": torch.__version__,
            "prompt": f"{prompt}: BOS + {n_random} pseudo-random ids in [{ID_LOW}, {vocab}), T={t_len}, "
                      f"positions 0..{t_len - 1}",
            "prompt_generator": PROMPT_GENERATOR_DOC, "logit_rows_rule": LOGIT_ROWS_DOC,
            "rope_attention_scaling": repr(float(lm.rotary_emb.attention_scaling)),
        }
        tensors = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "positions": torch.arange(t_len, dtype=torch.long),
            "logit_rows": torch.tensor(rows, dtype=torch.long),
            "rope_inv_freq": lm.rotary_emb.inv_freq.detach().float().cpu().clone(),
        }
        captured = {}
        hooks = []
        if first:
            def keep(key):
                def hook(_mod, _inp, output):
                    o = output[0] if isinstance(output, tuple) else output
                    captured[key] = o.detach()
                return hook
            hooks.append(lm.embed_tokens.register_forward_hook(keep("embed")))
            for i, layer in enumerate(lm.layers):
                hooks.append(layer.register_forward_hook(keep(f"layer{i}")))
            hooks.append(lm.norm.register_forward_hook(keep("norm")))
        try:
            with torch.no_grad():
                out = model(input_ids=x, position_ids=pos, use_cache=False, output_hidden_states=first)
        finally:
            for h in hooks:
                h.remove()
        logits_all = out.logits[0].float()
        if tuple(logits_all.shape) != (t_len, vocab):
            raise SystemExit(f"{meta['case']}: logits shape {tuple(logits_all.shape)}")
        logits = logits_all[rows].cpu().clone()
        tensors["logits"] = logits
        if first:
            hs = out.hidden_states
            if hs is None or len(hs) != n_layers + 1:
                raise SystemExit(f"{meta['case']}: {0 if hs is None else len(hs)} hidden states, want {n_layers + 1}")
            hs = [h[0].float() for h in hs]
            if any(tuple(h.shape) != (t_len, tc["hidden_size"]) for h in hs):
                raise SystemExit(f"{meta['case']}: hidden state shapes {[tuple(h.shape) for h in hs]}")

            def unbatch(t):
                return (t[0] if t.dim() == 3 else t).float()

            def same(i, key):
                return key in captured and torch.equal(hs[i], unbatch(captured[key]))

            head_ok = same(0, "embed") and all(same(i, f"layer{i - 1}") for i in range(1, n_layers))
            if same(n_layers, "norm"):
                last = ("model.norm(output of layer L-1), i.e. the final RMSNorm output that feeds lm_head")
            elif same(n_layers, f"layer{n_layers - 1}"):
                last = "output of decoder layer L-1 before the final norm"
            else:
                last = "not identified (see hidden_states_layout_check)"
            meta["hidden_states_layout"] = (
                "hidden_states[0] = token embeddings; hidden_states[i], 1<=i<L = output (residual stream) of decoder "
                f"layer i-1; hidden_states[L] = {last}; last_layer_output = output of decoder layer L-1 before the "
                "final norm")
            meta["hidden_states_layout_check"] = (
                "verified with forward hooks on embed_tokens, every decoder layer and the final norm"
                if head_ok and not last.startswith("not") else
                f"NOT verified: hooks captured {sorted(captured)}; entries 0..L-1 match: {head_ok}")
            if f"layer{n_layers - 1}" not in captured:
                raise SystemExit(f"{meta['case']}: the forward hook on the last decoder layer did not fire")
            tensors["hidden_states"] = torch.stack(hs).cpu().clone()
            tensors["last_layer_output"] = unbatch(captured[f"layer{n_layers - 1}"]).cpu().clone()
            if tuple(tensors["last_layer_output"].shape) != (t_len, tc["hidden_size"]):
                raise SystemExit(f"{meta['case']}: last layer output shape {tuple(tensors['last_layer_output'].shape)}")
        # greedy continuation
        if t_len <= SHORT_PROMPT_MAX:
            greedy, margins, step_logits = [], [], []
            with torch.no_grad():
                o = model(input_ids=x, position_ids=pos, use_cache=True)
                pkv = o.past_key_values
                cur = o.logits[0, -1].float()
                for k in range(N_GREEDY):
                    tok = int(torch.argmax(cur).item())
                    top2 = torch.topk(cur, 2).values
                    greedy.append(tok)
                    margins.append(float(top2[0] - top2[1]))
                    step_logits.append(cur.cpu().clone())
                    if k == N_GREEDY - 1:
                        break
                    o = model(input_ids=torch.tensor([[tok]], device=dev),
                              position_ids=torch.tensor([[t_len + k]], device=dev),
                              past_key_values=pkv, use_cache=True)
                    pkv = o.past_key_values
                    cur = o.logits[0, -1].float()
                # the same continuation recomputed without a cache, in one forward pass
                full_ids = torch.tensor([ids + greedy[:-1]], dtype=torch.long, device=dev)
                full_pos = torch.arange(full_ids.shape[1], dtype=torch.long, device=dev)[None]
                full = model(input_ids=full_ids, position_ids=full_pos, use_cache=False).logits[0, t_len - 1:].float()
            step = torch.stack(step_logits)
            agree = [int(v) for v in torch.argmax(full, dim=-1).cpu()] == greedy
            meta["greedy_note"] = (
                f"own loop, no generate(): prefill with use_cache=True, then {N_GREEDY - 1} single-token steps with the "
                f"returned DynamicCache and explicit position_ids T..T+{N_GREEDY - 2}; next token = torch.argmax of the "
                f"float32 logits (first index on ties); eos (id 2) is an ordinary token and never stops the loop; "
                f"greedy_margin = top1 - top2 logit at each step")
            meta["greedy_full_forward_agrees"] = str(agree).lower()
            meta["greedy_cache_vs_full_max_abs_diff"] = repr(float((step - full.cpu()).abs().max()))
            tensors["greedy_ids"] = torch.tensor(greedy, dtype=torch.long)
            tensors["greedy_margin"] = torch.tensor(margins, dtype=torch.float32)
            if first:
                tensors["greedy_logits"] = step.clone()
                meta["greedy_logits_note"] = ("greedy_logits[k] = logits the k-th greedy token was chosen from: row 0 "
                                              "from the prefill, row k>=1 from the decode step that fed "
                                              "greedy_ids[k-1] at position T+k-1")
        else:
            meta["greedy_note"] = "none for prompts longer than 32 tokens"
        # independent pure-Python reference
        pyref_diff = None
        if pyref:
            problems = pyref_supported(tc)
            if problems:
                meta["pyref_note"] = f"skipped: {problems}"
            else:
                ref = pyref_logits(ck, ids, list(range(t_len)), rows, expected_scaling(tc, mode))
                pyref_diff = float((torch.tensor(ref, dtype=torch.float64) - logits.double()).abs().max())
                meta["pyref_max_abs_diff"] = repr(pyref_diff)
                inv = yarn_inv_freq(tc)
                meta["pyref_inv_freq_max_rel_diff"] = repr(max(
                    abs(a - b) / abs(a) for a, b in zip(inv, tensors["rope_inv_freq"].tolist())))
                meta["pyref_note"] = ("max |logits - pure-Python float64 forward written from MODEL.md §3-§4| over the "
                                      "stored rows; informational")
        # write
        name = f"{ck.name}.{prompt}.{mode}.safetensors"
        path = os.path.join(out_dir, name)
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
        size = os.path.getsize(path)
        if size >= MAX_FILE_BYTES:
            raise SystemExit(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} limit")
        return {
            "file": name, "case": meta["case"], "t": t_len, "scaling": scaling, "size": size,
            "max_abs_logit": float(logits.abs().max()), "pyref": pyref_diff,
            "greedy": tensors["greedy_ids"].tolist() if "greedy_ids" in tensors else None,
            "greedy_agree": meta.get("greedy_full_forward_agrees"),
            "weights": meta["weights_fnv1a64"], "semantics": ck.dtype_semantics,
        }


def write_tar(out_root, files, tar_path):
    os.makedirs(os.path.dirname(os.path.abspath(tar_path)), exist_ok=True)
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in sorted(files):
            with open(os.path.join(out_root, rel), "rb") as fh:
                data = fh.read()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def generate(args):
    t_start = time.time()
    host = Host(args.device)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m}")
    out_dir = os.path.join(args.out, GOLDEN_SUBDIR)
    os.makedirs(out_dir, exist_ok=True)
    results, failures = [], []
    print(f"transformers {host.transformers.__version__}, torch {host.torch.__version__}, device {host.device}, "
          f"has yarn_apply_mscale: {hasattr(host.m4, 'yarn_apply_mscale')}", flush=True)
    for d in args.ckpts:
        try:
            t0 = time.time()
            ck = Checkpoint(d)
            if ck.fp8_parts:
                host.check_fp8_decoding(ck)
            for mode in modes:
                model, load_path = host.load(ck, mode)
                for i, (prompt, n_random) in enumerate(PROMPTS):
                    r = host.run_case(ck, model, mode, prompt, n_random, i == 0, load_path, not args.no_pyref,
                                      out_dir)
                    results.append(r)
                    print(f"  wrote {r['file']} ({r['size']} B)", flush=True)
                del model
            print(f"{ck.name}: done in {time.time() - t0:.1f}s", flush=True)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - report and go on with the other checkpoints
            traceback.print_exc()
            failures.append(f"{d}: {type(e).__name__}: {e}")
    rels = [os.path.join(GOLDEN_SUBDIR, r["file"]) for r in results]
    manifest = os.path.join(GOLDEN_SUBDIR, "MANIFEST.tsv")
    with open(os.path.join(args.out, manifest), "w") as fh:
        fh.write("file\tcase\tT\tscaling\tdtype_semantics\tweights_fnv1a64\tmax_abs_logit\tpyref_max_abs_diff\t"
                 "greedy_ids\n")
        for r in results:
            fh.write(f"{r['file']}\t{r['case']}\t{r['t']}\t{r['scaling']!r}\t{r['semantics']}\t{r['weights']}\t"
                     f"{r['max_abs_logit']:.6g}\t{'' if r['pyref'] is None else format(r['pyref'], '.3g')}\t"
                     f"{'' if r['greedy'] is None else ' '.join(map(str, r['greedy']))}\n")
    tar_path = args.tar or os.path.join(args.out, "goldens.tar")
    write_tar(args.out, rels + [manifest], tar_path)
    lines = [f"{'case':<44} {'scaling':>10} {'max|logit|':>10} {'pyref':>9} {'cache=full':>10}  first greedy ids"]
    for r in results:
        flag = "" if r["pyref"] is None or r["pyref"] <= 1e-3 * max(1.0, r["max_abs_logit"]) else " (!)"
        lines.append(f"{r['case']:<44} {r['scaling']:>10.7f} {r['max_abs_logit']:>10.4f} "
                     f"{'-' if r['pyref'] is None else format(r['pyref'], '.2e'):>9}{flag} "
                     f"{r['greedy_agree'] or '-':>10}  "
                     f"{'-' if r['greedy'] is None else ' '.join(map(str, r['greedy'][:8]))}")
    lines.append(f"{len(results)} files, tar {tar_path} ({os.path.getsize(tar_path)} B), {time.time() - t_start:.0f}s")
    for f in failures:
        lines.append(f"FAILED {f}")
    summary = "\n".join(lines)
    if args.summary:
        with open(args.summary, "w") as fh:
            fh.write(summary + "\n")
    print("\n" + summary, flush=True)
    return 1 if failures or not results else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpts", nargs="*", help="checkpoint directories (quatre gen-model --format hf)")
    ap.add_argument("--self-check", action="store_true", help="pure-Python tests (plus the given checkpoints)")
    ap.add_argument("--hash", action="store_true", help="print weights_fnv1a64 of each checkpoint and exit")
    ap.add_argument("--out", help="output root; files go to OUT/" + GOLDEN_SUBDIR)
    ap.add_argument("--tar", help="tar path (default OUT/goldens.tar)")
    ap.add_argument("--summary", help="also write the summary table here")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: hf,release")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu; tiny models)")
    ap.add_argument("--no-pyref", action="store_true", help="skip the pure-Python float64 cross-check")
    args = ap.parse_args()
    if args.self_check:
        return self_check(args.ckpts)
    if args.hash:
        for d in args.ckpts:
            print(f"{weights_fnv1a64(d)}  {os.path.basename(os.path.abspath(d.rstrip('/')))}")
        return 0
    if not args.out or not args.ckpts:
        ap.error("--out and at least one checkpoint directory are required")
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
