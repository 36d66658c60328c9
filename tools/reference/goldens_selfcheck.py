"""make_goldens.py --self-check: pure-Python tests of the hashing, the prompt generator, the logit-row rule, the name
mapping, the FP8/BF16 decoders and dequantization, the RoPE / softmax-scale formulas (against MODEL.md and the probe
log), and, on the given checkpoints, decoding, FP8-vs-BF16 dequantization and the float64 reference forward."""
import array
import math
import os
import tempfile
import time

from goldens_ckpt import (CAUSAL_ARCH, FP8_E4M3_LUT, VLM_ARCH, Checkpoint, decode_f32, dequantize_fp8, fnv1a64,
                          to_module_name, weights_fnv1a64)
from goldens_prompts import BOS_ID, ID_LOW, LCG_A, LCG_C, MASK64, logit_rows, prompt_ids
from goldens_pyref import (MODES, expected_scaling, llama4_scale, pyref_logits, pyref_supported, yarn_attention_factor,
                           yarn_inv_freq)


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
