#!/usr/bin/python3
"""Build a tiny SDXL *refiner* single file (SGM names: 4-level UNet whose first
up block has no attention, OpenCLIP bigG as conditioner.embedders.0, VAE) from
the golden diffusers folders refiner_unet/, model/vae/, model/text_encoder_2/,
plus a --config-dir for it. No golden file has this layout.
Usage: make_refiner_single.py GOLDEN OUTDIR -> OUTDIR/tiny_refiner.safetensors,
OUTDIR/config/{unet,vae,text_encoder_2}/config.json"""
import array
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdxl_keys import sgm_unet, sgm_vae  # noqa: E402

golden, outdir = sys.argv[1], sys.argv[2]


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


out = {}
unet = read_st(os.path.join(golden, "refiner_unet/diffusion_pytorch_model.safetensors"))
cfg = json.load(open(os.path.join(golden, "refiner_unet/config.json")))
up_x = ["CrossAttn" in t for t in cfg["up_block_types"]]
for k, (dt, shape, data) in unet.items():
    (new, nshape), = sgm_unet({k: shape}, up_x).items()
    out[new] = (dt, nshape, data)
vae = read_st(os.path.join(golden, "model/vae/diffusion_pytorch_model.safetensors"))
for k, (dt, shape, data) in vae.items():
    (new, nshape), = sgm_vae({k: shape}).items()
    out[new] = (dt, nshape, data)

te2 = read_st(os.path.join(golden, "model/text_encoder_2/model.safetensors"))
P = "conditioner.embedders.0.model."
ren = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
       ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]
for k, (dt, shape, data) in te2.items():
    if k == "text_projection.weight":  # [P, H] -> OpenCLIP's [H, P]
        p, h = shape
        a = array.array("f", data)
        t = array.array("f", [a[j * h + i] for i in range(h) for j in range(p)])
        out[P + "text_projection"] = (dt, [h, p], t.tobytes())
    elif k.endswith("token_embedding.weight"):
        out[P + "token_embedding.weight"] = (dt, shape, data)
    elif k.endswith("position_embedding.weight"):
        out[P + "positional_embedding"] = (dt, shape, data)
    elif k.startswith("text_model.final_layer_norm."):
        out[P + "ln_final." + k.split(".")[-1]] = (dt, shape, data)
    elif "self_attn.q_proj" in k:
        i, kind = k.split(".")[3], k.split(".")[-1]
        parts = [te2[k.replace("q_proj", n)] for n in ("q_proj", "k_proj", "v_proj")]
        out[P + "transformer.resblocks.%s.attn.in_proj_%s" % (i, kind)] = (
            dt, [3 * shape[0]] + shape[1:], b"".join(x[2] for x in parts))
    elif "self_attn.k_proj" in k or "self_attn.v_proj" in k:
        continue
    else:
        sub = ".".join(k.split(".")[4:])
        for a_, b_ in ren:
            sub = sub.replace(a_, b_)
        out[P + "transformer.resblocks.%s.%s" % (k.split(".")[3], sub)] = (dt, shape, data)
out[P + "logit_scale"] = ("F32", [], struct.pack("<f", 4.6))

header, blobs, off = {}, [], 0
for k in sorted(out):
    dt, shape, data = out[k]
    header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
    blobs.append(data)
    off += len(data)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
os.makedirs(outdir, exist_ok=True)
with open(os.path.join(outdir, "tiny_refiner.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
for comp, src in (("unet", "refiner_unet"), ("vae", "model/vae"),
                  ("text_encoder_2", "model/text_encoder_2")):
    os.makedirs(os.path.join(outdir, "config", comp), exist_ok=True)
    shutil.copy(os.path.join(golden, src, "config.json"),
                os.path.join(outdir, "config", comp, "config.json"))
print("wrote %d tensors" % len(out))
