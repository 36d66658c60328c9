"""The pure-Python float64 reference forward pass for make_goldens.py ("pyref"), written from MODEL.md §3-§4 and
independent of transformers and torch: YaRN inv_freq and attention factor, Llama-4 query temperature, the softmax scale
of each mode (expected_scaling), and the full forward to logits (expanded MLA, MoE routing, shared expert), with the FP8
linears either W8A16 (dequantized weights, the default) or static W8A8 (w8a8=True, MODEL.md §6.2: fp8_e4m3_rne,
W8A8Linear)."""
import math
import operator

from goldens_ckpt import FP8_E4M3_LUT

MODES = ("hf", "release")  # softmax-scale modes (expected_scaling)


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


# ---------------------------------------------------------------------------------------------------------------------
# Static W8A8 FP8 (MODEL.md §6.2)
# ---------------------------------------------------------------------------------------------------------------------

FP8_E4M3_MAX = 448.0
# FP8 linears that stay W8A16 in the W8A8 forward: the engine absorbs kv_b into the attention (as vLLM does), so no
# quantized activation is ever applied to it.
W8A8_EXCLUDED = ("self_attn.kv_b_proj.weight",)


def fp8_e4m3_rne(v):
    """v clamped to [-448, 448], then rounded to the nearest E4M3FN value, ties to even: normals (1 + m/8)·2^e for
    e in [-6, 8], subnormals m/8·2^-6. Exact for every non-NaN float (inf clamps to ±448; NaN raises ValueError)."""
    a = min(abs(v), FP8_E4M3_MAX)
    if a == 0:
        return math.copysign(0.0, v)
    e = max(math.frexp(a)[1] - 1, -6)  # 2^e <= a < 2^(e+1); the subnormals share the step of e = -6
    step = math.ldexp(1.0, e - 3)  # 3 mantissa bits
    return math.copysign(round(a / step) * step, v)  # a/step is exact; round() on a float is half-to-even


class W8A8Linear:
    """A static W8A8 FP8 linear: x_q = fp8_e4m3_rne(x / a) (x/a in float64),
    y[r] = (Σ_k x_q[k]·W_fp8[r,k]) · (a·s_r), with W_fp8 the raw E4M3 values (not scaled), s_r the weight scale of
    row r (per tensor; per expert, and per gate/up half for a stacked gate_up) and a the activation scale (per
    tensor; per expert)."""
    # x/a, float64; goldens_w8a8.py swaps it for a while to measure how sensitive the result is to the division
    divide = staticmethod(operator.truediv)

    def __init__(self, rows, row_scales, a):
        self.rows, self.a = rows, a
        self.factors = [a * s for s in row_scales]

    def __call__(self, x):
        a, divide = self.a, self.divide
        xq = [fp8_e4m3_rne(divide(v, a)) for v in x]
        return [_dot(row, xq) * f for row, f in zip(self.rows, self.factors)]


def _fp8_rows(raw, lo, n_rows, cols):
    lut = FP8_E4M3_LUT
    return [[lut[b] for b in raw[lo + i * cols:lo + (i + 1) * cols]] for i in range(n_rows)]


