#!/usr/bin/env python3
"""Probe an installed transformers (5.17) for the facts quatre needs to write and read
Mistral Small 4 checkpoints: config.json as transformers writes it, on-disk tensor names,
the experts-implementation knobs, the softmax-scale fold, and the FP8 loading paths.

Usage (on a host that has torch + transformers):
    python3 probe_transformers.py OUTDIR

Writes into OUTDIR:
    transformers_src.tar.gz  selected installed transformers .py sources (paths relative to the package)
    facts.json               machine-readable summary
    ckpts.tar.gz             the tiny checkpoints that were written (bf16-less fp32, fp8 variants)
Everything else goes to stdout (tee it into probe.log).

Each probe is guarded: a failure is printed with its traceback and recorded; later probes still run.
Risky loads (CUDA FP8, anything that may try the hub) run in child processes with a timeout.
"""

import glob
import inspect
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

FACTS = {}
T0 = time.time()


def log(*a):
    print(*a, flush=True)


def section(title):
    log("\n" + "=" * 100)
    log(f"== {title}   (t={time.time() - T0:.1f}s)")
    log("=" * 100)


def guard(name):
    def deco(fn):
        def wrapped(*a, **k):
            try:
                return fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - a probe records every failure
                tb = traceback.format_exc()
                log(f"!! {name} FAILED: {type(e).__name__}: {e}\n{tb}")
                FACTS.setdefault("failures", {})[name] = f"{type(e).__name__}: {e}"[:4000]
                return None

        return wrapped

    return deco


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        items = [jsonable(v) for v in x]
        return sorted(items, key=str) if isinstance(x, set) else items
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def read_st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    return hdr


def dump_dir(d, label):
    """Print every file written and every safetensors header entry."""
    files = sorted(os.listdir(d))
    log(f"[{label}] files written: {files}")
    out = {"files": files, "tensors": {}, "metadata": {}}
    for fn in files:
        p = os.path.join(d, fn)
        if fn.endswith(".json"):
            with open(p) as f:
                txt = f.read()
            log(f"[{label}] ---- {fn} ----\n{txt}")
            try:
                out[fn] = json.loads(txt)
            except Exception:  # noqa: BLE001
                out[fn] = txt
        if fn.endswith(".safetensors"):
            hdr = read_st_header(p)
            meta = hdr.pop("__metadata__", None)
            out["metadata"][fn] = meta
            log(f"[{label}] {fn}: __metadata__ = {meta}; {len(hdr)} tensors")
            for k in sorted(hdr):
                v = hdr[k]
                log(f"    {k:90s} {v['dtype']:8s} {v['shape']}")
                out["tensors"][k] = [v["dtype"], v["shape"], fn]
    return out


# --------------------------------------------------------------------------------------------------
# 1. sources
# --------------------------------------------------------------------------------------------------


@guard("sources")
def probe_sources(outdir):
    section("1. installed sources")
    import torch
    import transformers

    root = os.path.dirname(transformers.__file__)
    FACTS["transformers_version"] = transformers.__version__
    FACTS["torch_version"] = torch.__version__
    FACTS["python"] = sys.version
    FACTS["transformers_root"] = root
    log("transformers", transformers.__version__, "at", root)
    log("torch", torch.__version__, "cuda", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    for pkg in ["kernels", "accelerate", "safetensors", "huggingface_hub", "triton", "mistral_common",
                "deep_gemm", "fbgemm_gpu"]:
        try:
            import importlib.metadata as md

            FACTS.setdefault("packages", {})[pkg] = md.version(pkg)
        except Exception:  # noqa: BLE001
            FACTS.setdefault("packages", {})[pkg] = None
    log("packages:", FACTS["packages"])

    m4 = os.path.join(root, "models", "mistral4")
    FACTS["mistral4_files"] = sorted(os.listdir(m4)) if os.path.isdir(m4) else None
    log("models/mistral4 files:", FACTS["mistral4_files"])

    wanted_dirs = ["models/mistral4", "models/mistral3", "models/pixtral", "integrations/finegrained",
                   "integrations/mistral", "quantizers"]
    wanted_files = ["models/deepseek_v3/modeling_deepseek_v3.py", "models/deepseek_v3/configuration_deepseek_v3.py",
                    "integrations/finegrained_fp8.py", "integrations/finegrained.py",
                    "integrations/finegrained_conversions.py", "integrations/fp8.py",
                    "integrations/moe.py", "integrations/moe_grouped_mm.py", "integrations/moe_routing.py",
                    "integrations/bmm_moe.py", "integrations/deepgemm.py", "integrations/hub_kernels.py",
                    "integrations/mla.py", "integrations/mistral.py", "integrations/__init__.py",
                    "integrations/sdpa_attention.py", "integrations/accelerate.py",
                    "core_model_loading.py", "conversion_mapping.py", "modeling_rope_utils.py",
                    "utils/quantization_config.py", "modeling_utils.py", "configuration_utils.py",
                    "cache_utils.py", "masking_utils.py", "activations.py", "modeling_flash_attention_utils.py",
                    "utils/generic.py", "utils/hub.py", "safetensors_conversion.py"]
    # anything outside models/ that mentions the experts implementation knob
    hits = []
    for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
        rel = os.path.relpath(p, root)
        try:
            with open(p, encoding="utf-8") as f:
                txt = f.read()
        except Exception:  # noqa: BLE001
            continue
        if "_experts_implementation" in txt or "experts_implementation" in txt:
            hits.append(rel)
            if not rel.startswith("models/"):
                wanted_files.append(rel)
    FACTS["files_mentioning_experts_implementation"] = sorted(hits)
    log(f"{len(hits)} files mention experts_implementation; outside models/:",
        sorted(h for h in hits if not h.startswith("models/")))

    members = []
    for d in wanted_dirs:
        for p in sorted(glob.glob(os.path.join(root, d, "**", "*.py"), recursive=True)):
            members.append(os.path.relpath(p, root))
    for f in wanted_files:
        if os.path.isfile(os.path.join(root, f)):
            members.append(f)
        else:
            log("  (absent)", f)
    members = sorted(set(members))
    tpath = os.path.join(outdir, "transformers_src.tar.gz")
    with tarfile.open(tpath, "w:gz") as tf:
        for rel in members:
            tf.add(os.path.join(root, rel), arcname=rel)
        info = tarfile.TarInfo("VERSION.txt")
        data = f"transformers {transformers.__version__}\ntorch {torch.__version__}\nroot {root}\n".encode()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    FACTS["tarball_members"] = members
    log(f"tarball: {len(members)} files, {os.path.getsize(tpath)} bytes")
    for m in members:
        log("   ", m)


# --------------------------------------------------------------------------------------------------
# 2. configs, models, save
# --------------------------------------------------------------------------------------------------

TEXT = dict(
    vocab_size=1536, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
    routed_scaling_factor=1.0, kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=32, v_head_dim=24,
    qk_nope_head_dim=16, n_group=1, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=0,
    norm_topk_prob=True, hidden_act="silu", max_position_embeddings=1024, rms_norm_eps=1e-6,
    pad_token_id=11, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rope_interleave=True,
    rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                     "original_max_position_embeddings": 64, "beta_fast": 4.0, "beta_slow": 1.0,
                     "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1},
)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
              patch_size=14, image_size=112, num_channels=3, hidden_act="silu",
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
OUTER = dict(image_token_index=10, projector_hidden_act="gelu", vision_feature_layer=-1,
             multimodal_projector_bias=False, spatial_merge_size=2, tie_word_embeddings=False)

STATE = {}


def make_text_config():
    from transformers import Mistral4Config
    import copy

    return Mistral4Config(**copy.deepcopy(TEXT))


def make_vlm_config():
    from transformers import Mistral3Config, PixtralVisionConfig
    import copy

    return Mistral3Config(text_config=make_text_config(), vision_config=PixtralVisionConfig(**copy.deepcopy(VISION)),
                          **OUTER)


def randomize(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / math.sqrt(p.shape[-1])))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def print_state_dict(model, label):
    sd = model.state_dict()
    log(f"[{label}] state_dict: {len(sd)} entries")
    out = {}
    for k, v in sd.items():
        log(f"    {k:90s} {str(v.dtype):16s} {list(v.shape)}")
        out[k] = [str(v.dtype), list(v.shape)]
    return out


