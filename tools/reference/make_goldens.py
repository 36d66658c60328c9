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

W8A8 (--w8a8, FP8 checkpoints only; files go to OUT/tests/data/golden/w8a8/, source transformers-5.17+w8a8-linears):
  the same dequantized float32 model, but while it runs torch.nn.functional.linear is replaced by a wrapper
  (Host.w8a8_linears) that recognises, by bit-exact content, the weight of every FP8 linear except kv_b_proj and every
  expert's slice of the stacked gate_up_proj / down_proj, and computes for them the static W8A8 of MODEL.md §6.2 in
  float32: x_q = float8_e4m3fn(clamp(x / a, -448, 448)) (torch's conversion rounds to nearest even),
  y = linear(x_q, W_fp8) * (a * weight_scale_inv of each output row), W_fp8 the raw E4M3 values. Both nn.Linear.forward
  and the eager experts loop go through that function; every case checks that each W8A8 nn.Linear and at least one
  expert of each stacked tensor was hit, and fails otherwise (e.g. if a transformers version stops calling it).
  kv_b_proj, embeddings, lm_head, norms and the router stay as in W8A16. pyref runs with w8a8=True.

Independent check ("pyref"): a pure-Python float64 forward pass written from MODEL.md §3-§4 (no torch) is run on
the same decoded weights for every prompt; its max |logit difference| to transformers is recorded in the metadata
and in the summary. It never fails the run (goldens are transformers' numbers); a large value is flagged.

Pure-Python parts (no torch/transformers/numpy/safetensors needed), testable anywhere:
  python3 tools/reference/make_goldens.py --self-check [CKPT_DIR ...]
  python3 tools/reference/make_goldens.py --hash CKPT_DIR ...
Reference host (see make_goldens.sh):
  python3 tools/reference/make_goldens.py --out WORK --tar OUT/goldens.tar CKPT_DIR ...
  python3 tools/reference/make_goldens.py --w8a8 --out WORK --tar OUT/goldens_w8a8.tar FP8_CKPT_DIR
"""
# The pure-Python parts live next to this script (one job each): goldens_ckpt.py (safetensors reading, FP8/BF16
# decoding, dequantization, FNV-1a hashes, name mapping), goldens_prompts.py (prompt ids, logit rows),
# goldens_pyref.py (float64 reference forward, softmax scales), goldens_selfcheck.py (--self-check). This file keeps
# the command line, the transformers loading and running, and the writing of the files.
import argparse
import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # also when run with -P / PYTHONSAFEPATH, or imported from elsewhere
    sys.path.insert(0, _HERE)

from goldens_ckpt import FP8_E4M3_LUT, Checkpoint, weights_fnv1a64  # noqa: E402
from goldens_prompts import (ID_LOW, LOGIT_ROWS_DOC, PROMPT_GENERATOR_DOC, PROMPTS, SHORT_PROMPT_MAX,  # noqa: E402
                             logit_rows, prompt_ids)
from goldens_pyref import (MODES, W8A8_EXCLUDED, expected_scaling, pyref_logits, pyref_supported,  # noqa: E402
                           yarn_inv_freq)
from goldens_selfcheck import self_check  # noqa: E402

GOLDEN_SUBDIR = "tests/data/golden"
W8A8_SUBDIR = GOLDEN_SUBDIR + "/w8a8"
W8A8_SEMANTICS = "fp8-w8a8-static"
N_GREEDY = 32
MAX_FILE_BYTES = 1_000_000


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
        self.w8a8 = False  # inside Host.w8a8_linears

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
    def w8a8_linears(self, ck):
        """While active, torch.nn.functional.linear runs the static W8A8 math for the weights of ck's FP8 linears
        (W8A8_EXCLUDED aside), recognised by content; w8a8_hits collects the labels of those it ran for."""
        torch, dev = self.torch, self.device
        cands = {}  # weight shape -> [(dequantized weight, raw E4M3 as float32, a, a * row scales, label)]
        for name, (shape, raw, _, scale) in ck.fp8_parts.items():
            if name.endswith(W8A8_EXCLUDED):
                continue
            if name not in ck.act_scales:
                raise SystemExit(f"{ck.name}: FP8 linear {name} has no activation scale")
            wq = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
            wq, deq = wq.reshape(shape), self.to_torch(*ck.tensors[name])
            act = torch.tensor(list(ck.act_scales[name][1]), dtype=torch.float32)
            s = torch.tensor(list(scale), dtype=torch.float32)
            if len(shape) == 2:
                items = [(deq, wq, act[0], s.reshape(1).expand(shape[0]), name)]
            else:
                e_, r, _ = shape
                rows = s.reshape(e_, -1).repeat_interleave(r // (s.numel() // e_), dim=1)  # [E, R]: gate/up halves
                items = [(deq[e], wq[e], act[e], rows[e], f"{name}[{e}]") for e in range(e_)]
            for d, w, a, srow, label in items:
                entry = (d.to(dev), w.to(dev), a.to(dev), (a * srow).to(dev), label)
                cands.setdefault(tuple(d.shape), []).append(entry)
        orig = torch.nn.functional.linear

        def linear(input, weight, bias=None):  # noqa: A002 - F.linear's own argument names
            for d, w, a, factor, label in cands.get(tuple(weight.shape), ()):
                if weight.dtype == d.dtype and torch.equal(weight, d):
                    self.w8a8_hits.add(label)
                    xq = torch.clamp(input / a, -448.0, 448.0).to(torch.float8_e4m3fn).to(input.dtype)
                    y = orig(xq, w) * factor
                    return y if bias is None else y + bias
            return orig(input, weight, bias)

        self.w8a8, self.w8a8_hits = True, set()
        torch.nn.functional.linear = linear
        try:
            yield
        finally:
            torch.nn.functional.linear = orig
            self.w8a8 = False

    def check_w8a8_hits(self, ck, case):
        """Every W8A8 2-D linear and at least one expert of every stacked FP8 tensor went through the W8A8 path."""
        want = {n for n, v in ck.fp8_parts.items() if not n.endswith(W8A8_EXCLUDED)}
        missed = sorted(n for n in want if n not in self.w8a8_hits and
                        not any(h.startswith(n + "[") for h in self.w8a8_hits))
        if missed:
            raise SystemExit(f"{case}: the W8A8 F.linear patch never ran for {missed[:6]} ({len(missed)}): "
                             "this transformers version does not call torch.nn.functional.linear for them")

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
            "dtype_semantics": W8A8_SEMANTICS if self.w8a8 else ck.dtype_semantics, "compute_dtype": "float32",
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
        if self.w8a8:
            meta.update({"kv_b": "w8a16", "source": "transformers-5.17+w8a8-linears",
                         "w8a8_note": "F.linear of every FP8 linear but kv_b_proj (and of every expert slice) replaced "
                                      "by static W8A8: float8_e4m3fn(clamp(x/a,-448,448)) times the raw E4M3 weight, "
                                      "times a*weight_scale_inv, float32 (make_goldens.py Host.w8a8_linears)"})
            self.w8a8_hits = set()
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
        if self.w8a8:
            self.check_w8a8_hits(ck, meta["case"])
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
                ref = pyref_logits(ck, ids, list(range(t_len)), rows, expected_scaling(tc, mode), w8a8=self.w8a8)
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
            "weights": meta["weights_fnv1a64"], "semantics": meta["dtype_semantics"],
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
    subdir = W8A8_SUBDIR if args.w8a8 else GOLDEN_SUBDIR
    out_dir = os.path.join(args.out, subdir)
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
            if args.w8a8 and not ck.fp8_parts:
                raise SystemExit(f"{ck.name}: --w8a8 needs an FP8 checkpoint")
            for mode in modes:
                model, load_path = host.load(ck, mode)
                with host.w8a8_linears(ck) if args.w8a8 else contextlib.nullcontext():
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
    rels = [os.path.join(subdir, r["file"]) for r in results]
    manifest = os.path.join(subdir, "MANIFEST.tsv")
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
    ap.add_argument("--w8a8", action="store_true", help="FP8 checkpoints: static W8A8 linears (kv_b_proj W8A16), "
                                                        "files to OUT/" + W8A8_SUBDIR)
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
