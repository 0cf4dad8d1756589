#!/usr/bin/python3
"""ControlNet through the fleet on the golden tiny model: the request's
controlnet[] (model resolved under --controlnets-root, image as bin over
msgpack, base64 text over JSON, C# Conditioning.ControlNets):

- the golden case (control_image.png, conditioning_scale 0.7, guidance
  0..1, seed 53, Euler, 5 steps, guidance 5) gives diffusers'
  StableDiffusionXLControlNetPipeline image (golden
  ref/pipeline/controlnet: every 8-bit value within 1 level of diffusers'
  float image x 255 on >= 99.9% of the values);
- JSON and C# requests give the same pixels;
- errors name the field: an unknown ControlNet (not_found on
  controlnet[0].model), a preprocessor not built (not_available on
  controlnet[0].preprocessor), bytes that are no image (invalid_request on
  controlnet), and the worker keeps serving.
Skips (77) without the golden data."""
import array
import base64
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
P = "a photo of an astronaut riding a horse, highly detailed"
NEG = "blurry, low quality"


def ref_image(name):
    with open(os.path.join(GOLDEN, "ref", "pipeline", name + ".safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        body = f.read()
    a, b = h["image_np"]["data_offsets"]
    v = array.array("f")
    v.frombytes(body[a:b])
    return v


def close_to(png, ref):
    _, _, bpp, px = pngutil.pixels(png)
    if bpp != 3 or len(px) != len(ref):
        return 0.0
    return sum(1 for p, r in zip(px, ref) if abs(p - r * 255.0) <= 1.0) / len(ref)


def req(image, model="tiny_cn", pre="none"):
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": {
        "prompt": P, "negative_prompt": NEG, "model_name": "model",
        "scheduler": "EulerDiscreteScheduler",
        "controlnet": [{"model": model, "image": image, "conditioning_scale": 0.7,
                        "preprocessor": pre, "guidance_start": 0.0, "guidance_end": 1.0}],
        "hyperparameters": {"num_inference_steps": 5, "guidance_scale": 5.0, "seed": 53},
        "dimensions": {"width": 128, "height": 128}, "precision": {"dtype": "fp32"}}}


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    img_path = os.path.join(GOLDEN, "inputs", "control_image.png")
    if not os.path.isfile(img_path) or not os.path.isdir(os.path.join(GOLDEN, "controlnet")):
        print("SKIP: golden data not found")
        return 77
    with open(img_path, "rb") as f:
        img = f.read()
    t = fl.Tally("fleet_controlnet")
    fleet = fl.Fleet("ipc", "cn")
    models = os.path.join(fleet.dir, "models")
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(models, "model"))
    cnets = os.path.join(fleet.dir, "cnets")
    shutil.copytree(os.path.join(GOLDEN, "controlnet"), os.path.join(cnets, "tiny_cn"))
    try:
        fleet.start_broker(["--models-root", models])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out"),
                                             "--controlnets-root", cnets], wid="inf-cn")
        fleet.wait_registered([w.wid], 20)

        r = fleet.request(req(img), timeout=120, enc="msgpack")
        png = r["data"]["images"][0]["image"] if r.get("success") else b""
        frac = close_to(png, ref_image("controlnet")) if png else 0
        t.check(frac >= 0.999, "controlnet scale 0.7: diffusers' ControlNet image (%.4f of "
                "values within 1/255)" % frac, r.get("error"))

        rj = fleet.request(req(base64.b64encode(img).decode()), timeout=120, enc="json")
        pj = base64.b64decode(rj["data"]["images"][0]["image"]) if rj.get("success") else b""
        t.check(pj and png and pngutil.pixels(pj)[3] == pngutil.pixels(png)[3],
                "JSON (image as base64): the same pixels", rj.get("error"))

        cs = {"RequestId": "cs-cn", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 5},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 128, "Height": 128,
                                           "Seed": 53},
                       "Conditioning": {"Prompt": P, "NegativePrompt": NEG,
                                        "ControlNets": [{
                                            "ModelPath": "tiny_cn",
                                            "ConditioningImage": base64.b64encode(img).decode(),
                                            "Weight": 0.7, "Preprocessor": "none",
                                            "GuidanceStart": 0.0, "GuidanceEnd": 1.0}]},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        rc = fleet.request(cs, timeout=120)
        ims = (rc.get("Data") or {}).get("Images") or [{}]
        pc = base64.b64decode(ims[0].get("Image") or "")
        t.check(rc.get("Success") is True and pc and png and
                pngutil.pixels(pc)[3] == pngutil.pixels(png)[3],
                "C# Conditioning.ControlNets: the same pixels", rc.get("Error"))

        r = fleet.request(req(img, model="no_such_cn"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") in ("not_found", "invalid_request") and
                (e.get("field") or "").startswith("controlnet"),
                "an unknown ControlNet is refused naming its field (%s: %s)" %
                (e.get("field"), e.get("message")), e)
        r = fleet.request(req(img, pre="canny"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "not_available" and
                e.get("field") == "controlnet[0].preprocessor",
                "preprocessor canny: not_available on controlnet[0].preprocessor (%s)" %
                e.get("message"), e)
        r = fleet.request(req(b"not an image at all"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and
                (e.get("field") or "").startswith("controlnet"),
                "bytes that are no image: invalid_request on %s (%s)" %
                (e.get("field"), e.get("message")), e)
        r = fleet.request(req(img), timeout=120, enc="msgpack")
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
