"""Checkpoint reading for make_goldens.py, pure Python (no torch/numpy/safetensors): the safetensors reader, FP8 E4M3 /
BF16 / F16 decoding to float32, per-tensor and per-expert FP8 dequantization, the FNV-1a 64 hashes recorded in every
golden (weights_fnv1a64, config_fnv1a64), and the on-disk (legacy) -> transformers module name mapping. Checkpoint
holds one gen-model HF checkpoint decoded to float32, keyed by module names."""
import array
import json
import math
import os
import struct
import sys

MASK64 = (1 << 64) - 1

# Mistral4Config defaults (configuration_mistral4.py), used only by the pure-Python reference when a key is absent.
TEXT_DEFAULTS = {
    "intermediate_size": 12288, "moe_intermediate_size": 2048, "n_shared_experts": 1, "n_routed_experts": 128,
    "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1, "num_experts_per_tok": 4,
    "first_k_dense_replace": 0, "norm_topk_prob": True, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_interleave": True, "attention_bias": False,
}



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
        self._pyref_cache = {}  # goldens_pyref.pyref_weights, keyed by its w8a8 flag
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
        # FP8 weight module name -> (shape, values) of its activation scale (scalar, or [E] for stacked experts);
        # used only by the W8A8 forwards (pyref w8a8=True, make_goldens.py --w8a8), ignored by W8A16
        self.act_scales = {base: (shape, decode_f32(dt, b)) for base, (_, (dt, shape, b)) in act_scale.items()}
        self.activation_scheme = (qc or {}).get("activation_scheme")
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