def find_attn(model):
    for name, mod in model.named_modules():
        if name.endswith("layers.0.self_attn") and hasattr(mod, "scaling"):
            return name, mod
    raise RuntimeError("no layers.0.self_attn with .scaling")


def save(model, d):
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError as e:
        log("save_pretrained(safe_serialization=True) raised TypeError, retrying without:", e)
        model.save_pretrained(d)


@guard("build_and_save")
def probe_build_and_save(work):
    section("2. configs, models, save_pretrained")
    import torch
    from transformers import Mistral3ForConditionalGeneration, Mistral4ForCausalLM

    torch.manual_seed(0)
    vcfg = make_vlm_config()
    tcfg = make_text_config()
    log("Mistral3Config.to_json_string():\n" + vcfg.to_json_string())
    log("Mistral4Config.to_json_string():\n" + tcfg.to_json_string())
    FACTS["config_in_memory"] = {"mistral3": json.loads(vcfg.to_json_string()),
                                 "mistral4": json.loads(tcfg.to_json_string())}

    for label, cls, cfg, seed in [("mistral3", Mistral3ForConditionalGeneration, vcfg, 1),
                                  ("mistral4", Mistral4ForCausalLM, tcfg, 2)]:
        model = cls(cfg).to(torch.float32).eval()
        randomize(model, seed)
        log(f"[{label}] model.config.to_json_string() after construction:\n" + model.config.to_json_string())
        log(f"[{label}] experts implementation in config: "
            f"{getattr(model.config, '_experts_implementation', '<no attr>')}; "
            f"text: {getattr(getattr(model.config, 'text_config', model.config), '_experts_implementation', '<no attr>')}")
        log(f"[{label}] attn implementation: {getattr(model.config, '_attn_implementation', None)}")
        FACTS.setdefault("state_dict", {})[label] = print_state_dict(model, label)
        # module classes of interest
        for name, mod in model.named_modules():
            if re.search(r"layers\.0\.(mlp(\.experts|\.gate|\.shared_experts)?|self_attn)$", name) or \
                    name.endswith("rotary_emb"):
                log(f"[{label}] module {name}: {type(mod).__module__}.{type(mod).__name__}")
        d = os.path.join(work, f"{label}_fp32")
        save(model, d)
        FACTS.setdefault("saved", {})[label] = dump_dir(d, label)
        STATE[label] = {"model": model, "dir": d, "cls": cls}
        # the rotary embedding of this config, for the YaRN numbers
        for name, mod in model.named_modules():
            if name.endswith("rotary_emb") and hasattr(mod, "inv_freq"):
                inv = mod.inv_freq.detach().double().tolist()
                log(f"[{label}] {name}.inv_freq ({len(inv)}): {inv}")
                log(f"[{label}] {name}.attention_scaling = {getattr(mod, 'attention_scaling', None)}")
                FACTS.setdefault("rope", {})[f"{label}:{name}"] = {
                    "inv_freq": inv, "attention_scaling": jsonable(getattr(mod, "attention_scaling", None)),
                    "rope_type": jsonable(getattr(mod, "rope_type", None))}


# --------------------------------------------------------------------------------------------------
# 3. softmax scale
# --------------------------------------------------------------------------------------------------


