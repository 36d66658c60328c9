"""The pure-Python float64 reference forward pass for make_goldens.py ("pyref"), written from MODEL.md §3-§4 and
independent of transformers and torch: YaRN inv_freq and attention factor, Llama-4 query temperature, the softmax scale
of each mode (expected_scaling), and the full forward to logits (expanded MLA, MoE routing, shared expert)."""
import math
import operator

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
