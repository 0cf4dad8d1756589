#!/usr/bin/python3
"""The refiner (ensemble of experts) through the fleet on the golden tiny
models: refiner_model names the golden refiner UNet (a UNet folder alone,
which takes text_encoder_2, the VAE and the scheduler config of the base),
refiner.switch_at the handoff (0.8, the schema's default):

- one inference.generate runs the base to the switch and the refiner the
  rest, from the base's latents (no VAE round trip), and gives diffusers'
  two-pipeline image (golden ref/pipeline/refiner: every 8-bit value within
  1 level of diffusers' float image x 255 on >= 99.9% of the values; the
  base part is golden refiner_base_part, Euler, 10 steps, seed 52, guidance
  5, 128x128); Euler draws no noise, so the refiner's generator seed does
  not enter;
- progress counts both stages as one run (1..10 of 10), the reply's steps
  are 10, and the A1111 text says Refiner and Refiner switch at;
- the C# Model.Refiner and `sdxl-gen generate --refiner` give the same
  pixels and text (one request, one image);
- a refiner name not under the models root, a refiner with init_image and
  switch_at 1 are refused naming the field; the worker keeps serving.
Skips (77) without the golden data."""
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
from goldenref import close_to, ref_image  # noqa: E402

import zmq  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
P = "a photo of an astronaut riding a horse, highly detailed"
NEG = "blurry, low quality"


def req(**extra):
    data = {"prompt": P, "negative_prompt": NEG, "model_name": "model",
            "refiner_model": "refiner_unet", "scheduler": "EulerDiscreteScheduler",
            "hyperparameters": {"num_inference_steps": 10, "guidance_scale": 5.0, "seed": 52},
            "dimensions": {"width": 128, "height": 128}, "precision": {"dtype": "fp32"}}
    data.update(extra)
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": data}


def streamed(fleet, msg):
    """The request over DEALER with stream: progress (step, total) list and the reply."""
    s = fleet.client(zmq.DEALER)
    try:
        rid = "rf-" + uuid.uuid4().hex[:8]
        s.send(fl.encode(dict(msg, request_id=rid, stream=True), "msgpack"))
        steps = []
        while s.poll(120000):
            m = fl.decode(s.recv_multipart()[-1])
            if m.get("request_id") != rid:
                continue
            if m.get("message_type") == "progress":
                d = m.get("data") or m
                steps.append((d.get("step"), d.get("total"), d.get("message") or ""))
                continue
            return steps, m
        raise TimeoutError("no reply")
    finally:
        s.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isdir(os.path.join(GOLDEN, "refiner_unet")):
        print("SKIP: golden data not found")
        return 77
    t = fl.Tally("fleet_refiner")
    fleet = fl.Fleet("ipc", "refiner")
    models = os.path.join(fleet.dir, "models")
    for d in ("model", "refiner_unet"):
        shutil.copytree(os.path.join(GOLDEN, d), os.path.join(models, d))
    try:
        fleet.start_broker(["--models-root", models])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out"), "--max-models", "2"],
                               wid="inf-rf")
        fleet.wait_registered([w.wid], 20)

        steps, r = streamed(fleet, req())
        d = r.get("data") or {}
        png = (d.get("images") or [{}])[0].get("image", b"")
        frac = close_to(png, ref_image("refiner")) if png else 0
        t.check(r.get("success") and frac >= 0.999,
                "base to 0.8, refiner the rest: diffusers' two-pipeline image (%.4f of values "
                "within 1/255)" % frac, r.get("error"))
        denoise = [s for s in steps if not s[2].startswith("loading")]
        t.check([s[0] for s in denoise] == list(range(1, 11)) and
                all(s[1] == 10 for s in denoise) and d.get("steps") == 10,
                "progress 1..10 of 10 over both stages (and the loads said), reply steps 10", (steps, d.get("steps")))
        text = pngutil.text(png).get("parameters", "") if png else ""
        t.check("Refiner: refiner_unet, Refiner switch at: 0.8" in text and
                d.get("parameters") == text,
                "the A1111 text names the refiner and the switch (and is the reply's parameters)",
                text)

        cs = {"RequestId": "cs-rf", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model", "Refiner": "refiner_unet"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 10},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 128, "Height": 128,
                                           "Seed": 52},
                       "Conditioning": {"Prompt": P, "NegativePrompt": NEG},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        rc = fleet.request(cs, timeout=120)
        ims = (rc.get("Data") or {}).get("Images") or [{}]
        pc = base64.b64decode(ims[0].get("Image") or "")
        t.check(rc.get("Success") is True and pc and pngutil.pixels(pc)[3] == pngutil.pixels(png)[3],
                "C# Model.Refiner: the same pixels", rc.get("Error"))

        if os.access(GEN_BIN, os.X_OK):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "g.png")
                g = subprocess.run([GEN_BIN, "generate", "--model", os.path.join(models, "model"),
                                    "--refiner", os.path.join(models, "refiner_unet"),
                                    "--prompt", P, "--negative", NEG, "--seed", "52", "--steps",
                                    "10", "--cfg", "5", "--scheduler", "EulerDiscreteScheduler",
                                    "--width", "128", "--height", "128", "--dtype", "fp32",
                                    "--out", out, "--quiet"], capture_output=True, timeout=120)
                pg = open(out, "rb").read() if g.returncode == 0 else b""
            t.check(pg and pngutil.pixels(pg)[3] == pngutil.pixels(png)[3] and
                    pngutil.text(pg).get("parameters") == text,
                    "sdxl-gen generate --refiner, the same fields: the same pixels and text",
                    g.stderr[-300:])

        r = fleet.request(req(refiner_model="no_such_refiner"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("field") == "refiner_model" and not r.get("success"),
                "an unknown refiner: an error on refiner_model (%s)" % e.get("message"), e)
        with open(os.path.join(GOLDEN, "inputs", "init_image.png"), "rb") as f:
            init = f.read()
        r = fleet.request(req(init_image=init), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and e.get("field") == "refiner_model",
                "a refiner with init_image: invalid_request on refiner_model", e)
        r = fleet.request(req(refiner={"switch_at": 1.0}), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and e.get("field") == "refiner.switch_at",
                "switch_at 1 is refused naming refiner.switch_at (%s)" % e.get("message"), e)
        r = fleet.request(req(), timeout=120, enc="msgpack")
        t.check(r.get("success") and r["data"]["images"][0]["image"] == png,
                "the worker still serves: the same image again", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
