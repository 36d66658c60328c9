#!/usr/bin/env python3
"""Vision goldens for quatre (issue #5): PIL resampling, upstream preprocessing, the Pixtral tower, the projector
and the logits of a prompt with images, from Pillow and transformers 5.17 on the reference host (CPU is enough).

  python3 tools/reference/goldens_vision.py --ckpt .gpu/ckpt/tiny-hf-bf16-s1 --out OUT_DIR

Writes OUT_DIR/tests/data/golden/vision/<case>.safetensors, a summary on stdout, and OUT_DIR/vision_goldens.tar
(extract at the repository root).

Images are synthetic and deterministic: `synthetic_image` below (also written in tests/vision/synthetic_image.h);
metadata `pixel_sum` lets the test check it generates the same pixels.

Target size: quatre follows mistral_common (the release): r = max(h, w) / max_side; if r > 1 the sides become
round_half_even(side / r); then each rounds up to a multiple of patch * merge (28). transformers' Pixtral processors
picked the same sizes on every case here (metadata `<processor>_size`); their pixel values differ from Pillow's
resize by at most one 8-bit level (`<processor>_max_abs_diff` ~0.015 after normalisation), so the model cases are fed
the Pillow-resized values, which quatre reproduces bit for bit.

Alpha: transformers 5.17's convert_to_rgb is image.convert("RGB") (alpha dropped; checked on the host, metadata
`convert_to_rgb`), mistral_common composites onto white; both are stored for the RGBA image.

Per case (all F32 unless noted):
  pil_resized   U8 [h', w', 3]  Pillow Image.resize((w', h'), BICUBIC) of the RGB image (after alpha compositing)
  composited    U8 [h, w, 3]    (alpha cases) transformers' convert_to_rgb (5.17 drops alpha: metadata convert_to_rgb);
                                the model cases are fed this
  composited_white U8 [h, w, 3] (alpha cases) Pillow's alpha_composite onto opaque white, then RGB (mistral_common's rule)
  pixel_values  [3, h', w']     (pil_resized / 255 - mean) / std, computed in float32 as transformers' slow path
Model cases additionally (checkpoint tiny-hf-bf16-s1, softmax scale as transformers 5.17 computes it, "hf"):
  input_ids     I64 [T]         BOS, text ids, the image token layout(s) (MODEL.md §7.2), text ids
  image_sizes   I64 [n, 2]
  vision_hidden [Np, Hv]        vision_tower last_hidden_state (all images' patches, in order)
  image_features [Nt, H]        multi_modal_projector output (what is spliced at the [IMG] rows)
  logit_rows    I64 [N], logits [N, V]
"""
import argparse
import io
import json
import os
import sys
import tarfile
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

GOLDEN_SUBDIR = "tests/data/golden/vision"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
IMG, IMG_BREAK, IMG_END = 10, 12, 13
M32 = 0xFFFFFFFF

# name: (height, width, channels, seed); channels 4 = RGBA
IMAGES = {
    "a50x70": (50, 70, 3, 1),
    "tiny5x3": (5, 3, 3, 2),
    "long17x300": (17, 300, 3, 3),
    "down230x150": (230, 150, 3, 4),
    "rgba40x50": (40, 50, 4, 5),
}
# model cases: name -> images in prompt order
MODEL_CASES = {
    "a50x70": ["a50x70"],
    "tiny_pair": ["tiny5x3", "rgba40x50"],  # transformers 5.17 fails on a lone one-token image (split of a squeezed tensor)
    "long17x300": ["long17x300"],
    "down230x150": ["down230x150"],
    "rgba40x50": ["rgba40x50"],
    "two": ["a50x70", "long17x300"],
}


def mix(x, y, c, seed):
    h = ((x * 2654435761) ^ (y * 2246822519) ^ ((c + 1) * 3266489917) ^ (seed * 668265263)) & M32
    h ^= h >> 15
    h = (h * 2246822519) & M32
    h ^= h >> 13
    return h


def synthetic_image(h, w, ch, seed):
    """Rows of [r, g, b(, a)] uint8: a gradient plus noise; alpha 0 in the first 3 columns, 255 in the last 3."""
    out = bytearray()
    for y in range(h):
        for x in range(w):
            for c in range(3):
                out.append((x * 5 + y * 3 + c * 60 + (mix(x, y, c, seed) & 63)) & 255)
            if ch == 4:
                if x < 3:
                    out.append(0)
                elif x >= w - 3:
                    out.append(255)
                else:
                    out.append((x * 9 + y * 5 + (mix(x, y, 3, seed) & 31)) & 255)
    return bytes(out)