@guard("scaling")
def probe_scaling():
    section("3. softmax scaling and yarn_apply_mscale")
    import transformers.models.mistral4.modeling_mistral4 as mm
    from transformers import Mistral3ForConditionalGeneration, Mistral4ForCausalLM

    res = {}
    for label in ["mistral3", "mistral4"]:
        if label in STATE:
            n, a = find_attn(STATE[label]["model"])
            res[f"{label}_scaling"] = float(a.scaling)
            log(f"{label}: {n}.scaling = {a.scaling!r}")
    plain = (TEXT["qk_nope_head_dim"] + TEXT["qk_rope_head_dim"]) ** -0.5
    ms = 0.1 * TEXT["rope_parameters"]["mscale_all_dim"] * math.log(TEXT["rope_parameters"]["factor"]) + 1.0
    res["plain"] = plain
    res["plain_times_mscale_sq"] = plain * ms * ms
    res["has_yarn_apply_mscale"] = hasattr(mm, "yarn_apply_mscale")
    log(f"plain 1/sqrt(qk_head_dim) = {plain!r}; plain*mscale^2 = {plain * ms * ms!r} (mscale {ms!r})")
    log("modeling_mistral4 public names:", [n for n in dir(mm) if not n.startswith("__")])
    for fname in ["yarn_get_mscale", "yarn_apply_mscale", "get_llama_4_attn_scale", "apply_rotary_pos_emb_interleave"]:
        if hasattr(mm, fname):
            try:
                log(f"---- source of {fname} ----\n" + inspect.getsource(getattr(mm, fname)))
            except Exception as e:  # noqa: BLE001
                log(f"no source for {fname}: {e}")
    if hasattr(mm, "yarn_apply_mscale"):
        sig = inspect.signature(mm.yarn_apply_mscale)
        res["yarn_apply_mscale_signature"] = str(sig)
        log("yarn_apply_mscale signature:", sig)
        orig = mm.yarn_apply_mscale

        def identity(*args, **kwargs):
            # return the scaling argument unchanged: the float among the arguments
            for v in list(args) + list(kwargs.values()):
                if isinstance(v, float):
                    return v
            raise RuntimeError(f"identity patch found no float in {args} {kwargs}")

        mm.yarn_apply_mscale = identity
        try:
            m4 = Mistral4ForCausalLM(make_text_config())
            m3 = Mistral3ForConditionalGeneration(make_vlm_config())
            res["patched_mistral4_scaling"] = float(find_attn(m4)[1].scaling)
            res["patched_mistral3_scaling"] = float(find_attn(m3)[1].scaling)
            log("after patching yarn_apply_mscale to identity:", res["patched_mistral4_scaling"],
                res["patched_mistral3_scaling"])
            res["patch_gives_plain"] = abs(res["patched_mistral4_scaling"] - plain) < 1e-12
        finally:
            mm.yarn_apply_mscale = orig
    # how the attention computes the scale (source of __init__)
    for cname in ["Mistral4Attention"]:
        if hasattr(mm, cname):
            src = inspect.getsource(getattr(mm, cname))
            log(f"---- source of {cname} ----\n{src}")
    FACTS["scaling"] = res


# --------------------------------------------------------------------------------------------------
# 4. round trips, per-expert form, experts implementation
# --------------------------------------------------------------------------------------------------

LEGACY_RULES = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector.")]


def to_legacy(k):
    for a, b in LEGACY_RULES:
        if k.startswith(a):
            return b + k[len(a):]
    return k


def loading_info_str(info):
    if info is None:
        return "None"
    return json.dumps(jsonable(info), indent=1)[:6000]


def compare_to(model, ref_sd, label):
    import torch

    sd = model.state_dict()
    worst = 0.0
    missing = []
    for k, v in ref_sd.items():
        if k not in sd:
            missing.append(k)
            continue
        w = sd[k]
        if w.shape != v.shape:
            log(f"   [{label}] shape differs {k}: {list(w.shape)} vs {list(v.shape)}")
            worst = float("inf")
            continue
        d = (w.detach().float().cpu() - v.detach().float().cpu()).abs().max().item() if v.numel() else 0.0
        worst = max(worst, d)
    log(f"   [{label}] max |loaded - original| over {len(ref_sd)} tensors = {worst}; not in loaded: {missing[:10]}")
    return worst


def write_st(path, tensors):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})


def copy_jsons(src, dst):
    os.makedirs(dst, exist_ok=True)
    for fn in os.listdir(src):
        if fn.endswith(".json") and "index" not in fn:
            shutil.copy(os.path.join(src, fn), os.path.join(dst, fn))


def load(cls, d, **kw):
    import torch

    kw.setdefault("dtype", torch.float32)
    kw.setdefault("attn_implementation", "eager")
    return cls.from_pretrained(d, output_loading_info=True, **kw)


@guard("roundtrip")
def probe_roundtrip(work):
    section("4a. round trip of save_pretrained output")
    import torch

    for label in ["mistral3", "mistral4"]:
        st = STATE.get(label)
        if not st:
            continue
        m, info = load(st["cls"], st["dir"])
        log(f"[{label}] loading info: {loading_info_str(info)}")
        diff = compare_to(m, st["model"].state_dict(), label)
        FACTS.setdefault("roundtrip", {})[label] = {"info": jsonable(info), "max_diff": diff}
        log(f"[{label}] loaded config._experts_implementation = "
            f"{getattr(m.config, '_experts_implementation', '<no attr>')}")


