#!/usr/bin/python3
"""sdxl-gen inspect: JSON output parsed with json.load, fields checked on the
golden layouts and adapters; a bad path and an unsupported file give one line
on stderr and exit 2. Usage: inspect_check.py SDXL_GEN [GOLDEN_DIR]
The golden folder is $SDXL_GOLDEN_DIR when set, else GOLDEN_DIR, else
$SDXL_GOLDEN_DIR_DEFAULT (what meson configured)."""
import json
import os
import subprocess
import sys
import tempfile

gen = sys.argv[1]
golden = (os.environ.get("SDXL_GOLDEN_DIR") or (sys.argv[2] if len(sys.argv) > 2 else "")
          or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", ""))
if not golden or not os.path.isdir(golden):
    print("SKIP: golden data not found")
    sys.exit(77)

passed = failed = 0


def check(cond, what):
    global passed, failed
    print(("ok   " if cond else "FAIL ") + what)
    if cond:
        passed += 1
    else:
        failed += 1


def inspect(*args):
    p = subprocess.run([gen, "inspect", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


PARAMS = {"unet": 669988, "vae": 334383, "text_encoder": 804232, "text_encoder_2": 1219752}

cases = [
    (["model"], "diffusers", "sdxl_base", PARAMS),
    (["model_single_file/tiny_sdxl.safetensors", "--config-dir", "model"], "single_file",
     "sdxl_base", PARAMS),
    (["refiner_unet"], "diffusers_component", "sdxl_refiner", None),
    (["model/vae"], "diffusers_component", "vae", {"vae": 334383}),
    (["lora/lora_kohya.safetensors"], "safetensors", "lora", None),
    (["controlnet"], "diffusers_component", "controlnet", None),
    (["controlnet/diffusion_pytorch_model.safetensors"], "safetensors", "controlnet", None),
    (["ti/tiny_ti.safetensors"], "safetensors", "textual_inversion", None),
]
for args, fmt, arch, params in cases:
    args = [os.path.join(golden, a) if i == 0 or args[i - 1] == "--config-dir" else a
            for i, a in enumerate(args)]
    rc, out, err = inspect(*args)
    name = os.path.relpath(args[0], golden)
    try:
        j = json.loads(out)
    except ValueError as e:
        check(False, "%s: JSON parses (%s; rc %d, stderr %s)" % (name, e, rc, err.strip()))
        continue
    check(rc == 0 and j["format"] == fmt and j["architecture"] == arch,
          "%s: rc %d, format %s, architecture %s" % (name, rc, j["format"], j["architecture"]))
    check(j["tensor_count"] > 0 and sum(j["dtypes"].values()) == j["tensor_count"]
          and set(j["dtypes"]) <= {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8",
                                   "BOOL"},
          "%s: %d tensors, dtypes %s" % (name, j["tensor_count"], j["dtypes"]))
    p = j["parameters"]
    check(sum(p.values()) == j["total_parameters"],
          "%s: component parameters add up to %d" % (name, j["total_parameters"]))
    if params:
        check(all(p[k] == v for k, v in params.items()),
              "%s: parameters per component %s" % (name, p))

# The same JSON through json.load on a pipe, as the issue asks.
rc = subprocess.run("%s inspect %s | /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)'"
                    % (gen, os.path.join(golden, "model")), shell=True).returncode
check(rc == 0, "inspect | python3 -c json.load")

# Two keys landing on one diffusers name: the golden single file plus a Linear
# text_projection.weight beside OpenCLIP's text_projection.
import struct  # noqa: E402
src = os.path.join(golden, "model_single_file/tiny_sdxl.safetensors")
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
header["conditioner.embedders.1.model.text_projection.weight"] = {
    "dtype": "F32", "shape": [20, 24], "data_offsets": [len(data), len(data) + 20 * 24 * 4]}
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with tempfile.TemporaryDirectory() as d:
    dup = os.path.join(d, "dup.safetensors")
    with open(dup, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data + bytes(20 * 24 * 4))
    rc, out, err = inspect(dup, "--config-dir", os.path.join(golden, "model"))
    j = json.loads(out) if rc == 0 else {}
    check("both map to text_encoder_2 'text_projection.weight'" in j.get("config_check", ""),
          "duplicate target reported: %s" % j.get("config_check", err.strip()))

# Errors: one line on stderr, exit 2.
with tempfile.TemporaryDirectory() as d:
    bad = os.path.join(d, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2]}   ")
    for args, needle in [([os.path.join(d, "missing")], "no such file"),
                         ([bad], "entry is not an object"),
                         ([os.path.join(golden, "model_single_file/tiny_sdxl.safetensors"),
                           "--config-dir"], "needs a folder"),
                         ([os.path.join(golden, "taesd")], "AutoencoderTiny"),
                         ([os.path.join(golden, "taesd/diffusion_pytorch_model.safetensors")],
                          "TAESD"),
                         ([os.path.join(golden, "upscaler")], "upscaler"),
                         ([os.path.join(golden, "upscaler/rrdbnet_x2.safetensors")],
                          "unrecognised tensor names"),
                         (["--bogus"], "unknown option")]:
        rc, out, err = inspect(*args)
        check(rc == 2 and out == "" and err.count("\n") == 1 and needle in err,
              "error exit 2, one line: %s" % err.strip())

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
