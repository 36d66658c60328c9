"""make_goldens.py --self-check: pure-Python tests of the hashing, the prompt generator, the logit-row rule, the name
mapping, the FP8/BF16 decoders and dequantization, the E4M3 rounding and W8A8 linear of the static W8A8 forward, the
RoPE / softmax-scale formulas (against MODEL.md and the probe log), and, on the given checkpoints, decoding, FP8-vs-BF16
dequantization and the float64 reference forward (W8A16, and W8A8 on FP8 checkpoints)."""
import array
import math
import os
import tempfile
import time
import types

import goldens_pyref
from goldens_ckpt import (CAUSAL_ARCH, FP8_E4M3_LUT, VLM_ARCH, Checkpoint, decode_f32, dequantize_fp8, fnv1a64,
                          to_module_name, weights_fnv1a64)
from goldens_prompts import BOS_ID, ID_LOW, LCG_A, LCG_C, MASK64, logit_rows, prompt_ids
from goldens_pyref import (MODES, W8A8Linear, expected_scaling, fp8_e4m3_rne, llama4_scale, pyref_logits,
                           pyref_supported, pyref_weights, w8a8_linears, yarn_attention_factor, yarn_inv_freq)


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

    fp8_rounding_checks(check)

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
        if ck.fp8_parts and ck.activation_scheme == "static":
            w8a8_checkpoint_checks(check, ck, ids, pos, out)
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


def fp8_rounding_checks(check):
    """fp8_e4m3_rne (clamp to ±448, round to nearest even onto E4M3FN) and W8A8Linear (MODEL.md §6.2)."""
    up, down = math.inf, -math.inf
    finite = [b for b in range(256) if not math.isnan(FP8_E4M3_LUT[b])]
    check(all(fp8_e4m3_rne(FP8_E4M3_LUT[b]) == FP8_E4M3_LUT[b] and
              math.copysign(1, fp8_e4m3_rne(FP8_E4M3_LUT[b])) == math.copysign(1, FP8_E4M3_LUT[b]) for b in finite),
          f"fp8_e4m3_rne: all {len(finite)} finite E4M3FN values (signed zeros too) are fixed points")
    # Between codes b and b+1 (same sign, |b| < 0x7E): the midpoint goes to the even code (even mantissa), one float64
    # ulp either side goes to the nearer one; subnormals and binade edges included.
    bad = []
    for b in range(0x7E):
        lo, hi = FP8_E4M3_LUT[b], FP8_E4M3_LUT[b + 1]
        mid = (lo + hi) / 2
        for sign in (1.0, -1.0):
            for v, want in ((mid, lo if b % 2 == 0 else hi), (math.nextafter(mid, up), hi),
                            (math.nextafter(mid, down), lo)):
                if fp8_e4m3_rne(sign * v) != sign * want:
                    bad.append((sign * v, fp8_e4m3_rne(sign * v), sign * want))
    check(not bad, f"fp8_e4m3_rne: the 126 midpoints ties-to-even, 0.5 ulp boundaries +-1 float64 ulp, both signs "
                   f"{bad[:3]}")
    cases = [(1.0625, 1.0), (1.0625 + 2.0 ** -40, 1.125), (1.1875, 1.25), (1.1875 - 2.0 ** -40, 1.125),
             (-1.1875, -1.25), (2.0 ** -9, 2.0 ** -9), (2.0 ** -10, 0.0), (2.0 ** -10 + 2.0 ** -60, 2.0 ** -9),
             (3 * 2.0 ** -10, 2.0 ** -8), (5 * 2.0 ** -10, 2.0 ** -8), (7 * 2.0 ** -10, 4 * 2.0 ** -9),
             (2.0 ** -6 - 2.0 ** -10, 2.0 ** -6), (1e-30, 0.0), (432.0, 448.0), (431.99, 416.0), (447.0, 448.0),
             (448.0, 448.0), (449.0, 448.0), (464.0, 448.0), (1e30, 448.0), (math.inf, 448.0), (-1e30, -448.0),
             (-math.inf, -448.0), (0.1, 0.1015625), (-3.3, -3.25), (300.0, 288.0)]
    wrong = [(v, fp8_e4m3_rne(v), w) for v, w in cases if fp8_e4m3_rne(v) != w]
    check(not wrong, f"fp8_e4m3_rne: named cases (ties to even, subnormals, clamp at 448) {wrong[:3]}")
    check(math.copysign(1, fp8_e4m3_rne(-1e-30)) == -1, "fp8_e4m3_rne: -1e-30 -> -0.0")
    try:
        fp8_e4m3_rne(math.nan)
        check(False, "fp8_e4m3_rne(NaN) raises")
    except ValueError:
        check(True, "fp8_e4m3_rne(NaN) raises")
    # y[r] = (sum_k x_q[k] W[r,k]) * (a * s_r): x/a = [1.0625, -3.5] -> x_q = [1, -3.5] (tie to even, exact)
    lin = W8A8Linear([[1.0, 2.0], [448.0, -0.5]], [0.5, 0.25], 2.0)
    check(lin([2.125, -7.0]) == [-6.0, 224.875], "W8A8Linear: quantized input, raw weights, a * row scale")
    # stacked experts: [E=2, R=2, C=1] all 1.0, weight scales [E,2,1] = 1,2 / 3,4, activation scales [1, 0.5]
    fake = types.SimpleNamespace(name="fake", act_scales={"x": ([2], [1.0, 0.5])},
                                 fp8_parts={"x": ([2, 2, 1], bytes([0x38] * 4), [2, 2, 1], [1.0, 2.0, 3.0, 4.0])})
    got = [e([1.0]) for e in w8a8_linears(fake, "x")]
    check(got == [[1.0, 2.0], [3.0, 4.0]], f"W8A8 stacked experts: per-expert activation scale, per-half weight "
                                           f"scale {got}")