def expert_variants(label, sd_disk):
    """Return dict variant_name -> tensors for the per-expert layouts."""
    out = {}
    per = {}
    for k, v in sd_disk.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            base = k[: -len("gate_up_proj")]
            I = v.shape[1] // 2
            for e in range(v.shape[0]):
                per[f"{base}{e}.gate_proj.weight"] = v[e, :I].clone()
                per[f"{base}{e}.up_proj.weight"] = v[e, I:].clone()
        elif k.endswith("mlp.experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                per[f"{base}{e}.down_proj.weight"] = v[e].clone()
        else:
            per[k] = v
    out["per_expert_gate_up_down"] = per
    # mixtral-like w1/w2/w3 naming
    w = {}
    for k, v in per.items():
        k2 = re.sub(r"(mlp\.experts\.\d+\.)gate_proj\.", r"\1w1.", k)
        k2 = re.sub(r"(mlp\.experts\.\d+\.)up_proj\.", r"\1w3.", k2)
        k2 = re.sub(r"(mlp\.experts\.\d+\.)down_proj\.", r"\1w2.", k2)
        w[k2] = v
    out["per_expert_w1_w2_w3"] = w
    return out


@guard("layouts")
def probe_layouts(work):
    section("4b. alternative on-disk layouts: in-memory names, legacy names, per-expert experts")
    import torch
    from safetensors.torch import load_file

    for label in ["mistral3", "mistral4"]:
        st = STATE.get(label)
        if not st:
            continue
        ref = st["model"].state_dict()
        disk = {}
        for fn in os.listdir(st["dir"]):
            if fn.endswith(".safetensors"):
                disk.update(load_file(os.path.join(st["dir"], fn)))
        variants = {}
        variants["in_memory_names"] = {k: v.clone() for k, v in ref.items()}
        if label == "mistral3":
            variants["legacy_names"] = {to_legacy(k): v.clone() for k, v in ref.items()}
        variants.update(expert_variants(label, disk))
        if label == "mistral3":
            leg = {to_legacy(k): v.clone() for k, v in ref.items()}
            for n, t in expert_variants(label, leg).items():
                variants["legacy+" + n] = t
            mem = {k: v.clone() for k, v in ref.items()}
            for n, t in expert_variants(label, mem).items():
                variants["in_memory+" + n] = t
        for vname, tensors in variants.items():
            d = os.path.join(work, f"{label}_{vname}")
            copy_jsons(st["dir"], d)
            write_st(os.path.join(d, "model.safetensors"), tensors)
            try:
                m, info = load(st["cls"], d)
                diff = compare_to(m, ref, f"{label}/{vname}")
                log(f"[{label}/{vname}] loading info: {loading_info_str(info)}")
                FACTS.setdefault("layouts", {})[f"{label}/{vname}"] = {
                    "ok": True, "max_diff": diff,
                    "missing": len(info.get("missing_keys", [])) if isinstance(info, dict) else None,
                    "unexpected": len(info.get("unexpected_keys", [])) if isinstance(info, dict) else None,
                    "info": jsonable(info) if isinstance(info, dict) else repr(info)}
            except Exception as e:  # noqa: BLE001
                log(f"[{label}/{vname}] load FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}")
                FACTS.setdefault("layouts", {})[f"{label}/{vname}"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:3000]}


@guard("conversion_mapping")
def probe_conversion_mapping():
    section("4c. conversion mapping registered for mistral3 / mistral4 / deepseek_v3")
    import transformers.conversion_mapping as cm

    log("conversion_mapping names:", [n for n in dir(cm) if not n.startswith("__")])
    for fname in ["get_checkpoint_conversion_mapping", "get_model_conversion_mapping"]:
        if hasattr(cm, fname):
            log(f"{fname} signature: {inspect.signature(getattr(cm, fname))}")
    if hasattr(cm, "get_checkpoint_conversion_mapping"):
        for mt in ["mistral3", "mistral4", "deepseek_v3", "mixtral", "qwen2_moe", "llava"]:
            try:
                r = cm.get_checkpoint_conversion_mapping(mt)
                log(f"get_checkpoint_conversion_mapping({mt!r}) =")
                for x in (r or []):
                    log("    ", repr(x)[:600])
                FACTS.setdefault("conversion_mapping", {})[mt] = [repr(x)[:600] for x in (r or [])]
            except Exception as e:  # noqa: BLE001
                log(f"  {mt}: {type(e).__name__}: {e}")
    for label in ["mistral3", "mistral4"]:
        st = STATE.get(label)
        if st and hasattr(cm, "get_model_conversion_mapping"):
            try:
                r = cm.get_model_conversion_mapping(st["model"])
                log(f"get_model_conversion_mapping({label} model) =")
                for x in (r or []):
                    log("    ", repr(x)[:600])
                FACTS.setdefault("model_conversion_mapping", {})[label] = [repr(x)[:600] for x in (r or [])]
            except Exception as e:  # noqa: BLE001
                log(f"  get_model_conversion_mapping({label}): {type(e).__name__}: {e}")


@guard("experts_impl")
def probe_experts_impl(work):
    section("4d. experts implementation knob")
    import torch
    import transformers
    from transformers import PreTrainedModel

    root = os.path.dirname(transformers.__file__)
    # grep the knob outside models/
    lines = []
    for rel in FACTS.get("files_mentioning_experts_implementation", []):
        if rel.startswith("models/") and "mistral4" not in rel and "deepseek_v3" not in rel:
            continue
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            for i, ln in enumerate(f, 1):
                if "experts_implementation" in ln or "ALL_EXPERTS" in ln or "_EXPERTS_" in ln:
                    lines.append(f"{rel}:{i}: {ln.rstrip()}")
    log("grep experts_implementation (non-model files + mistral4/deepseek_v3):")
    for ln in lines[:250]:
        log("   ", ln[:220])
    try:
        import transformers.integrations.moe as moe

        for n in dir(moe):
            v = getattr(moe, n)
            if n.isupper() or "EXPERT" in n.upper():
                try:
                    keys = list(v.keys()) if hasattr(v, "keys") else None
                except Exception:  # noqa: BLE001
                    keys = None
                log(f"  moe.{n}: {type(v).__name__} keys={keys}")
                if keys is not None:
                    FACTS.setdefault("experts_registries", {})[n] = [str(k) for k in keys]
        if hasattr(moe, "use_experts_implementation"):
            log("---- moe.use_experts_implementation source ----\n" + inspect.getsource(moe.use_experts_implementation)[:6000])
    except Exception as e:  # noqa: BLE001
        log("integrations.moe import:", type(e).__name__, e)
    fp_sig = inspect.signature(PreTrainedModel.from_pretrained)
    log("from_pretrained signature:", fp_sig)
    for n in dir(PreTrainedModel):
        if "expert" in n.lower():
            log("  PreTrainedModel attr:", n)
            FACTS.setdefault("pretrainedmodel_expert_attrs", []).append(n)

    st = STATE.get("mistral4")
    if not st:
        return
    ids = torch.tensor([[1, 5, 77, 300, 1200, 9, 44, 1000, 3, 17, 600, 1500]])
    pos = torch.arange(ids.shape[1])[None]
    results = {}
    ref_logits = None
    candidates = ["eager", "grouped_mm", "batched_mm", "deepgemm", "sonicmoe", None]
    for impl in candidates:
        key = str(impl)
        try:
            kw = {} if impl is None else {"experts_implementation": impl}
            m, info = load(st["cls"], st["dir"], **kw)
            got = getattr(m.config, "_experts_implementation", "<no attr>")
            with torch.no_grad():
                lg = m(input_ids=ids, position_ids=pos).logits[0].float()
            if impl == "eager":
                ref_logits = lg
            d = (lg - ref_logits).abs().max().item() if ref_logits is not None else None
            results[key] = {"ok": True, "config_value": got, "max_diff_vs_eager": d}
            log(f"experts_implementation={impl!r}: config._experts_implementation={got!r}; "
                f"CPU forward ok; max|logits - eager| = {d}")
        except Exception as e:  # noqa: BLE001
            results[key] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1500]}
            log(f"experts_implementation={impl!r}: FAILED {type(e).__name__}: {e}")
    # also: config attribute / setter on an existing model
    try:
        m, _ = load(st["cls"], st["dir"])
        if hasattr(m, "set_experts_implementation"):
            log("set_experts_implementation signature:", inspect.signature(m.set_experts_implementation))
            m.set_experts_implementation("eager")
            log("after set_experts_implementation('eager'):", m.config._experts_implementation)
            results["set_experts_implementation"] = "exists"
        else:
            results["set_experts_implementation"] = "absent"
        # the ground-truth eager forward vs the model we built (not loaded)
        m0 = st["model"]
        with torch.no_grad():
            lg0 = m0(input_ids=ids, position_ids=pos).logits[0].float()
        if ref_logits is not None:
            log("constructed model (default impl) vs loaded eager: max diff", (lg0 - ref_logits).abs().max().item())
    except Exception as e:  # noqa: BLE001
        log("set_experts_implementation probe:", type(e).__name__, e)
    FACTS["experts_impl"] = results


