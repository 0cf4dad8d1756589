#!/usr/bin/python3
"""Textual inversion through the fleet (native and C# dialect) on the golden
tiny model, with the golden ti/tiny_ti.safetensors (clip_l/clip_g, 2 vectors)
under the inference worker's embeddings root:

- textual_inversions [{tiny_ti, "<tiny-ti>"}] with the prompt
  "a photo of <tiny-ti> on a table" (seed 55, Euler, 5 steps) gives
  diffusers' image (golden ref/pipeline/textual_inversion: every 8-bit value
  within 1 level of diffusers' float image x 255 on >= 99.9% of the values,
  as the engine's pipeline tests state);
- the same request without the embedding gives another image (the token is
  plain text again: the tables were restored), and with it again the first
  image byte for byte;
- the C# request's Conditioning.TextualInversions [{Name, Token}] gives the
  same pixels as the native request;
- an unknown name is not_found on textual_inversions[0].name listing the
  near match; a file that is no SDXL embedding (an SD1.x single-tensor file,
  the VAE's weights) is refused on textual_inversions; the worker keeps
  serving. Skips (77) without the golden data."""
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
PROMPT = "a photo of <tiny-ti> on a table"
NEGATIVE = "blurry, low quality"


def ref_image(name):
    """The golden image_np [1, H, W, 3] float32 in [0, 1], as a flat array."""
    with open(os.path.join(GOLDEN, "ref", "pipeline", name + ".safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        body = f.read()
    a, b = h["image_np"]["data_offsets"]
    v = array.array("f")
    v.frombytes(body[a:b])
    return v


def close_to(png, ref):
    w, h, bpp, px = pngutil.pixels(png)
    if bpp != 3 or len(px) != len(ref):
        return 0.0
    ok = sum(1 for p, r in zip(px, ref) if abs(p - r * 255.0) <= 1.0)
    return ok / len(ref)


def write_sd1(path):
    """An SD1.x-style embedding: one emb_params [1, 16] tensor of zeros."""
    hdr = json.dumps({"emb_params": {"dtype": "F32", "shape": [1, 16],
                                     "data_offsets": [0, 64]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + bytes(64))


def gen(tis=None):
    d = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "model_name": "model",
         "scheduler": "EulerDiscreteScheduler",
         "hyperparameters": {"num_inference_steps": 5, "guidance_scale": 5.0, "seed": 55},
         "dimensions": {"width": 128, "height": 128}, "precision": {"dtype": "fp32"}}
    if tis is not None:
        d["textual_inversions"] = [{"name": n, "token": t} for n, t in tis]
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": d}


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isfile(os.path.join(GOLDEN, "ti", "tiny_ti.safetensors")):
        print("SKIP: golden data not found")
        return 77
    t = fl.Tally("fleet_ti")
    fleet = fl.Fleet("ipc", "ti")
    models = os.path.join(fleet.dir, "models")
    emb = os.path.join(models, "embeddings")
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(models, "model"))
    os.makedirs(emb)
    shutil.copy(os.path.join(GOLDEN, "ti", "tiny_ti.safetensors"), emb)
    write_sd1(os.path.join(emb, "sd1_style.safetensors"))
    shutil.copy(os.path.join(GOLDEN, "model", "vae", "diffusion_pytorch_model.safetensors"),
                os.path.join(emb, "not_an_embedding.safetensors"))
    try:
        fleet.start_broker(["--models-root", models, "--embeddings-root", emb])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out")], wid="inf-ti")
        fleet.wait_registered([w.wid], 20)

        def run(tis, enc="msgpack"):
            r = fleet.request(gen(tis), timeout=120, enc=enc)
            img = r["data"]["images"][0]["image"] if r.get("success") else b""
            return r, img

        r, ti = run([("tiny_ti", "<tiny-ti>")])
        frac = close_to(ti, ref_image("textual_inversion")) if ti else 0
        t.check(frac >= 0.999, "tiny_ti as <tiny-ti>: diffusers' image (%.4f of values within "
                "1/255)" % frac, r.get("error"))
        r, plain = run(None)
        t.check(plain and plain != ti, "without it: another image (the token is text again)",
                r.get("error"))
        r, again = run([("tiny_ti", "<tiny-ti>")])
        load = ((r.get("data") or {}).get("timings") or {}).get("load_ms")
        t.check(again == ti and load == 0, "with it again, no reload (load_ms %s): the first "
                "image byte for byte" % load, r.get("error"))

        cs = {"RequestId": "cs-ti", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 5},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 128, "Height": 128,
                                           "Seed": 55},
                       "Conditioning": {"Prompt": PROMPT, "NegativePrompt": NEGATIVE,
                                        "TextualInversions": [{"Name": "tiny_ti",
                                                               "Token": "<tiny-ti>"}]},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        r = fleet.request(cs, timeout=120)
        ims = (r.get("Data") or {}).get("Images") or [{}]
        png = base64.b64decode(ims[0].get("Image") or "")
        t.check(r.get("Success") is True and png and
                pngutil.pixels(png)[3] == pngutil.pixels(ti)[3],
                "C# Conditioning.TextualInversions [{Name, Token}]: the native request's pixels",
                r.get("Error"))

        r, _ = run([("tiny_tj", "<tiny-ti>")])
        e = r.get("error") or {}
        t.check(e.get("code") == "not_found" and
                e.get("field") == "textual_inversions[0].name" and
                "tiny_ti" in e.get("message", ""),
                "an unknown embedding: not_found naming the field and the near match (%s)" %
                e.get("message"), e)
        for name in ("sd1_style", "not_an_embedding"):
            r, _ = run([(name, "<x>")])
            e = r.get("error") or {}
            t.check(e.get("code") == "invalid_request" and
                    (e.get("field") or "").startswith("textual_inversions") and
                    "SDXL" in e.get("message", ""),
                    "%s: refused, not an SDXL embedding (%s)" % (name, e.get("message")), e)
        r, img = run([("tiny_ti", "<tiny-ti>")])
        t.check(img == ti, "the worker still serves, the same image", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
