#!/usr/bin/python3
"""The checkpoints users have, one row per case, as real-size SDXL headers
with sparse data (names and shapes from sdxl_keys.py, which follows
diffusers' module structure and convert_diffusers_to_original_sdxl.py, not
the C tables). Each row states the expected outcome: loads, loads with N
skipped keys, or refused with a message naming the reason. `sdxl-gen
inspect` must print the architecture, the dtype, the prediction type and
the skipped keys; rows that must be refused at load also run `sdxl-gen
generate` (refusals happen from the headers, before any weight is read, so
a "7 GB" sparse file costs nothing).

Usage: checkpoint_matrix.py SDXL_GEN"""
import json
import os
import struct
import subprocess
import sys
import tempfile

gen = sys.argv[1]
passed = failed = 0


def check(cond, what):
    global passed, failed
    print(("ok   " if cond else "FAIL ") + what)
    if cond:
        passed += 1
    else:
        failed += 1
    return cond


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdxl_keys import clip, sgm_te2, sgm_unet, sgm_vae, unet, vae  # noqa: E402

SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1, "F8_E5M2": 1}


def numel(s):
    n = 1
    for x in s:
        n *= x
    return n


def write_sparse(path, tensors, dtype="F16", meta=None):
    header, off = {}, 0
    if meta:
        header["__metadata__"] = meta
    for k in sorted(tensors):
        nb = numel(tensors[k]) * SIZES[dtype]
        header[k] = {"dtype": dtype, "shape": tensors[k], "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.truncate(8 + len(h) + off)


def inspect(path):
    p = subprocess.run([gen, "inspect", path], capture_output=True, text=True)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr.strip()


def generate(path):
    p = subprocess.run([gen, "generate", "--model", path, "--prompt", "x", "--steps", "1",
                        "--width", "64", "--height", "64", "--quiet", "--out", path + ".png"],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr.strip()


BASE_UNET_ARGS = ([320, 640, 1280], [False, True, True], [True, True, False], [1, 2, 10], 2048,
                  2816)
base_unet = unet(*BASE_UNET_ARGS)
the_vae = vae()
te1 = clip(768, 3072, 12, 0)
te2 = clip(1280, 5120, 32, 1280)


def sgm_base(u=None):
    d = dict(sgm_unet(u or base_unet, [True, True, False]))
    d.update(sgm_vae(the_vae))
    d.update({"conditioner.embedders.0.transformer." + k: s for k, s in te1.items()})
    d.update(sgm_te2(te2, "conditioner.embedders.1.model."))
    return d


def with_keys(extra, drop=()):
    d = sgm_base()
    d.update(extra)
    for k in drop:
        d.pop(k)
    return d


def shapes_fields(j):
    return "arch %s, dtype %s, prediction %s, skipped %d %s" % (
        j["architecture"], j["dtype"], j["prediction_type"], j["skipped_keys"], j["skipped"])


# (name, tensors, dtype, expectation)
# expectation: dict of inspect fields that must match, or ("refused", where, words)
P = "conditioner.embedders.0.transformer."
lora_key = "lora_unet_input_blocks_4_1_proj_in.lora_down.weight"
rows = [
    ("sd_xl_base_1.0 (F16)", sgm_base(), "F16",
     {"architecture": "sdxl_base", "dtype": "F16", "prediction_type": "epsilon",
      "skipped_keys": 0, "config_check": "ok"}),
    ("base + extra text_projection.weight in CLIP-L", with_keys({P + "text_projection.weight":
                                                                 [768, 768]}), "F16",
     {"architecture": "sdxl_base", "skipped_keys": 1,
      "skipped": [P + "text_projection.weight"], "config_check": "ok"}),
    ("base + 2 unknown UNet/VAE keys", with_keys({
        "model.diffusion_model.input_blocks.1.0.unknown.weight": [4],
        "first_stage_model.encoder.quant_buffer": [8]}), "F16",
     {"skipped_keys": 2, "config_check": "ok"}),
    ("v-prediction fine-tune (v_pred key)", with_keys({"v_pred": []}), "F16",
     {"architecture": "sdxl_base", "prediction_type": "v_prediction", "zero_terminal_snr": False}),
    ("v-prediction + zero terminal SNR (v_pred, ztsnr)", with_keys({"v_pred": [], "ztsnr": []}),
     "F16", {"prediction_type": "v_prediction", "zero_terminal_snr": True}),
    ("Playground v2.5 style EDM (edm_mean, edm_std)",
     with_keys({"edm_mean": [1, 4, 1, 1], "edm_std": [1, 4, 1, 1]}), "F16",
     {"prediction_type": "edm", "__generate_refused__": "EDM"}),
    ("FP8 E4M3 storage", sgm_base(), "F8_E4M3",
     {"architecture": "sdxl_base", "dtype": "F8_E4M3", "config_check": "ok"}),
    ("FP8 E5M2 storage", sgm_base(), "F8_E5M2", {"dtype": "F8_E5M2", "config_check": "ok"}),
    ("BF16 storage", sgm_base(), "BF16", {"dtype": "BF16", "config_check": "ok"}),
    ("full checkpoint with one baked-in lora_unet_* key", with_keys({lora_key: [4, 640]}), "F16",
     {"architecture": "sdxl_base", "config_check": "ok", "__description__": "LoRA-named"}),
    ("a real kohya LoRA (LoRA keys only)",
     {lora_key: [4, 640], "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": [640, 4],
      "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 768]}, "F16",
     {"architecture": "lora"}),
    ("UNet-only file, 'diffusion_model.' prefix (SGM names)",
     {"diffusion_model." + k[len("model.diffusion_model."):]: s
      for k, s in sgm_unet(base_unet, [True, True, False]).items()}, "F16",
     {"architecture": "sdxl_base", "config_check": "ok", "__params__": ("unet", "vae")}),
    ("UNet-only file, 'unet.' prefix (diffusers names)",
     {"unet." + k: s for k, s in base_unet.items()}, "F16",
     {"architecture": "sdxl_base", "config_check": "ok", "__params__": ("unet", "vae")}),
    ("VAE file, 'vae.' prefix (diffusers names)", {"vae." + k: s for k, s in the_vae.items()},
     "F16", {"architecture": "vae", "config_check": "ok"}),
    ("VAE file, 'vae.' prefix (ldm names)",
     {"vae." + k[len("first_stage_model."):]: s for k, s in sgm_vae(the_vae).items()}, "F16",
     {"architecture": "vae", "config_check": "ok"}),
    ("text-encoder-only file, 'clip_l.' prefix (not loaded alone yet)",
     {"clip_l." + k: s for k, s in te1.items()}, "F16", ("refused", "text-encoder-only")),
    ("missing needed tensor (conv_in dropped)",
     with_keys({}, drop=["model.diffusion_model.input_blocks.0.0.weight"]), "F16",
     ("refused", "conv_in.weight")),
    ("wrong shape (CLIP-L token embedding 700 wide)",
     with_keys({P + "text_model.embeddings.token_embedding.weight": [49408, 700]}), "F16",
     ("refused", "text_encoder")),
]

# Distilled SDXL variants, detected from their shapes with no --config-dir.
# Vega-like: transformer depths 1 and 2 (uniform within each level, as this
# UNet runs them). SSD-1B-like: up-block depths that differ within a level
# (its reverse_transformer_layers_per_block) are refused, naming the reason.
vega = unet([320, 640, 1280], [False, True, True], [True, True, False], [1, 1, 2], 2048, 2816)
rows.append(("Vega-like distilled UNet (depths 1/2 per level)", sgm_base(vega), "F16",
             {"architecture": "sdxl_base", "config_check": "ok", "config_source": "shapes"}))
ssd = unet([320, 640, 1280], [False, True, True], [True, True, False], [1, 2, 4], 2048, 2816)
for j, keep in ((1, 2), (2, 2)):  # up level 0: 4, 2, 2 transformer blocks
    pre = "up_blocks.0.attentions.%d.transformer_blocks." % j
    for k in [k for k in ssd if k.startswith(pre) and int(k[len(pre):].split(".")[0]) >= keep]:
        del ssd[k]
rows.append(("SSD-1B-like UNet (up depths 4/2/2 within one level)", sgm_base(ssd), "F16",
             ("refused", "per-block depths")))

with tempfile.TemporaryDirectory() as d:
    for i, (name, tensors, dtype, want) in enumerate(rows):
        path = os.path.join(d, "case%02d.safetensors" % i)
        write_sparse(path, tensors, dtype)
        rc, j, err = inspect(path)
        if isinstance(want, tuple):  # refused at load, reason named
            words = want[1]
            reason = (j or {}).get("config_check", err) if rc == 0 else err
            check(rc != 0 or (reason != "ok" and words in reason),
                  "%s: inspect names the problem (%s)" % (name, reason))
            grc, gerr = generate(path)
            check(grc == 2 and words in gerr and gerr.count("\n") == 0,
                  "%s: generate refused, one line naming '%s' (rc %d: %s)" % (name, words, grc,
                                                                            gerr[:200]))
            continue
        if not check(rc == 0, "%s: inspect ok (%s)" % (name, err)):
            continue
        for field in ("architecture", "dtype", "prediction_type", "skipped_keys", "skipped"):
            check(field in j, "%s: inspect prints %s" % (name, field))
        ok = all(j.get(k) == v for k, v in want.items() if not k.startswith("__"))
        check(ok, "%s: %s; config %s (%s)" % (name, shapes_fields(j), j.get("config_check"),
                                              j.get("config_source")))
        if "__description__" in want:
            check(want["__description__"] in j["description"],
                  "%s: description says why (%s)" % (name, j["description"]))
        if "__params__" in want:
            has, hasnt = want["__params__"]
            check(j["parameters"][has] > 0 and j["parameters"][hasnt] == 0,
                  "%s: only the %s is there (%s)" % (name, has, j["parameters"]))
        if "__generate_refused__" in want:
            grc, gerr = generate(path)
            check(grc == 2 and want["__generate_refused__"] in gerr,
                  "%s: generate refused (rc %d: %s)" % (name, grc, gerr[:200]))

    # Sharded diffusers UNet folder, and an fp16-only variant folder.
    cfg = {"_class_name": "UNet2DConditionModel", "addition_embed_type": "text_time",
           "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
           "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
           "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
           "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
           "projection_class_embeddings_input_dim": 2816,
           "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
           "reverse_transformer_layers_per_block": [[10, 10, 10], [2, 2, 2], [1, 1, 1]]}
    for label, files in (("sharded (2 shards + index)", "shards"), ("fp16 variant only", "fp16")):
        u = os.path.join(d, files, "unet")
        os.makedirs(u)
        with open(os.path.join(u, "config.json"), "w") as f:
            json.dump(cfg, f)
        if files == "shards":
            keys = sorted(base_unet)
            half = len(keys) // 2
            wm = {}
            for n, part in enumerate((keys[:half], keys[half:])):
                fn = "diffusion_pytorch_model-%05d-of-00002.safetensors" % (n + 1)
                write_sparse(os.path.join(u, fn), {k: base_unet[k] for k in part})
                wm.update({k: fn for k in part})
            with open(os.path.join(u, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": wm}, f)
            nfiles = 2
        else:
            write_sparse(os.path.join(u, "diffusion_pytorch_model.fp16.safetensors"), base_unet)
            nfiles = 1
        rc, j, err = inspect(u)
        check(rc == 0 and j["architecture"] == "sdxl_base" and j["files"] == nfiles and
              j["config_check"] == "ok" and j["parameters"]["unet"] == 2567463684,
              "diffusers UNet folder, %s: loads (%s)" % (
                  label, err or "%d files, %s" % (j["files"], j["config_check"])))

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