# --------------------------------------------------------------------------------------------------
# 5. FP8
# --------------------------------------------------------------------------------------------------

NOT_CONVERT = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
RELEASE_QC = {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": None,
              "modules_to_not_convert": NOT_CONVERT}


@guard("fp8_discover")
def probe_fp8_discover(work):
    section("5a. FP8: what layout transformers expects (quantizer applied to a meta model)")
    import torch
    import transformers
    from transformers import FineGrainedFP8Config, Mistral3ForConditionalGeneration

    log("FineGrainedFP8Config signature:", inspect.signature(FineGrainedFP8Config.__init__))
    try:
        log("---- FineGrainedFP8Config source ----\n" + inspect.getsource(FineGrainedFP8Config)[:8000])
    except Exception:  # noqa: BLE001
        pass
    qc = None
    for kwargs in [dict(activation_scheme="static", weight_block_size=None, modules_to_not_convert=NOT_CONVERT),
                   dict(activation_scheme="static", modules_to_not_convert=NOT_CONVERT)]:
        try:
            qc = FineGrainedFP8Config(**kwargs)
            log("FineGrainedFP8Config(", kwargs, ") ->", qc.to_dict())
            break
        except Exception as e:  # noqa: BLE001
            log("FineGrainedFP8Config(", kwargs, ") raised", type(e).__name__, e)
    try:
        qc2 = FineGrainedFP8Config.from_dict(dict(RELEASE_QC))
        log("FineGrainedFP8Config.from_dict(release) ->", qc2.to_dict())
        qc = qc2
        FACTS["fp8_config_from_release_dict"] = jsonable(qc2.to_dict())
    except Exception as e:  # noqa: BLE001
        log("from_dict(release) raised", type(e).__name__, e)
    try:
        qd = FineGrainedFP8Config(dequantize=True)
        log("FineGrainedFP8Config(dequantize=True) ->", qd.to_dict(),
            "loading attributes:", getattr(qd, "get_loading_attributes", lambda: None)())
    except Exception as e:  # noqa: BLE001
        log("FineGrainedFP8Config(dequantize=True) raised", type(e).__name__, e)

    from transformers.quantizers.auto import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(qc, pre_quantized=True)
    log("quantizer:", type(quantizer).__module__, type(quantizer).__name__)
    for n in ["preprocess_model", "_process_model_before_weight_loading", "get_weight_conversions",
              "get_quantize_ops", "update_weight_conversions", "param_needs_quantization"]:
        if hasattr(quantizer, n):
            try:
                log(f"  quantizer.{n}{inspect.signature(getattr(quantizer, n))}")
            except Exception:  # noqa: BLE001
                log(f"  quantizer.{n}")
    with torch.device("meta"):
        m = Mistral3ForConditionalGeneration(make_vlm_config())
    done = False
    errs = []
    for call in [lambda: quantizer.preprocess_model(m, dtype=torch.bfloat16),
                 lambda: quantizer.preprocess_model(m),
                 lambda: quantizer._process_model_before_weight_loading(m)]:
        try:
            call()
            done = True
            break
        except Exception as e:  # noqa: BLE001
            errs.append(f"{type(e).__name__}: {e}")
    if not done:
        log("quantizer preprocessing failed:", errs)
        # fall back to the replacement function itself
        import importlib

        for modname in ["transformers.integrations.finegrained_fp8", "transformers.integrations.finegrained",
                        "transformers.integrations.finegrained.core"]:
            try:
                mod = importlib.import_module(modname)
            except Exception:  # noqa: BLE001
                continue
            for fn in ["replace_with_fp8_linear", "replace_with_fp8_modules"]:
                if hasattr(mod, fn):
                    f = getattr(mod, fn)
                    log(f"trying {modname}.{fn}{inspect.signature(f)}")
                    try:
                        f(m, modules_to_not_convert=NOT_CONVERT, quantization_config=qc)
                        done = True
                    except Exception as e:  # noqa: BLE001
                        log("   failed:", type(e).__name__, e)
                if done:
                    break
            if done:
                break
    expected = {}
    for k, v in m.state_dict().items():
        expected[k] = [str(v.dtype), list(v.shape)]
    log("FP8-converted meta model state_dict (expected in-memory layout):")
    for k, (dt, sh) in expected.items():
        if ".layers.1." in k:
            continue
        log(f"    {k:90s} {dt:22s} {sh}")
    for name, mod in m.named_modules():
        if re.search(r"language_model\.layers\.0\.(self_attn\.q_a_proj|mlp\.experts|mlp\.shared_experts\.gate_proj)$", name):
            log(f"  module {name}: {type(mod).__module__}.{type(mod).__name__}")
            try:
                log(inspect.getsource(type(mod))[:7000])
            except Exception:  # noqa: BLE001
                pass
    FACTS["fp8_expected_in_memory"] = {k: v for k, v in expected.items() if ".layers.1." not in k}
    STATE["fp8_expected"] = expected