def target_size(h, w, max_side, cell, rule):
    r = max(h / max_side, w / max_side)
    if r > 1:
        if rule == "round":
            h, w = round(h / r), round(w / r)
        else:
            import math
            h, w = math.ceil(h / r), math.ceil(w / r)
    return ((h - 1) // cell + 1) * cell, ((w - 1) // cell + 1) * cell


def layout(hp, wp):
    ids = ([IMG] * wp + [IMG_BREAK]) * hp
    ids[-1] = IMG_END
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    import transformers
    import PIL
    from goldens_ckpt import Checkpoint
    from make_goldens import Host

    vc_path = os.path.join(args.ckpt, "config.json")
    with open(vc_path) as fh:
        cfg = json.load(fh)
    vcfg = cfg["vision_config"]
    patch, max_side = vcfg["patch_size"], vcfg["image_size"]
    merge = cfg.get("spatial_merge_size", 2)
    cell = patch * merge
    out_dir = os.path.join(args.out, GOLDEN_SUBDIR)
    os.makedirs(out_dir, exist_ok=True)

    # the processors transformers has (informational: their output against the Pillow reference)
    procs = {}
    for cls_name in ("PixtralImageProcessor", "PixtralImageProcessorFast"):
        cls = getattr(transformers, cls_name, None)
        if cls is None:
            continue
        for ps in ({"height": cell, "width": cell}, cell):
            try:
                procs[cls_name] = cls(size={"longest_edge": max_side}, patch_size=ps)
                break
            except Exception:  # noqa: BLE001
                continue

    host = Host("cpu")
    ck = Checkpoint(args.ckpt)
    model, load_path = host.load(ck, "hf")
    V = ck.text_config["vocab_size"]

    def rgb_of(name):
        h, w, ch, seed = IMAGES[name]
        raw = synthetic_image(h, w, ch, seed)
        pil = Image.frombytes("RGBA" if ch == 4 else "RGB", (w, h), raw)
        if ch == 4:
            try:
                from transformers.image_transforms import convert_to_rgb
                rgb = convert_to_rgb(pil)
            except ImportError:  # same as transformers' helper: alpha_composite onto opaque white
                white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, pil).convert("RGB")
        else:
            rgb = pil
        return pil, rgb, sum(raw)

    per_image = {}
    summary = []
    for name, (h, w, ch, seed) in IMAGES.items():
        pil, rgb, psum = rgb_of(name)
        th, tw = target_size(h, w, max_side, cell, "round")
        resized = rgb.resize((tw, th), resample=Image.BICUBIC)
        arr = np.asarray(resized, dtype=np.uint8).copy()  # [h', w', 3]
        x = arr.astype(np.float32) * np.float32(1 / 255)
        x = (x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
        pv = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32))
        t = {"pil_resized": torch.from_numpy(arr), "pixel_values": pv}
        meta = {"case": name, "image": f"synthetic_image(h={h}, w={w}, channels={ch}, seed={seed})",
                "pixel_sum": str(psum), "target_rule": "mistral_common round, then up to a multiple of 28 px",
                "pil_version": PIL.__version__, "transformers_version": transformers.__version__,
                "torch_version": torch.__version__}
        if ch == 4:
            t["composited"] = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy())
            white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
            on_white = Image.alpha_composite(white, pil).convert("RGB")
            t["composited_white"] = torch.from_numpy(np.asarray(on_white, dtype=np.uint8).copy())
            plain = np.asarray(pil.convert("RGB"), dtype=np.uint8)
            meta["convert_to_rgb"] = ("drops alpha (= convert('RGB'))" if np.array_equal(plain, t["composited"].numpy())
                                      else "alpha-composites onto white" if torch.equal(t["composited"], t["composited_white"])
                                      else "other")
        for pname, proc in procs.items():
            try:
                o = proc(images=[pil], return_tensors="pt")
                ppv = o["pixel_values"]
                ppv = ppv[0] if isinstance(ppv, (list, tuple)) else ppv[0]
                sz = [int(v) for v in o["image_sizes"][0]]
                ppv = ppv[:, :sz[0], :sz[1]]
                meta[f"{pname}_size"] = f"{sz[0]}x{sz[1]}"
                if sz == [th, tw]:
                    meta[f"{pname}_max_abs_diff"] = repr(float((ppv.float() - pv).abs().max()))
            except Exception as e:  # noqa: BLE001
                meta[f"{pname}_error"] = repr(e)[:300]
        per_image[name] = (pv, th, tw, t, meta)

    def run_case(case, names, ids, sizes, batch, rows, cell, keep, captured):
        T = len(ids)
        hooks = [model.model.vision_tower.register_forward_hook(keep("vision_hidden")),
                 model.model.multi_modal_projector.register_forward_hook(keep("image_features"))]
        try:
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), position_ids=torch.arange(T)[None],
                            pixel_values=batch, image_sizes=torch.tensor(sizes))
        finally:
            for hk in hooks:
                hk.remove()
        logits = out.logits[0].float()
        tensors = {"input_ids": torch.tensor(ids, dtype=torch.long),
                   "image_sizes": torch.tensor(sizes, dtype=torch.long),
                   "vision_hidden": captured["vision_hidden"], "image_features": captured["image_features"],
                   "logit_rows": torch.tensor(rows, dtype=torch.long), "logits": logits[rows].contiguous()}
        n_img = sum((s[0] // cell) * (s[1] // cell) for s in sizes)
        if tensors["image_features"].shape[0] != n_img:
            raise RuntimeError(f"{case}: {tensors['image_features'].shape[0]} image features, expected {n_img}")
        meta = {"model_case": case, "images": ",".join(names), "checkpoint": ck.name,
                "weights_fnv1a64": ck.weights_fnv1a64, "load_path": load_path, "softmax_scale_mode": "hf",
                "attn_implementation": "eager", "compute_dtype": "float32",
                "prompt": "1 1025 1300, then per image k: layout + (1400+k) (1401+k), then 1500 1501 1502"}
        return tensors, meta, logits

    for case, names in MODEL_CASES.items():
        pvs = [per_image[n][0] for n in names]
        sizes = [(per_image[n][1], per_image[n][2]) for n in names]
        hmax, wmax = max(s[0] for s in sizes), max(s[1] for s in sizes)
        batch = torch.zeros(len(pvs), 3, hmax, wmax)
        for i, p in enumerate(pvs):
            batch[i, :, :p.shape[1], :p.shape[2]] = p
        ids = [1, 1025, 1300]
        for k, (th, tw) in enumerate(sizes):
            ids += layout(th // cell, tw // cell) + [1400 + k, 1401 + k]
        ids += [1500, 1501, 1502]
        T = len(ids)
        img_rows = [i for i, v in enumerate(ids) if v == IMG]
        rows = sorted(set([img_rows[0], img_rows[-1], img_rows[-1] + 1] + list(range(T - 4, T))))
        captured = {}

        def keep(key):
            def hook(_m, _i, output):
                o = output.last_hidden_state if hasattr(output, "last_hidden_state") else output
                o = o[0] if isinstance(o, tuple) else o
                captured[key] = o.detach().float().reshape(-1, o.shape[-1]).clone()
            return hook

        try:
            tensors, meta, logits = run_case(case, names, ids, sizes, batch, rows, cell, keep, captured)
        except Exception:  # noqa: BLE001 - keep the other cases
            traceback.print_exc()
            summary.append(f"{case}: FAILED")
            continue
        if len(names) == 1:
            tensors.update(per_image[names[0]][3])
            meta.update(per_image[names[0]][4])
        else:
            meta["case"] = case
        path = os.path.join(out_dir, f"{case}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
        summary.append(f"{case}: T={T} sizes={sizes} max|logit|={float(logits.abs().max()):.4f} "
                       f"{os.path.getsize(path)} B " + " ".join(f"{k}={v}" for k, v in meta.items()
                                                             if "Pixtral" in k))

    for name in IMAGES:
        if name in MODEL_CASES:
            continue
        _, th, tw, tensors, meta = per_image[name]
        path = os.path.join(out_dir, f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
        summary.append(f"{name}: ours {th}x{tw} {os.path.getsize(path)} B "
                       + " ".join(f"{k}={v}" for k, v in meta.items() if "Pixtral" in k))

    tar_path = os.path.join(args.out, "vision_goldens.tar")
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for f in sorted(os.listdir(out_dir)):
            if not f.startswith("vision."):
                continue
            with open(os.path.join(out_dir, f), "rb") as fh:
                data = fh.read()
            info = tarfile.TarInfo(f"{GOLDEN_SUBDIR}/{f}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    print("\n".join(summary))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)
