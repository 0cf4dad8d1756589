"""test_one_image - one request gives one image whichever door it enters
(issue 10): `sdxl-gen generate` and inference.generate through the broker
and an inference worker, given only prompt, seed, size and steps (every
other value is the schema's default: guidance, scheduler, negative prompt,
dtype, clip skip, batch), give PNGs with identical pixels. A second case
names a scheduler alias that also sets use_karras_sigmas ("DPM++ 2M Karras")
and a guidance of its own, which both doors resolve through the schema.

Bitwise, not within a tolerance: both doors run the same engine code on the
same libtorch and CPU with the same thread count, from the same filled
values, so nothing is left to differ; a difference is a real one.

All three processes get the same --schemas-dir (the source's schemas/).
Golden tiny model (SDXL_GOLDEN_DIR/model) on the CPU; skips (77) without
the golden data or the engine-built binaries.

A last case runs the golden single-file checkpoint
(model_single_file/tiny_sdxl.safetensors) through both doors: the same
pixels and text, and the text's "Model hash" is AutoV2, the first 10 hex
digits of the file's SHA-256 (hashlib here); a diffusers folder has none.
"""
import hashlib
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GOLDEN = (os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT")
          or os.path.join(fl.SOURCE_ROOT, "..", "shared", "golden"))
MODEL_DIR = os.path.join(GOLDEN, "model")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
SCHEMAS = os.path.join(fl.SOURCE_ROOT, "schemas")

# (name, sdxl-gen options, the same as request fields)
CASES = [
    ("defaults", ["--prompt", "a lighthouse at dusk", "--seed", "1234", "--steps", "3",
                  "--width", "64", "--height", "64"],
     {"prompt": "a lighthouse at dusk", "hyperparameters": {"seed": 1234,
                                                             "num_inference_steps": 3},
      "dimensions": {"width": 64, "height": 64}}),
    ("alias", ["--prompt", "a red fox", "--seed", "77", "--steps", "3", "--width", "64",
               "--height", "96", "--scheduler", "DPM++ 2M Karras", "--cfg", "4"],
     {"prompt": "a red fox", "scheduler": "DPM++ 2M Karras",
      "hyperparameters": {"seed": 77, "num_inference_steps": 3, "guidance_scale": 4},
      "dimensions": {"width": 64, "height": 96}}),
]


def via_sdxl_gen(tmp, name, opts, model=MODEL_DIR):
    out = os.path.join(tmp, name + ".png")
    p = subprocess.run([GEN_BIN, "generate", "--model", model, "--schemas-dir", SCHEMAS,
                        "--out", out, "--quiet"] + opts,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("sdxl-gen: %s" % p.stdout.decode("utf-8", "replace"))
    with open(out, "rb") as f:
        return f.read()


def via_fleet(fleet, data, model_name="model"):
    req = {"message_type": "inference.generate", "request_id": "o-" + uuid.uuid4().hex[:8],
           "timeout_ms": 120000, "data": dict(data, model_name=model_name)}
    r = fleet.request(req, timeout=120)
    if r.get("success") is not True:
        raise RuntimeError("fleet: %s" % r.get("error"))
    return r["data"], base64.b64decode(r["data"]["images"][0]["image"])


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, GEN_BIN)
    if not os.path.isfile(os.path.join(MODEL_DIR, "model_index.json")):
        print("SKIP: no golden model at %s" % MODEL_DIR)
        return fl.SKIP
    t = fl.Tally("one_image")
    tmp = tempfile.mkdtemp(prefix="sdxl-one-image-")
    fleet = fl.Fleet("ipc", "one-image")
    try:
        fleet.start_broker(["--schemas-dir", SCHEMAS])
        w = fleet.start_worker("inference", ["--models-root", GOLDEN, "--outputs-root",
                                             os.path.join(fleet.dir, "outputs"),
                                             "--schemas-dir", SCHEMAS])
        fleet.wait_registered([w.wid], 30)
        for name, opts, data in CASES:
            print("--- %s" % name, flush=True)
            try:
                gen = via_sdxl_gen(tmp, name, opts)
                d, png = via_fleet(fleet, data)
            except Exception as e:  # noqa: BLE001 - one case's failure
                t.check(False, "%s: both doors generate" % name, e)
                continue
            a, b = pngutil.pixels(gen), pngutil.pixels(png)
            t.check(a[:3] == b[:3], "%s: same size and channels %s" % (name, a[:3]), b[:3])
            t.check(a[3] == b[3], "%s: sdxl-gen and the fleet give identical pixels" % name,
                    "%d of %d bytes differ" % (sum(x != y for x, y in zip(a[3], b[3])),
                                               len(a[3])))
            ta, tb = pngutil.text(gen), pngutil.text(png)
            t.check(ta.get("parameters") == tb.get("parameters"),
                    "%s: the same A1111 parameters text (the same filled values)" % name,
                    (ta.get("parameters"), tb.get("parameters")))
            t.check("Model hash:" not in (tb.get("parameters") or ""),
                    "%s: a diffusers folder has no Model hash" % name, tb.get("parameters"))
            print("     fleet ran: steps %s, scheduler %s, karras %s, dtype %s" %
                  (d.get("steps"), d.get("scheduler"), d.get("use_karras_sigmas"),
                   d.get("dtype")), flush=True)
        if t.failed:
            fleet.dump_logs(40)
    finally:
        fleet.close()
    try:
        single_file(t, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


def single_file(t, tmp):
    src = os.path.join(GOLDEN, "model_single_file", "tiny_sdxl.safetensors")
    if not os.path.isfile(src):
        print("(no golden single file: its case is left out)")
        return
    print("--- single file", flush=True)
    root = os.path.join(tmp, "sf-models")
    os.makedirs(root)
    shutil.copy(src, root)
    with open(src, "rb") as f:
        autov2 = hashlib.sha256(f.read()).hexdigest()[:10]
    fleet = fl.Fleet("ipc", "one-image-sf")
    try:
        fleet.start_broker(["--schemas-dir", SCHEMAS])
        w = fleet.start_worker("inference", ["--models-root", root, "--config-dir", MODEL_DIR,
                                             "--outputs-root", os.path.join(fleet.dir, "out"),
                                             "--schemas-dir", SCHEMAS])
        fleet.wait_registered([w.wid], 30)
        name, opts, data = CASES[0]
        gen = via_sdxl_gen(tmp, "single", opts + ["--config-dir", MODEL_DIR],
                           os.path.join(root, "tiny_sdxl.safetensors"))
        _, png = via_fleet(fleet, data, "tiny_sdxl")
        t.check(pngutil.pixels(gen) == pngutil.pixels(png),
                "single file: sdxl-gen and the fleet give identical pixels")
        ta, tb = pngutil.text(gen).get("parameters", ""), pngutil.text(png).get("parameters", "")
        t.check(ta == tb and ("Model hash: %s, Model: tiny_sdxl" % autov2) in tb,
                "single file: the same text, with Model hash %s (AutoV2 of the file)" % autov2,
                (ta, tb))
    except Exception as e:  # noqa: BLE001 - the case's failure
        t.check(False, "single file: both doors generate", e)
        fleet.dump_logs(40)
    finally:
        fleet.close()


if __name__ == "__main__":
    sys.exit(main())