def fp8_quant(w, amax=None):
    import torch

    w = w.float()
    s = (w.abs().max() if amax is None else amax) / 448.0
    q = (w / s).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q, s.to(torch.float32)


def build_fp8_tensors(ref_sd, expected, scheme):
    """Quantize ref_sd the way the release is quantized (per-tensor, per-expert scales).

    scheme 'release': linears get 0-d `weight_scale_inv` / `activation_scale`; stacked experts get
    `<p>_scale_inv` [E,1,1] and `<p>_activation_scale` [E] (what the converter writes).
    scheme 'expected': every extra entry of the quantizer's meta model, with exactly its name, shape, dtype.
    Returns (tensors, fp8 weight names, dequantized fp32 reference per fp8 weight)."""
    import torch

    fp8_weights = {k for k, (dt, sh) in expected.items() if "float8" in dt}
    if not fp8_weights:  # discovery failed: use the names the spec expects
        for k in ref_sd:
            if (".language_model." in k or k.startswith("model.layers")) and (
                    re.search(r"self_attn\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)\.weight$", k)
                    or re.search(r"shared_experts\.(gate|up|down)_proj\.weight$", k)
                    or re.search(r"mlp\.experts\.(gate_up_proj|down_proj)$", k)):
                fp8_weights.add(k)
    out, deq, wscale, ascale = {}, {}, {}, {}
    for k, v in ref_sd.items():
        if k not in fp8_weights:
            out[k] = v.detach().to(torch.bfloat16).clone()
            continue
        if v.ndim == 3:  # stacked experts [E, out, in]
            E = v.shape[0]
            qs, ss = zip(*[fp8_quant(v[e]) for e in range(E)])
            q = torch.stack(qs)
            s = torch.stack(ss)
            a = 0.05 * (1 + 0.1 * torch.arange(E, dtype=torch.float32))
            deq[k] = q.float() * s.reshape(E, 1, 1)
        else:
            q, s = fp8_quant(v)
            a = torch.tensor(0.05, dtype=torch.float32)
            deq[k] = q.float() * s
        out[k] = q
        wscale[k] = s
        ascale[k] = a
    if scheme == "release":
        for k in fp8_weights:
            if ref_sd[k].ndim == 3:
                E = ref_sd[k].shape[0]
                out[k + "_scale_inv"] = wscale[k].reshape(E, 1, 1).clone()
                out[k + "_activation_scale"] = ascale[k].reshape(E).clone()
            else:
                base = k[: -len(".weight")]
                out[base + ".weight_scale_inv"] = wscale[k].reshape([]).clone()
                out[base + ".activation_scale"] = ascale[k].reshape([]).clone()
    else:
        for k, (dt, sh) in expected.items():
            if k in ref_sd:
                continue
            owners = [f for f in fp8_weights
                      if k.startswith(f) or (f.endswith(".weight") and k.startswith(f[: -len("weight")]))]
            if not owners:
                log(f"   note: expected entry with no fp8 owner, not written: {k} {dt} {sh}")
                continue
            f = max(owners, key=len)
            suffix = k[len(f[: -len("weight")]):] if f.endswith(".weight") else k[len(f):]
            src = ascale[f] if re.search(r"act|input", suffix) else wscale[f]
            n = 1
            for x in sh:
                n *= x
            if src.numel() == n:
                val = src.reshape(sh).clone()
            elif src.ndim == 1:
                val = src.reshape([src.shape[0]] + [1] * (len(sh) - 1)).expand(sh).clone()
            else:
                val = src.reshape([1] * len(sh)).expand(sh).clone()
            tdt = getattr(torch, dt.replace("torch.", ""), torch.float32)
            out[k] = val.to(tdt) if tdt.is_floating_point else val
            log(f"   expected entry {k} <- {'activation' if src is ascale[f] else 'weight'} scale of {f} "
                f"as {dt} {sh}")
    return out, fp8_weights, deq


@guard("fp8_write")
def probe_fp8_write(work):
    section("5b. FP8: write release-style checkpoints")
    import torch

    st = STATE.get("mistral3")
    expected = STATE.get("fp8_expected", {})
    ref_sd = st["model"].state_dict()
    saved_keys = set(FACTS["saved"]["mistral3"]["tensors"].keys())
    legacy = saved_keys == {to_legacy(k) for k in ref_sd}
    ident = saved_keys == set(ref_sd)
    log(f"saved bf16 names are legacy form: {legacy}; in-memory form: {ident}")
    FACTS["saved_names_form"] = "legacy" if legacy else ("in_memory" if ident else "other")
    namer = to_legacy if legacy else (lambda k: k)
    schemes = ["release"]
    # does the discovered layout differ from the release-style one?
    if expected:
        schemes.append("expected")
    STATE["fp8_dirs"] = {}
    for scheme in schemes:
        tensors, fp8_names, deq = build_fp8_tensors(ref_sd, expected, scheme)
        disk = {namer(k): v for k, v in tensors.items()}
        d = os.path.join(work, f"mistral3_fp8_{scheme}")
        copy_jsons(st["dir"], d)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        cfg["quantization_config"] = dict(RELEASE_QC)
        cfg["dtype"] = "bfloat16"
        if "text_config" in cfg:
            cfg["text_config"]["dtype"] = "bfloat16"
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        write_st(os.path.join(d, "model.safetensors"), disk)
        log(f"[fp8/{scheme}] wrote {len(disk)} tensors; layer-0 and non-layer entries:")
        for k in sorted(disk):
            if ".layers.1." in k:
                continue
            log(f"    {k:90s} {str(disk[k].dtype):22s} {list(disk[k].shape)}")
        FACTS.setdefault("fp8_written", {})[scheme] = {k: [str(v.dtype), list(v.shape)] for k, v in disk.items()
                                                      if ".layers.1." not in k}
        STATE["fp8_dirs"][scheme] = d
        # the exact fp8·scale values, to compare after dequantized loading
        torch.save({"deq": deq, "fp8": {k: tensors[k] for k in fp8_names}}, os.path.join(d, "reference_tensors.pt"))
    FACTS["fp8_dirs"] = STATE["fp8_dirs"]


