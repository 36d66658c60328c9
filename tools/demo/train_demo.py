#!/usr/bin/env python3
"""Trains quatre's demo model (issue #12) on a GPU host with transformers' Mistral4ForCausalLM, then writes the
checkpoint and the golden greedy continuations the C++ test compares against.

One run, everything under OUT:
  train.log                 the loss curve (train loss every LOG_EVERY steps, val loss at each evaluation)
  summary.json              configuration, steps, tokens, wall time, val/test loss and perplexity, versions
  ckpt.tar.partNN           the checkpoint (config.json, generation_config.json, model.safetensors in BF16, tied
                            embeddings: no lm_head) as one tar split in 15 MiB parts (the device tool returns files
                            of at most 16 MiB): `cat ckpt.tar.part* | tar -x`
  goldens.tar               tests/data/golden/demo/<prompt>.safetensors, made by transformers from the saved files

Determinism: fixed seeds, deterministic cuBLAS workspace, fixed data order. The wall-time budget only picks the
number of steps (from the time of the first steps; printed and stored); `--steps N` replays a run exactly as far
as the GPU kernels are deterministic (the eager experts loop's index_add_ may not be).

Softmax scale: the release convention (params.json `yarn.apply_scale: false`: plain (qk_nope+qk_rope)^-0.5, quatre's
default). transformers multiplies it by mscale^2, so this script replaces modeling_mistral4.yarn_apply_mscale with the
identity before any model is built, as tools/reference/make_goldens.py does for its `release` goldens, and checks
self_attn.scaling on every layer. Loading this checkpoint in plain transformers gives another model.

    python3 tools/demo/train_demo.py --data DIR --config tools/demo/config.json --prompts PROMPTS.json --out OUT
DIR holds train.bin / val.bin / test.bin (int32 ids, tools/demo/encode_corpus.cjs).
"""
import argparse
import io
import json
import math
import os
import random
import sys
import tarfile
import time

SEQ_LEN = 512
BATCH = 32
LR = 3e-3
LR_MIN_RATIO = 0.1
WARMUP = 100
WEIGHT_DECAY = 0.1
CLIP = 1.0
LOG_EVERY = 25
N_EVALS = 12
N_GREEDY = 32
N_TOP_COLS = 256
N_RANDOM_COLS = 256
PART_BYTES = 15 * 1024 * 1024
SEED = 12


def fail(message):
    print(f"train_demo: FAILED: {message}", flush=True)
    sys.exit(1)