def w8a8_checkpoint_checks(check, ck, ids, pos, out):
    """On an FP8 checkpoint with static activation scales: which linears go W8A8; with the rounding replaced by the
    identity the W8A8 forward is the W8A16 one (up to the float32 rounding of the dequantized weights); the real W8A8
    forward is finite, causal and visibly but not hugely different from the W8A16 one (the random tiny model is about
    as sensitive to E4M3 activations as to E4M3 weights: its FP8 and BF16 goldens differ by up to ~1 on p13)."""
    lw = pyref_weights(ck, w8a8=True)["layers"][0]
    kinds = {k: type(v[0] if isinstance(v, list) and isinstance(v[0], W8A8Linear) else v).__name__
             for k, v in lw.items() if k in ("q_a", "q_b", "kv_a", "kv_b", "o", "gate_up", "down")}
    want = {"q_a": "W8A8Linear", "q_b": "W8A8Linear", "kv_a": "W8A8Linear", "kv_b": "list", "o": "W8A8Linear",
            "gate_up": "W8A8Linear", "down": "W8A8Linear"}
    shared_ok = all(isinstance(v, W8A8Linear) for v in lw.get("shared", ()))
    check(kinds == want and shared_ok, f"{ck.name}: W8A8 on every FP8 linear but kv_b_proj (W8A16) {kinds}")
    rows = list(range(len(ids)))
    rounding = goldens_pyref.fp8_e4m3_rne
    goldens_pyref.fp8_e4m3_rne = float
    try:
        ident = pyref_logits(ck, ids, pos, rows, expected_scaling(ck.text_config, "hf"), w8a8=True)
    finally:
        goldens_pyref.fp8_e4m3_rne = rounding
    diff = max(abs(a - b) for r1, r2 in zip(ident, out["hf"]) for a, b in zip(r1, r2))
    check(diff < 1e-5, f"{ck.name}: W8A8 with identity rounding = W8A16 (weight and activation scales) "
                       f"(max diff {diff:.3g})")
    t0 = time.time()
    q = {m: pyref_logits(ck, ids, pos, rows, expected_scaling(ck.text_config, m), w8a8=True)
         for m in MODES}
    ok = all(math.isfinite(v) for m in MODES for r in q[m] for v in r)
    diff = max(abs(a - b) for m in MODES for r1, r2 in zip(q[m], out[m]) for a, b in zip(r1, r2))
    big = max(abs(v) for r in out["hf"] for v in r)
    check(ok and 1e-3 < diff < 0.5 * big, f"{ck.name}: pyref W8A8 p6 finite, max |W8A8 - W8A16| {diff:.3g} "
                                          f"(max|logit| {big:.3g}) ({time.time() - t0:.1f}s)")
    pre = pyref_logits(ck, ids[:3], pos[:3], [0, 1, 2], expected_scaling(ck.text_config, "hf"), w8a8=True)
    check(pre == q["hf"][:3], f"{ck.name}: pyref W8A8 is causal")
