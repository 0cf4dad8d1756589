#!/usr/bin/python3
"""Real-size SDXL single files without their data: the test writes the header
of an SGM/A1111 checkpoint with the exact tensor names and shapes of
stabilityai's sd_xl_base_1.0 / sd_xl_refiner_1.0 (F16), and makes the data
area a sparse hole, so a "7 GB" file costs no disk and no time. Then
`sdxl-gen inspect` (no --config-dir) must detect the architecture, map every
key (parameters conserved per component), and find that the SDXL defaults fit
("config_check": "ok"). The shapes come from the module structure of
diffusers' UNet2DConditionModel / AutoencoderKL / CLIPTextModel(WithProjection)
written out below, renamed to SGM names with the rules of diffusers'
convert_diffusers_to_original_sdxl.py: an implementation independent of the C
name tables, and the only test of the refiner's single-file layout (no golden
file has it). Known totals of the real base model anchor the shapes.

Usage: real_shapes_check.py SDXL_GEN"""
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


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdxl_keys import clip, sgm_te2, sgm_unet, sgm_vae, unet, vae  # noqa: E402


def numel(s):
    n = 1
    for x in s:
        n *= x
    return n


def write_sparse(path, tensors):
    header, off = {}, 0
    for k in sorted(tensors):
        nb = numel(tensors[k]) * 2
        header[k] = {"dtype": "F16", "shape": tensors[k], "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.truncate(8 + len(h) + off)  # the data: a sparse hole
    return off


base_unet = unet([320, 640, 1280], [False, True, True], [True, True, False], [1, 2, 10], 2048, 2816)
ref_unet = unet([384, 768, 1536, 1536], [False, True, True, False], [False, True, True, False],
                [4, 4, 4, 4], 1280, 2560)
the_vae = vae()
te1 = clip(768, 3072, 12, 0)
te2 = clip(1280, 5120, 32, 1280)
count = {n: sum(numel(s) for s in d.values())
         for n, d in (("unet", base_unet), ("vae", the_vae), ("text_encoder", te1),
                      ("text_encoder_2", te2), ("refiner_unet", ref_unet))}
# The published sizes of SDXL base 1.0's components.
check(count["unet"] == 2567463684 and count["vae"] == 83653863 and
      count["text_encoder"] == 123060480 and count["text_encoder_2"] == 694659840,
      "generator reproduces the real SDXL base parameter counts %s" % count)

base = dict(sgm_unet(base_unet, [True, True, False]))
base.update(sgm_vae(the_vae))
base.update({"conditioner.embedders.0.transformer." + k: s for k, s in te1.items()})
base.update(sgm_te2(te2, "conditioner.embedders.1.model."))
base["conditioner.embedders.1.model.logit_scale"] = []
base["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = [1, 77]
refiner = dict(sgm_unet(ref_unet, [False, True, True, False]))
refiner.update(sgm_vae(the_vae))
refiner.update(sgm_te2(te2, "conditioner.embedders.0.model."))

with tempfile.TemporaryDirectory() as d:
    for name, tensors, arch, want in (
            ("sd_xl_base_1.0.safetensors", base, "sdxl_base",
             {"unet": count["unet"], "vae": count["vae"], "text_encoder": count["text_encoder"],
              "text_encoder_2": count["text_encoder_2"]}),
            ("sd_xl_refiner_1.0.safetensors", refiner, "sdxl_refiner",
             {"unet": count["refiner_unet"], "vae": count["vae"], "text_encoder": 0,
              "text_encoder_2": count["text_encoder_2"]})):
        path = os.path.join(d, name)
        size = write_sparse(path, tensors)
        p = subprocess.run([gen, "inspect", path], capture_output=True, text=True)
        if p.returncode != 0:
            check(False, "%s: inspect failed: %s" % (name, p.stderr.strip()))
            continue
        j = json.loads(p.stdout)
        check(j["architecture"] == arch and j["format"] == "single_file",
              "%s (%.1f GB, %d tensors): %s, %s" % (name, size / 1e9, len(tensors),
                                                    j["architecture"], j["description"]))
        got = {k: j["parameters"][k] for k in want}
        check(got == want, "%s: every key mapped, parameters per component %s" % (name, got))
        check(j["config_source"] == "shapes" and j["config_check"] == "ok",
              "%s: configs derived from the shapes fit (%s)" % (name, j["config_check"]))

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