FP8_CHILD = r'''
import json, os, sys, time, traceback, re, inspect
import torch
from transformers import Mistral3ForConditionalGeneration, FineGrainedFP8Config
d, device, mode, impl = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
res = {"dir": os.path.basename(d), "device": device, "mode": mode, "impl": impl}
def log(*a): print(f"[child {os.path.basename(d)} {device} {mode} {impl}]", *a, flush=True)
try:
    kw = dict(dtype=torch.bfloat16 if mode == "native" else torch.float32, attn_implementation="eager",
              output_loading_info=True)
    if device == "cuda":
        kw["device_map"] = "cuda"
    if mode == "dequant":
        kw["quantization_config"] = FineGrainedFP8Config(dequantize=True)
    if impl != "default":
        kw["experts_implementation"] = impl
    t = time.time()
    m, info = Mistral3ForConditionalGeneration.from_pretrained(d, **kw)
    res["load_s"] = time.time() - t
    res["info"] = {k: sorted(map(str, v)) if isinstance(v, (set, list)) else repr(v) for k, v in info.items()}
    log("loaded; info:", json.dumps(res["info"])[:3000])
    log("config._experts_implementation:", getattr(m.config, "_experts_implementation", None),
        "text:", getattr(m.config.text_config, "_experts_implementation", None))
    log("quantization_config on model:", getattr(m.config, "quantization_config", None))
    sd = m.state_dict()
    res["state_dict"] = {k: [str(v.dtype), list(v.shape)] for k, v in sd.items() if ".layers.1." not in k}
    for k, v in sd.items():
        if ".layers.1." in k: continue
        log(f"   {k:90s} {str(v.dtype):22s} {list(v.shape)}")
    for name, mod in m.named_modules():
        if re.search(r"language_model\.layers\.0\.(self_attn\.q_a_proj|mlp\.experts|mlp\.shared_experts\.gate_proj|mlp\.gate)$", name):
            log(f"   module {name}: {type(mod).__module__}.{type(mod).__name__}")
    ref = torch.load(os.path.join(d, "reference_tensors.pt"))
    # dequantized value check
    exact = {}
    for k, v in sd.items():
        if k not in ref["deq"]:
            continue
        if v.dtype == torch.float8_e4m3fn:
            exact[k] = "still fp8; bytes equal: %s" % bool((v.cpu().view(torch.uint8) == ref["fp8"][k].view(torch.uint8)).all())
            continue
        deq32 = ref["deq"][k]
        vv = v.float().cpu()
        if vv.shape != deq32.shape:
            exact[k] = f"shape {list(vv.shape)} vs {list(deq32.shape)}"
            continue
        exact[k] = {"loaded_dtype": str(v.dtype), "max_abs_diff_vs_fp8_times_scale_fp32": (vv - deq32).abs().max().item(),
                    "equal_fp32": bool((vv == deq32).all()),
                    "equal_after_bf16_round": bool((vv == deq32.to(torch.bfloat16).float()).all())}
    res["dequant_check"] = exact
    for k in list(exact)[:12]:
        log("   dequant check", k, exact[k])
    ids = torch.tensor([[1, 5, 77, 300, 1200, 9, 44, 1000, 3, 17, 600, 1500]], device=m.device)
    pos = torch.arange(ids.shape[1], device=m.device)[None]
    try:
        with torch.no_grad():
            lg = m(input_ids=ids, position_ids=pos).logits[0].float().cpu()
        res["forward"] = "ok"
        res["logits_absmean"] = lg.abs().mean().item()
        res["logits_finite"] = bool(torch.isfinite(lg).all())
        torch.save(lg, os.path.join(os.environ.get("FP8_OUT", "/tmp"), f"logits_{os.path.basename(d)}_{device}_{mode}_{impl}.pt"))
        log("forward ok; logits absmean", res["logits_absmean"], "finite", res["logits_finite"])
    except Exception as e:
        res["forward"] = f"{type(e).__name__}: {e}"[:3000]
        log("forward FAILED:", type(e).__name__, e)
        traceback.print_exc()
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}"[:4000]
    log("load FAILED:", type(e).__name__, e)
    traceback.print_exc()
print("RESULT_JSON " + json.dumps(res), flush=True)
'''


