#!/usr/bin/python3
"""The seeds' example EnhancedSDXLRequest, as schemas/csharp_enhanced_request.json
ships it, sent in the C# dialect (Action GenerateSDXL, PascalCase JSON) to a
real broker and inference worker, with the golden tiny files installed
under the names the example uses:

  Model.Base "cyberrealisticPony_v125"      golden model/ (diffusers folder)
  Model.Refiner "stabilityai/sdxl-refiner"  golden refiner_unet/ (a UNet alone)
  Model.Vae "custom/vae-model"              golden model/vae/ (a VAE folder)
  LoRAs "dragon_detail_lora"                golden lora/lora_kohya.safetensors
  ControlNets "canny_controlnet"            golden controlnet/, with the golden
                                            control image (the example's
                                            "iVBORw0KGgo=" is only a PNG header)
  PostProcessing Upscale x2 "ESRGAN"        golden upscaler/rrdbnet_x2 as
                                            RealESRGAN_x2plus

Two values are changed so that the tiny models run in seconds on a CPU:
Width/Height 1024 -> 256 (the upscale makes 512), Precision fp32. Checked:
the reply succeeds, the image is 512x512 PNG, saved under Output.SavePath,
and it carries the A1111 text: prompt, negative prompt, 25 steps, DPM++ 2M,
seed 42, the model and the refiner with its switch. Skips (77) without the
golden data."""
import base64
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")


def example():
    with open(os.path.join(fl.SOURCE_ROOT, "schemas", "csharp_enhanced_request.json")) as f:
        return json.load(f)["examples"][0]


def install(root):
    """The golden files under the example's names; returns the roots."""
    g = lambda *p: os.path.join(GOLDEN, *p)  # noqa: E731
    r = {k: os.path.join(root, k) for k in ("models", "vae", "lora", "controlnet", "upscalers")}
    shutil.copytree(g("model"), os.path.join(r["models"], "cyberrealisticPony_v125"))
    shutil.copytree(g("refiner_unet"), os.path.join(r["models"], "stabilityai", "sdxl-refiner"))
    shutil.copytree(g("model", "vae"), os.path.join(r["vae"], "custom", "vae-model"))
    os.makedirs(r["lora"])
    shutil.copy(g("lora", "lora_kohya.safetensors"),
                os.path.join(r["lora"], "dragon_detail_lora.safetensors"))
    shutil.copytree(g("controlnet"), os.path.join(r["controlnet"], "canny_controlnet"))
    os.makedirs(r["upscalers"])
    shutil.copy(g("upscaler", "rrdbnet_x2.safetensors"),
                os.path.join(r["upscalers"], "RealESRGAN_x2plus.safetensors"))
    return r


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    needed = ["model", "refiner_unet", "controlnet", "upscaler", "lora", "inputs"]
    if not GOLDEN or not all(os.path.exists(os.path.join(GOLDEN, d)) for d in needed):
        print("SKIP: golden data not found")
        return 77
    t = fl.Tally("seed_example")
    fleet = fl.Fleet("ipc", "seed-example")
    try:
        r = install(fleet.dir)
        outs = os.path.join(fleet.dir, "outputs-root")
        os.makedirs(outs)
        fleet.start_broker(["--models-root", r["models"], "--vaes-root", r["vae"],
                            "--loras-root", r["lora"], "--controlnets-root", r["controlnet"],
                            "--outputs-root", outs])
        w = fleet.start_worker("inference", [
            "--models-root", r["models"], "--vaes-root", r["vae"], "--loras-root", r["lora"],
            "--controlnets-root", r["controlnet"], "--upscalers-root", r["upscalers"],
            "--outputs-root", outs, "--max-models", "2"], wid="inf-seed")
        fleet.wait_registered([w.wid], 30)

        data = example()
        with open(os.path.join(GOLDEN, "inputs", "control_image.png"), "rb") as f:
            data["Conditioning"]["ControlNets"][0]["ConditioningImage"] = \
                base64.b64encode(f.read()).decode()
        data["Hyperparameters"]["Width"] = data["Hyperparameters"]["Height"] = 256
        data["Precision"] = {"Dtype": "fp32"}
        msg = {"RequestId": "seed-example", "Action": "GenerateSDXL", "Data": data}
        rep = fleet.request(msg, timeout=300)
        d = rep.get("Data") or {}
        ims = d.get("Images") or [{}]
        png = base64.b64decode(ims[0].get("Image") or "")
        t.check(rep.get("Success") is True and png[:8] == b"\x89PNG\r\n\x1a\n",
                "the seeds' EnhancedSDXLRequest runs through the C# dialect: a PNG",
                rep.get("Error"))
        if not png:
            return t.finish()
        px = pngutil.pixels(png)
        t.check(px[:2] == (512, 512), "256x256 upscaled x2 by 'ESRGAN' (RealESRGAN_x2plus): "
                "512x512", px[:2])
        text = pngutil.text(png).get("parameters", "")
        want = ["A majestic dragon soaring over a medieval castle",
                "Negative prompt: blurry, low quality", "Steps: 25", "Sampler: DPM++ 2M",
                "Seed: 42", "Model: cyberrealisticPony_v125",
                "Refiner: stabilityai/sdxl-refiner, Refiner switch at: 0.8"]
        t.check(all(x in text for x in want), "the image carries its A1111 text", text)
        saved = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(outs, "outputs"))
                 for f in fs]
        t.check(len(saved) == 1 and open(saved[0], "rb").read() == png,
                "saved under Output.SavePath (outputs/) in the outputs root", saved)
        t.check(d.get("Seed") == 42 or (ims[0].get("Seed") == 42),
                "the reply names the seed (PascalCase)", {k: d[k] for k in d if k != "Images"})
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