def w8a8_linears(ck, name):
    """The FP8 weight `name` as W8A8Linear: one for a 2-D weight, a list over experts for a stacked [E, R, C] one (row
    r of expert e uses weight scale [e, r // (R/k)] of the k per expert, as dequantize_fp8)."""
    shape, raw, _, scale = ck.fp8_parts[name]
    if name not in ck.act_scales:
        raise SystemExit(f"{ck.name}: FP8 linear {name} has no activation scale, cannot run static W8A8")
    act = ck.act_scales[name][1]
    n_act = 1 if len(shape) == 2 else shape[0]
    if len(act) != n_act:
        raise SystemExit(f"{ck.name}: {name}: {len(act)} activation scales, want {n_act}")
    if len(shape) == 2:
        r, c = shape
        return W8A8Linear(_fp8_rows(raw, 0, r, c), [scale[0]] * r, act[0])
    e_, r, c = shape
    k = len(scale) // e_
    return [W8A8Linear(_fp8_rows(raw, e * r * c, r, c), [scale[e * k + i // (r // k)] for i in range(r)], act[e])
            for e in range(e_)]


def _lin(w, x):
    """Apply a linear: a W8A8Linear, or a plain (dequantized / BF16) row-major matrix."""
    return w(x) if isinstance(w, W8A8Linear) else _matvec(w, x)


# ---------------------------------------------------------------------------------------------------------------------
# Weights and the forward pass
# ---------------------------------------------------------------------------------------------------------------------

def pyref_weights(ck, w8a8=False):
    """The weights the forward uses, cached on the Checkpoint per w8a8 flag. w8a8: every FP8 linear except
    W8A8_EXCLUDED becomes a W8A8Linear (the checkpoint must be FP8 with static activation scales)."""
    if w8a8 in ck._pyref_cache:
        return ck._pyref_cache[w8a8]
    if w8a8 and (not ck.fp8_parts or ck.activation_scheme != "static"):
        raise SystemExit(f"{ck.name}: W8A8 needs an FP8 checkpoint with activation_scheme static "
                         f"(got {len(ck.fp8_parts)} FP8 tensors, activation_scheme {ck.activation_scheme})")

    def quantized(name):
        return w8a8 and name in ck.fp8_parts and not name.endswith(W8A8_EXCLUDED)

    def lin(name):
        return w8a8_linears(ck, name) if quantized(name) else ck.matrix(name)

    def experts(name):
        return w8a8_linears(ck, name) if quantized(name) else ck.stacked(name)

    tc, p = ck.text_config, ck.lm_prefix
    w = {"embed": ck.matrix(p + "embed_tokens.weight"), "norm": ck.vector(p + "norm.weight"),
         "lm_head": ck.matrix("lm_head.weight"), "layers": []}
    for li in range(tc["num_hidden_layers"]):
        q = f"{p}layers.{li}."
        lw = {"in_ln": ck.vector(q + "input_layernorm.weight"), "post_ln": ck.vector(q + "post_attention_layernorm.weight"),
              "q_a": lin(q + "self_attn.q_a_proj.weight"), "q_a_ln": ck.vector(q + "self_attn.q_a_layernorm.weight"),
              "q_b": lin(q + "self_attn.q_b_proj.weight"),
              "kv_a": lin(q + "self_attn.kv_a_proj_with_mqa.weight"),
              "kv_a_ln": ck.vector(q + "self_attn.kv_a_layernorm.weight"),
              "kv_b": lin(q + "self_attn.kv_b_proj.weight"), "o": lin(q + "self_attn.o_proj.weight")}
        if li < tc["first_k_dense_replace"]:
            lw["dense"] = tuple(lin(q + f"mlp.{n}_proj.weight") for n in ("gate", "up", "down"))
        else:
            lw["router"] = ck.matrix(q + "mlp.gate.weight")
            lw["gate_up"] = experts(q + "mlp.experts.gate_up_proj")
            lw["down"] = experts(q + "mlp.experts.down_proj")
            lw["shared"] = tuple(lin(q + f"mlp.shared_experts.{n}_proj.weight") for n in ("gate", "up", "down"))
        w["layers"].append(lw)
    ck._pyref_cache[w8a8] = w
    return w


def _qkv(tc, lw, xt, p, rope):
    """One token's per-head query (with the Llama-4 temperature), key and value: expanded MLA, interleaved RoPE."""
    nh, dn, dv, dkv = tc["num_attention_heads"], tc["qk_nope_head_dim"], tc["v_head_dim"], tc["kv_lora_rank"]
    dqk = dn + tc["qk_rope_head_dim"]
    inv_freq, att = rope
    h = _rms(xt, lw["in_ln"], tc["rms_norm_eps"])
    q = _lin(lw["q_b"], _rms(_lin(lw["q_a"], h), lw["q_a_ln"], 1e-6))
    ckv = _lin(lw["kv_a"], h)
    c = _rms(ckv[:dkv], lw["kv_a_ln"], 1e-6)
    k_rope = _rope_interleaved(ckv[dkv:], p, inv_freq, att)
    kvb = _lin(lw["kv_b"], c)
    l4 = llama4_scale(tc, p)
    qh, kh, vh = [], [], []
    for hd in range(nh):
        qq = q[hd * dqk:(hd + 1) * dqk]
        qh.append([v * l4 for v in qq[:dn] + _rope_interleaved(qq[dn:], p, inv_freq, att)])
        kk = kvb[hd * (dn + dv):(hd + 1) * (dn + dv)]
        kh.append(kk[:dn] + k_rope)
        vh.append(kk[dn:])
    return qh, kh, vh


def _attend(qv, keys, values, scale):
    probs = _softmax([_dot(qv, k) * scale for k in keys])
    acc = [0.0] * len(values[0])
    for pu, vv in zip(probs, values):
        for j in range(len(acc)):
            acc[j] += pu * vv[j]
    return acc


def _attention_block(tc, lw, x, positions, scale, rope):
    """x + o_proj(causal attention), every token."""
    qs, ks, vs = zip(*(_qkv(tc, lw, xt, p, rope) for xt, p in zip(x, positions)))
    out = []
    for t in range(len(x)):
        o = []
        for hd in range(tc["num_attention_heads"]):
            o.extend(_attend(qs[t][hd], [k[hd] for k in ks[:t + 1]], [v[hd] for v in vs[:t + 1]], scale))
        a = _lin(lw["o"], o)
        out.append([xi + ai for xi, ai in zip(x[t], a)])
    return out


def _swiglu(gate, up, down, u):
    return _lin(down, [_silu(a) * b for a, b in zip(_lin(gate, u), _lin(up, u))])


def _moe(tc, lw, u):
    """Softmax routing over all experts, top-k renormalised and scaled, plus the unweighted shared expert."""
    i_moe = tc["moe_intermediate_size"]
    probs = _softmax(_matvec(lw["router"], u))
    idx = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[:tc["num_experts_per_tok"]]
    wts = [probs[e] for e in idx]
    if tc["norm_topk_prob"]:
        den = sum(wts) + 1e-20
        wts = [v / den for v in wts]
    wts = [v * tc["routed_scaling_factor"] for v in wts]
    y = _swiglu(*lw["shared"], u)
    for e, we in zip(idx, wts):
        gu = _lin(lw["gate_up"][e], u)
        ye = _lin(lw["down"][e], [_silu(a) * b for a, b in zip(gu[:i_moe], gu[i_moe:])])
        y = [yi + we * v for yi, v in zip(y, ye)]
    return y


def _mlp_block(tc, lw, x):
    """x + MLP(post-attention norm), every token: the dense SwiGLU or the MoE."""
    out = []
    for xt in x:
        u = _rms(xt, lw["post_ln"], tc["rms_norm_eps"])
        y = _swiglu(*lw["dense"], u) if "dense" in lw else _moe(tc, lw, u)
        out.append([xi + yi for xi, yi in zip(xt, y)])
    return out


def pyref_forward(ck, ids, positions, scale, w8a8=False):
    """float64 forward following MODEL.md §3 (expanded MLA, interleaved YaRN RoPE, Llama-4 query temperature, softmax
    routing over all experts, top-k renormalised, shared expert unweighted). Returns (hidden, final): hidden[0] the
    embeddings, hidden[i] the output (residual stream) of decoder layer i-1, i = 1..L; final = the final RMSNorm of
    hidden[L]; each a list of T rows."""
    tc = ck.text_config
    w = pyref_weights(ck, w8a8)
    rope = (yarn_inv_freq(tc), yarn_attention_factor(tc))
    x = [list(w["embed"][i]) for i in ids]
    hidden = [x]
    for lw in w["layers"]:
        x = _attention_block(tc, lw, x, positions, scale, rope)
        x = _mlp_block(tc, lw, x)
        hidden.append(x)
    return hidden, [_rms(xt, w["norm"], tc["rms_norm_eps"]) for xt in x]


def pyref_head(ck, final, rows, w8a8=False):
    """lm_head logits [len(rows)][V] of the given rows of pyref_forward's final norm output."""
    lm_head = pyref_weights(ck, w8a8)["lm_head"]
    return [_matvec(lm_head, final[t]) for t in rows]


def pyref_logits(ck, ids, positions, rows, scale, w8a8=False):
    """float64 logits [len(rows)][V] (pyref_forward, then lm_head on the given rows)."""
    _, final = pyref_forward(ck, ids, positions, scale, w8a8)
    return pyref_head(ck, final, rows, w8a8)
