#!/usr/bin/python3
"""img2img through the fleet on the golden tiny model: init_image (bin over
msgpack, base64 text over JSON, C# Conditioning.InitImage) with
hyperparameters.strength:

- the golden case (init_image.png, strength 0.6, seed 51, Euler, 5 steps,
  guidance 5) gives diffusers' StableDiffusionXLImg2ImgPipeline image
  (golden ref/pipeline/img2img_euler_s06: every 8-bit value within 1 level
  of diffusers' float image x 255 on >= 99.9% of the values);
- the JSON and C# requests give the same pixels, and so does sdxl-gen
  generate --init-image with the same fields (one request, one image);
- an init_image of another size than dimensions is resized to it (64x64);
- strength 0 is refused by the schema (hyperparameters.strength), bytes
  that are no image on init_image, and the worker keeps serving.
Skips (77) without the golden data."""
import base64
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402
from goldenref import close_to, ref_image  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
P = "a photo of an astronaut riding a horse, highly detailed"
NEG = "blurry, low quality"


def req(init, size=128, strength=0.6):
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": {
        "prompt": P, "negative_prompt": NEG, "model_name": "model",
        "scheduler": "EulerDiscreteScheduler", "init_image": init,
        "hyperparameters": {"num_inference_steps": 5, "guidance_scale": 5.0, "seed": 51,
                            "strength": strength},
        "dimensions": {"width": size, "height": size}, "precision": {"dtype": "fp32"}}}


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    init_path = os.path.join(GOLDEN, "inputs", "init_image.png")
    if not os.path.isfile(init_path):
        print("SKIP: golden data not found")
        return 77
    with open(init_path, "rb") as f:
        init = f.read()
    t = fl.Tally("fleet_img2img")
    fleet = fl.Fleet("ipc", "i2i")
    models = os.path.join(fleet.dir, "models")
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(models, "model"))
    try:
        fleet.start_broker(["--models-root", models])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out")], wid="inf-i2i")
        fleet.wait_registered([w.wid], 20)

        r = fleet.request(req(init), timeout=120, enc="msgpack")
        png = r["data"]["images"][0]["image"] if r.get("success") else b""
        frac = close_to(png, ref_image("img2img_euler_s06")) if png else 0
        t.check(frac >= 0.999, "init_image + strength 0.6: diffusers' img2img image (%.4f of "
                "values within 1/255)" % frac, r.get("error"))
        text = pngutil.text(png).get("parameters", "") if png else ""
        t.check("Denoising strength: 0.6" in text, "the A1111 text names the denoising strength",
                text)

        rj = fleet.request(req(base64.b64encode(init).decode()), timeout=120, enc="json")
        pj = base64.b64decode(rj["data"]["images"][0]["image"]) if rj.get("success") else b""
        t.check(pj and pngutil.pixels(pj)[3] == pngutil.pixels(png)[3],
                "JSON (init_image as base64): the same pixels", rj.get("error"))

        cs = {"RequestId": "cs-i2i", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 5},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 128, "Height": 128,
                                           "Seed": 51, "Strength": 0.6},
                       "Conditioning": {"Prompt": P, "NegativePrompt": NEG,
                                        "InitImage": base64.b64encode(init).decode()},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        rc = fleet.request(cs, timeout=120)
        ims = (rc.get("Data") or {}).get("Images") or [{}]
        pc = base64.b64decode(ims[0].get("Image") or "")
        t.check(rc.get("Success") is True and pc and pngutil.pixels(pc)[3] == pngutil.pixels(png)[3],
                "C# Conditioning.InitImage + Hyperparameters.Strength: the same pixels",
                rc.get("Error"))

        if os.access(GEN_BIN, os.X_OK):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "g.png")
                g = subprocess.run([GEN_BIN, "generate", "--model", os.path.join(models, "model"),
                                    "--prompt", P, "--negative", NEG, "--seed", "51", "--steps",
                                    "5", "--cfg", "5", "--scheduler", "EulerDiscreteScheduler",
                                    "--width", "128", "--height", "128", "--dtype", "fp32",
                                    "--init-image", init_path, "--strength", "0.6", "--out", out,
                                    "--quiet"], capture_output=True, timeout=120)
                with open(out, "rb") as f:
                    pg = f.read() if g.returncode == 0 else b""
            t.check(pg and pngutil.pixels(pg)[3] == pngutil.pixels(png)[3],
                    "sdxl-gen generate --init-image, the same fields: the same pixels",
                    g.stderr[-300:])

        ri = fleet.request(dict(req(init), message_type="inference.img2img"), timeout=120,
                           enc="msgpack")
        t.check(ri.get("success") and ri["data"]["images"][0]["image"] == png,
                "inference.img2img: the same image as inference.generate with init_image",
                ri.get("error"))
        no_init = req(init)
        del no_init["data"]["init_image"]
        ri = fleet.request(dict(no_init, message_type="inference.img2img"), timeout=60,
                           enc="msgpack")
        e = ri.get("error") or {}
        t.check(e.get("code") == "invalid_request" and e.get("field") == "init_image",
                "inference.img2img without init_image: invalid_request on init_image", e)
        r = fleet.request(req(init, size=64), timeout=120, enc="msgpack")
        d = r.get("data") or {}
        t.check(r.get("success") and (d.get("width"), d.get("height")) == (64, 64),
                "a 128x128 init_image with dimensions 64x64: resized, a 64x64 image",
                r.get("error"))
        r = fleet.request(req(init, strength=0), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and
                e.get("field") == "hyperparameters.strength",
                "strength 0 is refused naming hyperparameters.strength (%s)" % e.get("message"), e)
        r = fleet.request(req(b"not an image at all"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and e.get("field") == "init_image",
                "bytes that are no image: invalid_request on init_image (%s)" % e.get("message"),
                e)
        r = fleet.request(req(init), timeout=120, enc="msgpack")
        t.check(r.get("success") and r["data"]["images"][0]["image"] == png,
                "the worker still serves: the first image again", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
