#!/usr/bin/python3
"""LoRA through the fleet (native and C# dialect) on the golden tiny model,
with the golden kohya and diffusers LoRA files under the inference worker's
LoRA root:

- lora.models [{lora_kohya, 0.8}], [{lora_diffusers, 0.8}] and both at
  0.8/0.5 give diffusers' images (golden ref/pipeline lora_kohya_08,
  lora_diffusers_08, lora_combined_08_05: every 8-bit value within 1 level
  of diffusers' float image x 255 on >= 99.9% of the values, as the engine's
  pipeline tests state);
- the sets swap on the loaded model with no reload (load_ms 0, lora_ms
  reported): removing them gives the plain image (ref t2i_euler), and going
  back gives the first image byte for byte;
- the C# request's Conditioning.LoRAs [{ModelPath, Weight}] gives the same
  pixels as the native request;
- an unknown LoRA name is not_found on lora.models[0].name listing the near
  match; a file that is no LoRA is refused on lora.models; the worker keeps
  serving. Skips (77) without the golden data."""
import base64
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402
from goldenref import close_to, ref_image  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")


def gen(loras=None):
    d = {"prompt": "a photo of an astronaut riding a horse, highly detailed",
         "negative_prompt": "blurry, low quality", "model_name": "model",
         "scheduler": "EulerDiscreteScheduler",
         "hyperparameters": {"num_inference_steps": 5, "guidance_scale": 5.0, "seed": 42},
         "dimensions": {"width": 128, "height": 128}, "precision": {"dtype": "fp32"}}
    if loras is not None:
        d["lora"] = {"models": [{"name": n, "weight": w} for n, w in loras]}
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": d}


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isdir(os.path.join(GOLDEN, "lora")):
        print("SKIP: golden data not found")
        return 77
    t = fl.Tally("fleet_lora")
    fleet = fl.Fleet("ipc", "lora")
    models = os.path.join(fleet.dir, "models")
    loras = os.path.join(models, "lora")
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(models, "model"))
    os.makedirs(loras)
    for f in ("lora_kohya", "lora_diffusers"):
        shutil.copy(os.path.join(GOLDEN, "lora", f + ".safetensors"), loras)
    # a safetensors file that is no LoRA (the VAE's weights)
    shutil.copy(os.path.join(GOLDEN, "model", "vae", "diffusion_pytorch_model.safetensors"),
                os.path.join(loras, "not_a_lora.safetensors"))
    try:
        fleet.start_broker(["--models-root", models, "--loras-root", loras])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out")], wid="inf-lora")
        fleet.wait_registered([w.wid], 20)

        def run(loras, enc="msgpack"):
            r = fleet.request(gen(loras), timeout=120, enc=enc)
            img = r["data"]["images"][0]["image"] if r.get("success") else b""
            return r, img

        r, kohya = run([("lora_kohya", 0.8)])
        frac = close_to(kohya, ref_image("lora_kohya_08")) if kohya else 0
        t.check(frac >= 0.999, "lora_kohya 0.8: diffusers' image (%.4f of values within 1/255)"
                % frac, r.get("error"))
        tm = (r.get("data") or {}).get("timings") or {}
        t.check(r.get("data", {}).get("loras") == [{"name": "lora_kohya", "weight": 0.8}] and
                "lora_ms" in tm, "the reply names the LoRAs and times the fuse (%.1f ms)" %
                tm.get("lora_ms", -1), r.get("data", {}).get("loras"))
        r, diff = run([("lora_diffusers", 0.8)])
        frac = close_to(diff, ref_image("lora_diffusers_08")) if diff else 0
        load = ((r.get("data") or {}).get("timings") or {}).get("load_ms")
        t.check(frac >= 0.999 and load == 0, "lora_diffusers 0.8, swapped on the loaded model "
                "(load_ms %s): diffusers' image (%.4f)" % (load, frac), r.get("error"))
        r, comb = run([("lora_kohya", 0.8), ("lora_diffusers", 0.5)])
        frac = close_to(comb, ref_image("lora_combined_08_05")) if comb else 0
        t.check(frac >= 0.999, "both at 0.8 / 0.5: diffusers' combined image (%.4f)" % frac,
                r.get("error"))
        r, plain = run(None)
        frac = close_to(plain, ref_image("t2i_euler")) if plain else 0
        t.check(frac >= 0.999, "no LoRA after them: the plain image again (%.4f): the weights "
                "were restored" % frac, r.get("error"))
        r, again = run([("lora_kohya", 0.8)])
        t.check(again == kohya, "lora_kohya 0.8 once more: the first image, byte for byte",
                r.get("error"))

        cs = {"RequestId": "cs-lora", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 5},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 128, "Height": 128,
                                           "Seed": 42},
                       "Conditioning": {"Prompt": gen()["data"]["prompt"],
                                        "NegativePrompt": gen()["data"]["negative_prompt"],
                                        "LoRAs": [{"ModelPath": "lora_kohya", "Weight": 0.8}]},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        r = fleet.request(cs, timeout=120)
        ims = (r.get("Data") or {}).get("Images") or [{}]
        png = base64.b64decode(ims[0].get("Image") or "")
        t.check(r.get("Success") is True and png and
                pngutil.pixels(png)[3] == pngutil.pixels(kohya)[3],
                "C# Conditioning.LoRAs [{ModelPath, Weight}]: the native request's pixels",
                r.get("Error"))

        r, _ = run([("lora_kohay", 0.8)])
        e = r.get("error") or {}
        t.check(e.get("code") == "not_found" and e.get("field") == "lora.models[0].name" and
                "lora_kohya" in e.get("message", ""),
                "an unknown LoRA: not_found naming the field and the near match (%s)" %
                e.get("message"), e)
        r, _ = run([("not_a_lora", 1.0)])
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and e.get("field") == "lora.models",
                "a file that is no LoRA: invalid_request (%s)" % e.get("message"), e)
        r, img = run(None)
        t.check(img == plain, "the worker still serves, the plain image", r.get("error"))

        # the split path: the conditioning worker fuses the LoRA's text-encoder
        # part, the inference worker its UNet part: the one-hop image
        c = fleet.start_worker("conditioning", ["--models-root", models], wid="cond-lora")
        fleet.wait_registered([c.wid], 20)
        req = gen([("lora_kohya", 0.8), ("lora_diffusers", 0.5)])
        e = fleet.request(dict(req, message_type="conditioning.encode_prompt"), timeout=120,
                          enc="msgpack")
        d = dict(req["data"], embeddings=(e.get("data") or {}).get("tensors"))
        r = fleet.request({"message_type": "inference.denoise", "timeout_ms": 120000, "data": d},
                          timeout=120, enc="msgpack")
        split = r["data"]["images"][0]["image"] if r.get("success") else b""
        t.check(split == comb, "split path with two LoRAs (encode_prompt -> denoise): the "
                "one-hop image byte for byte", (e.get("error"), r.get("error")))
        e = fleet.request({"message_type": "conditioning.encode_prompt",
                           "data": gen([("lora_kohay", 1.0)])["data"]}, timeout=60)
        err = e.get("error") or {}
        t.check(err.get("code") == "not_found" and err.get("field") == "lora.models[0].name",
                "conditioning: an unknown LoRA is not_found naming the field", err)
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