def log(fh, message):
    print(message, flush=True)
    fh.write(message + "\n")
    fh.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--generation-config", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wall", type=float, default=200.0, help="training time budget in seconds (picks the steps)")
    ap.add_argument("--steps", type=int, default=0, help="exact number of steps (overrides --wall)")
    args = ap.parse_args()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers.models.mistral4 import modeling_mistral4 as m4

    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train.log"), "w")
    if not torch.cuda.is_available():
        fail("no CUDA device")
    dev = torch.device("cuda")
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.cuda.manual_seed_all(SEED)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic
        pass
    log(logf, f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")

    # release softmax scale (see the docstring)
    if not hasattr(m4, "yarn_apply_mscale"):
        fail("modeling_mistral4 has no yarn_apply_mscale to patch")
    m4.yarn_apply_mscale = lambda rope_parameters, scaling: scaling

    # ------------------------------------------------------------------ data
    def load(name):
        a = np.fromfile(os.path.join(args.data, f"{name}.bin"), dtype="<i4")
        if a.size < SEQ_LEN + 1 or a.min() < 0 or a.max() >= 131072:
            fail(f"{name}.bin: {a.size} ids in [{a.min()}, {a.max()}]")
        return torch.from_numpy(a.astype(np.int64))

    train, val, test = load("train"), load("val"), load("test")
    log(logf, f"tokens: train {train.numel()}, val {val.numel()}, test {test.numel()}")
    train_gpu = train.to(dev)

    def windows(ids):  # non-overlapping SEQ_LEN+1 windows (overlapping by one id) covering the stream
        n = (ids.numel() - 1) // SEQ_LEN
        return torch.stack([ids[i * SEQ_LEN:i * SEQ_LEN + SEQ_LEN + 1] for i in range(n)])

    val_w, test_w = windows(val).to(dev), windows(test).to(dev)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(SEED)

    def batch():
        starts = torch.randint(0, train.numel() - SEQ_LEN - 1, (BATCH,), generator=gen).to(dev)
        idx = starts[:, None] + torch.arange(SEQ_LEN + 1, device=dev)[None]
        return train_gpu[idx]

    # ------------------------------------------------------------------ model
    import tempfile
    with open(args.config) as fh:
        cfg_dict = json.load(fh)
    with tempfile.TemporaryDirectory() as tmp:  # the loading path of tools/reference/make_goldens.py
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            json.dump(cfg_dict, fh)
        config = transformers.AutoConfig.from_pretrained(tmp)
    if not config.tie_word_embeddings:
        fail("config does not tie the embeddings")
    model = transformers.Mistral4ForCausalLM._from_config(config, dtype=torch.float32, attn_implementation="eager",
                                                          experts_implementation="eager")
    model.to(dev)
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        fail("lm_head is not tied to embed_tokens")
    want_scale = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    scales = [m.scaling for m in model.modules() if isinstance(m, m4.Mistral4Attention)]
    if len(scales) != config.num_hidden_layers or any(abs(s - want_scale) > 1e-12 for s in scales):
        fail(f"self_attn.scaling {scales} != release {want_scale}")
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.model.embed_tokens.weight.numel()
    log(logf, f"parameters: {n_params} ({n_embed} in the tied embedding, {n_params - n_embed} in the layers)")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.95), eps=1e-8)
    pos = torch.arange(SEQ_LEN, device=dev)[None].expand(BATCH, -1)

    def loss_of(w):  # w [B, SEQ_LEN+1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=w[:, :-1], position_ids=pos[:w.shape[0]], use_cache=False).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))

    @torch.no_grad()
    def eval_loss(ws):
        model.eval()
        total, n = 0.0, 0
        for i in range(0, ws.shape[0], BATCH):
            w = ws[i:i + BATCH]
            total += float(loss_of(w)) * w.shape[0]
            n += w.shape[0]
        model.train()
        return total / n

    def lr_at(step, total):
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, total - WARMUP)
        return LR * (LR_MIN_RATIO + (1 - LR_MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    def train_step(step, total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total)
        loss = loss_of(batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss

    # ------------------------------------------------------------------ train
    model.train()
    t0 = time.time()
    log(logf, f"step 0 val_loss {eval_loss(val_w):.4f}")
    total = args.steps
    probe = 20
    if total <= 0:  # time the first steps at the provisional schedule of a 10,000-step run
        torch.cuda.synchronize()
        tp = time.time()
        for s in range(probe):
            train_step(s, 10_000)
        torch.cuda.synchronize()
        per_step = (time.time() - tp) / probe
        total = max(probe + 50, int((args.wall - (time.time() - t0)) / per_step * 0.92) + probe)
        log(logf, f"{per_step * 1000:.1f} ms/step: {total} steps for a {args.wall:.0f} s budget")
        start = probe
    else:
        start = 0
    eval_every = max(1, total // N_EVALS)
    best = (float("inf"), -1, None)
    curve = []
    running = 0.0
    for step in range(start, total):
        loss = train_step(step, total)
        if (step + 1) % LOG_EVERY == 0:
            running = float(loss)
            log(logf, f"step {step + 1} loss {running:.4f} lr {lr_at(step, total):.2e} t {time.time() - t0:.1f}s")
        if (step + 1) % eval_every == 0 or step + 1 == total:
            v = eval_loss(val_w)
            curve.append([step + 1, float(loss), v])
            log(logf, f"step {step + 1} val_loss {v:.4f} (ppl {math.exp(v):.2f}) t {time.time() - t0:.1f}s")
            if not math.isfinite(v):
                fail("val loss is not finite")
            if v < best[0]:
                best = (v, step + 1, {k: t.detach().clone() for k, t in model.state_dict().items()})
    train_time = time.time() - t0
    model.load_state_dict(best[2])
    log(logf, f"best val loss {best[0]:.4f} at step {best[1]} of {total}; trained {train_time:.1f}s")

    # ------------------------------------------------------------------ save (BF16), then evaluate what was saved
    ckpt = save_checkpoint(model, args, logf, torch, transformers, m4, want_scale)
    ref = load_checkpoint(ckpt, torch, transformers)
    want = {k: v.detach().to(torch.bfloat16).float().cpu() for k, v in model.state_dict().items()}
    got = ref.state_dict()
    if set(got) != set(want) or any(not torch.equal(got[k].cpu(), want[k]) for k in want):
        fail("the reloaded checkpoint differs from the trained weights rounded to BF16")
    if any(abs(m.scaling - want_scale) > 1e-12 for m in ref.modules() if isinstance(m, m4.Mistral4Attention)):
        fail("reloaded self_attn.scaling is not the release value")
    model = ref.to(dev)  # the saved BF16 weights, computed in fp32 under bf16 autocast like training
    val_loss, test_loss = eval_loss(val_w), eval_loss(test_w)
    log(logf, f"saved checkpoint: val loss {val_loss:.4f} ppl {math.exp(val_loss):.3f}; "
              f"held-out test loss {test_loss:.4f} ppl {math.exp(test_loss):.3f}")
    with torch.no_grad():  # the same in full fp32, no autocast
        def fp32_loss(ws):
            tot = 0.0
            for i in range(0, ws.shape[0], BATCH):
                w = ws[i:i + BATCH]
                lg = model(input_ids=w[:, :-1], position_ids=pos[:w.shape[0]], use_cache=False).logits
                tot += float(F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), w[:, 1:].reshape(-1))) * w.shape[0]
            return tot / ws.shape[0]
        test_fp32 = fp32_loss(test_w)
    log(logf, f"held-out test loss in fp32 {test_fp32:.4f} ppl {math.exp(test_fp32):.3f}")

    # ------------------------------------------------------------------ goldens on the CPU in float32
    goldens = golden_cases(ref.to("cpu").eval(), args.prompts, logf, torch, m4)
    golden_tar = os.path.join(args.out, "goldens.tar")
    with tarfile.open(golden_tar, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(goldens.items()):
            ti = tarfile.TarInfo(f"tests/data/golden/demo/{name}")
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tar.addfile(ti, io.BytesIO(data))

    # ------------------------------------------------------------------ the checkpoint, split for the transfer
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(os.listdir(ckpt)):
            tar.add(os.path.join(ckpt, name), arcname=name)
    data = buf.getvalue()
    for i in range(0, len(data), PART_BYTES):
        with open(os.path.join(args.out, f"ckpt.tar.part{i // PART_BYTES:02d}"), "wb") as fh:
            fh.write(data[i:i + PART_BYTES])
    import shutil
    shutil.rmtree(ckpt)

    summary = {
        "torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(0),
        "seed": SEED, "seq_len": SEQ_LEN, "batch": BATCH, "lr": LR, "lr_min_ratio": LR_MIN_RATIO, "warmup": WARMUP,
        "weight_decay": WEIGHT_DECAY, "clip": CLIP, "steps": total, "best_step": best[1],
        "tokens_seen": total * BATCH * SEQ_LEN, "train_tokens": train.numel(), "val_tokens": val.numel(),
        "test_tokens": test.numel(), "train_seconds": train_time, "parameters": n_params, "embedding": n_embed,
        "val_loss": val_loss, "val_ppl": math.exp(val_loss), "test_loss": test_loss, "test_ppl": math.exp(test_loss),
        "test_loss_fp32": test_fp32, "test_ppl_fp32": math.exp(test_fp32), "curve": curve,
        "tar_bytes": len(data), "goldens": sorted(goldens),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    log(logf, "done")


def load_checkpoint(ckpt, torch, transformers):
    ref, info = transformers.Mistral4ForCausalLM.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    # the tied lm_head is not in the file; transformers may or may not list it as missing
    bad = {k: [x for x in v if x != "lm_head.weight"] if isinstance(v, (list, set, tuple)) else v
           for k, v in info.items()}
    if any(v for v in bad.values()):
        fail(f"from_pretrained({ckpt}) loading info not clean: {info}")
    ref.float().eval()
    if ref.lm_head.weight.data_ptr() != ref.model.embed_tokens.weight.data_ptr():
        fail("the reloaded model does not tie lm_head to embed_tokens")
    return ref


def save_checkpoint(model, args, logf, torch, transformers, m4, want_scale):
    """config.json (tools/demo/config.json as is), generation_config.json and model.safetensors: the state dict in
    BF16 under its module names, without lm_head.weight (tied). Checked by reloading with from_pretrained and
    comparing every tensor; if that round trip fails (a load-time weight conversion), save_pretrained's output is
    tried the same way instead."""
    from safetensors.torch import save_file
    ckpt = os.path.join(args.out, "_ckpt")
    os.makedirs(ckpt, exist_ok=True)
    with open(args.config) as fh:
        cfg = fh.read()
    with open(args.generation_config) as fh:
        gen_cfg = fh.read()
    sd = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}
    save_file(sd, os.path.join(ckpt, "model.safetensors"), metadata={"format": "pt"})
    for name, text in (("config.json", cfg), ("generation_config.json", gen_cfg)):
        with open(os.path.join(ckpt, name), "w") as fh:
            fh.write(text)
    want = {k: v.detach().to(torch.bfloat16).float().cpu() for k, v in model.state_dict().items()}
    try:
        got = load_checkpoint(ckpt, torch, transformers).state_dict()
        if set(got) == set(want) and all(torch.equal(got[k].cpu(), want[k]) for k in want):
            log(logf, f"saved {sorted(os.listdir(ckpt))}: {len(sd)} tensors, round trip exact")
            return ckpt
        log(logf, "own safetensors do not round-trip; trying save_pretrained")
    except (Exception, SystemExit) as e:  # noqa: BLE001 - fall back, reported
        log(logf, f"own safetensors did not load cleanly ({e!r}); trying save_pretrained")
    import shutil
    shutil.rmtree(ckpt)
    model.to(torch.bfloat16).save_pretrained(ckpt, safe_serialization=True, max_shard_size="1GB")
    model.float()
    with open(os.path.join(ckpt, "generation_config.json"), "w") as fh:
        fh.write(gen_cfg)
    log(logf, f"save_pretrained wrote {sorted(os.listdir(ckpt))}")
    return ckpt


def golden_cases(model, prompts_path, logf, torch, m4):
    """Greedy continuations of each prompt: own loop (prefill, then one token at a time with the DynamicCache and
    explicit positions), argmax of float32 logits, eos never stops it. Stored per step: the id, the top1-top2 margin
    and the logits at N_TOP_COLS top columns plus N_RANDOM_COLS fixed pseudo-random ones."""
    from safetensors.torch import save
    torch.set_float32_matmul_precision("highest")
    with open(prompts_path) as fh:
        prompts = json.load(fh)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(SEED)
    random_cols = torch.randperm(vocab, generator=g)[:N_RANDOM_COLS]
    out = {}
    for p in prompts:
        ids = [int(i) for i in p["ids"]]
        t = len(ids)
        greedy, margins, cols, vals = [], [], [], []
        with torch.no_grad():
            o = model(input_ids=torch.tensor([ids]), position_ids=torch.arange(t)[None], use_cache=True)
            pkv, cur = o.past_key_values, o.logits[0, -1].float()
            for k in range(N_GREEDY):
                top = torch.topk(cur, N_TOP_COLS)
                greedy.append(int(torch.argmax(cur)))  # first index on ties, like quatre's max_element
                margins.append(float(top.values[0] - top.values[1]))
                c = torch.cat([top.indices, random_cols])
                cols.append(c)
                vals.append(cur[c].clone())
                if k == N_GREEDY - 1:
                    break
                o = model(input_ids=torch.tensor([[greedy[-1]]]), position_ids=torch.tensor([[t + k]]),
                          past_key_values=pkv, use_cache=True)
                pkv, cur = o.past_key_values, o.logits[0, -1].float()
            full = model(input_ids=torch.tensor([ids + greedy[:-1]]),
                         position_ids=torch.arange(t + N_GREEDY - 1)[None], use_cache=False).logits[0, t - 1:]
        agree = [int(v) for v in torch.argmax(full.float(), dim=-1)] == greedy
        meta = {
            "case": p["name"], "prompt_kind": p["kind"], "prompt_text": json.dumps(p.get("text", p.get("messages"))),
            "architecture": "Mistral4ForCausalLM", "softmax_scale_mode": "release",
            "scaling": repr(model.model.layers[0].self_attn.scaling), "dtype_semantics": "bf16",
            "compute_dtype": "float32", "device": "cpu", "attn_implementation": "eager",
            "experts_implementation": "eager", "transformers_version": __import__("transformers").__version__,
            "torch_version": torch.__version__, "greedy_full_forward_agrees": str(agree).lower(),
            "greedy_note": (f"own loop: prefill with use_cache=True, then {N_GREEDY - 1} single-token steps with the "
                            "DynamicCache and explicit positions; argmax of float32 logits; eos does not stop it"),
            "logit_cols_note": (f"greedy_logit_vals[k, j] = logits of step k at column greedy_logit_cols[k, j]: the "
                                f"top {N_TOP_COLS} of that step, then {N_RANDOM_COLS} fixed pseudo-random columns"),
        }
        tensors = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "greedy_ids": torch.tensor(greedy, dtype=torch.long),
            "greedy_margin": torch.tensor(margins, dtype=torch.float32),
            "greedy_logit_cols": torch.stack(cols).long(),
            "greedy_logit_vals": torch.stack(vals).float(),
        }
        out[f"{p['name']}.safetensors"] = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
        log(logf, f"golden {p['name']}: T={t} greedy {greedy[:16]}... min margin {min(margins):.4f} "
                  f"full-forward agrees {agree}")
    return out


if __name__ == "__main__":
    main()