@guard("fp8_load")
def probe_fp8_load(work, outdir):
    section("5c. FP8: loading (child processes with a timeout)")
    import torch

    child = os.path.join(work, "fp8_child.py")
    with open(child, "w") as f:
        f.write(FP8_CHILD)
    logits_dir = os.path.join(work, "fp8_logits")
    os.makedirs(logits_dir, exist_ok=True)
    cuda = torch.cuda.is_available()
    runs = []
    dirs = STATE.get("fp8_dirs", {})
    order = ["release"] + [s for s in dirs if s != "release"]
    for scheme in order:
        if scheme not in dirs:
            continue
        d = dirs[scheme]
        runs.append((d, "cpu", "dequant", "default", {}))
        if cuda:
            runs.append((d, "cuda", "dequant", "default", {}))
            runs.append((d, "cuda", "native", "eager", {}))
        if scheme == "release" and cuda:
            runs.append((d, "cuda", "native", "default", {}))
    if "release" in dirs:
        runs.append((dirs["release"], "cpu", "native", "eager", {}))
        if cuda:
            runs.append((dirs["release"], "cuda", "native", "eager", {"HF_HUB_OFFLINE": "1"}))
    results = []
    for d, dev, mode, impl, extra_env in runs:
        if time.time() - T0 > 200:
            log(f"skipping child {os.path.basename(d)} {dev} {mode} {impl}: over the time budget")
            results.append({"dir": os.path.basename(d), "device": dev, "mode": mode, "impl": impl,
                            "error": "skipped: time budget"})
            continue
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(extra_env)
        env["FP8_OUT"] = logits_dir
        env["PYTHONUNBUFFERED"] = "1"
        tag = f"{os.path.basename(d)} {dev} {mode} {impl} {extra_env}"
        log(f"--- child: {tag}")
        t = time.time()
        try:
            p = subprocess.run([sys.executable, child, d, dev, mode, impl], capture_output=True, text=True,
                               timeout=75, env=env)
            txt = p.stdout + p.stderr
            res = None
            for ln in txt.splitlines():
                if ln.startswith("RESULT_JSON "):
                    res = json.loads(ln[len("RESULT_JSON "):])
            # log without the result line (it is in facts.json)
            log("\n".join(ln for ln in txt.splitlines() if not ln.startswith("RESULT_JSON "))[-20000:])
            if res is None:
                res = {"error": f"child rc={p.returncode}, no result"}
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"")
            out = out.decode() if isinstance(out, bytes) else out
            log(f"child TIMED OUT after 75 s; output so far:\n{out[-6000:]}")
            res = {"error": "timeout 75 s"}
        res["env"] = extra_env
        res["wall_s"] = time.time() - t
        log(f"--- child result {tag}: error={res.get('error')} forward={res.get('forward')} ({res['wall_s']:.1f}s)")
        results.append(res)
    FACTS["fp8_load"] = results
    # compare dequantized logits cpu vs original fp32 model
    try:
        st = STATE["mistral3"]
        ids = torch.tensor([[1, 5, 77, 300, 1200, 9, 44, 1000, 3, 17, 600, 1500]])
        with torch.no_grad():
            lg0 = st["model"](input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits[0].float()
        for fn in sorted(os.listdir(logits_dir)):
            lg = torch.load(os.path.join(logits_dir, fn))
            log(f"logits {fn}: max|fp8 - fp32 original| = {(lg - lg0).abs().max().item():.4g}; "
                f"absmean {lg.abs().mean().item():.4g} vs {lg0.abs().mean().item():.4g}")
        names = sorted(os.listdir(logits_dir))
        if len(names) > 1:
            a = torch.load(os.path.join(logits_dir, names[0]))
            for n in names[1:]:
                b = torch.load(os.path.join(logits_dir, n))
                log(f"   {names[0]} vs {n}: max diff {(a - b).abs().max().item():.4g}")
    except Exception as e:  # noqa: BLE001
        log("logit comparison:", type(e).__name__, e)


# --------------------------------------------------------------------------------------------------


def summary():
    section("6. SUMMARY")
    s = {}
    s["versions"] = {k: FACTS.get(k) for k in ["transformers_version", "torch_version"]}
    s["packages"] = FACTS.get("packages")
    s["mistral4_files"] = FACTS.get("mistral4_files")
    s["saved_files"] = {k: v.get("files") for k, v in FACTS.get("saved", {}).items()}
    s["saved_names_form"] = FACTS.get("saved_names_form")
    s["scaling"] = FACTS.get("scaling")
    s["roundtrip"] = {k: {"max_diff": v.get("max_diff"),
                          "missing": (v.get("info") or {}).get("missing_keys"),
                          "unexpected": (v.get("info") or {}).get("unexpected_keys")}
                      for k, v in FACTS.get("roundtrip", {}).items()}
    s["layouts"] = {k: {kk: vv for kk, vv in v.items() if kk != "info"} for k, v in FACTS.get("layouts", {}).items()}
    s["experts_impl"] = FACTS.get("experts_impl")
    s["experts_registries"] = FACTS.get("experts_registries")
    s["fp8_load"] = [{k: v for k, v in r.items() if k not in ("state_dict", "dequant_check", "info")} |
                     {"dequant_equal_fp32": sorted({str(x.get("equal_fp32")) if isinstance(x, dict) else x
                                                    for x in (r.get("dequant_check") or {}).values()}),
                      "missing": (r.get("info") or {}).get("missing_keys"),
                      "unexpected": (r.get("info") or {}).get("unexpected_keys"),
                      "mismatched": (r.get("info") or {}).get("mismatched_keys")}
                     for r in FACTS.get("fp8_load", [])]
    s["failures"] = FACTS.get("failures")
    log(json.dumps(jsonable(s), indent=1))


def main():
    # the host has no network: never let a hub look-up hang the main process (FP8 children opt out, below)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "15")
    outdir = sys.argv[1] if len(sys.argv) > 1 else "probe_out"
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="quatre_probe_")
    log("work dir", work)
    probe_sources(outdir)
    probe_build_and_save(work)
    probe_scaling()
    probe_roundtrip(work)
    probe_conversion_mapping()
    probe_layouts(work)
    probe_experts_impl(work)
    probe_fp8_discover(work)
    probe_fp8_write(work)
    probe_fp8_load(work, outdir)
    summary()
    with open(os.path.join(outdir, "facts.json"), "w") as f:
        json.dump(jsonable(FACTS), f, indent=1)
    # the tiny checkpoints (config + safetensors), small enough to bring back
    try:
        with tarfile.open(os.path.join(outdir, "ckpts.tar.gz"), "w:gz") as tf:
            for d in sorted(os.listdir(work)):
                p = os.path.join(work, d)
                if os.path.isdir(p) and (d.endswith("_fp32") or d.startswith("mistral3_fp8_")):
                    for fn in sorted(os.listdir(p)):
                        tf.add(os.path.join(p, fn), arcname=f"{d}/{fn}")
        log("ckpts.tar.gz", os.path.getsize(os.path.join(outdir, "ckpts.tar.gz")), "bytes")
    except Exception as e:  # noqa: BLE001
        log("ckpts tar:", e)
    log(f"done in {time.time() - T0:.1f}s")


if __name__ == "__main__":
    main()
