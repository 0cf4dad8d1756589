#!/usr/bin/python3
"""vae_model through the fleet: the golden tiny model with another VAE of the
same shapes (the VAE of `sdxl-gen make-tiny`, a diffusers vae/ folder under
the worker's VAE root):

- vae_model "tinyvae" gives another image than the checkpoint's VAE, the
  same pixels as `sdxl-gen generate --vae` for the same request (one
  request, one image), and the reply names it;
- switching back and forth on the loaded model (load_ms 0) gives each image
  again byte for byte (the checkpoint's VAE is kept while the other runs);
- the C# Model.Vae maps to it; an unknown name is not_found on vae_model with
  the near match; a folder that holds no VAE is refused on vae_model; the
  worker keeps serving.
Skips (77) without the golden data or sdxl-gen."""
import base64
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")


def req(vae=None):
    d = {"prompt": "a lighthouse at dusk", "model_name": "model",
         "scheduler": "EulerDiscreteScheduler",
         "hyperparameters": {"num_inference_steps": 3, "guidance_scale": 5.0, "seed": 9},
         "dimensions": {"width": 64, "height": 64}, "precision": {"dtype": "fp32"}}
    if vae:
        d["vae_model"] = vae
    return {"message_type": "inference.generate", "timeout_ms": 120000, "data": d}


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isdir(os.path.join(GOLDEN, "model")) or not os.access(GEN_BIN, os.X_OK):
        print("SKIP: golden data or sdxl-gen not found")
        return 77
    t = fl.Tally("fleet_vae")
    fleet = fl.Fleet("ipc", "vae")
    models = os.path.join(fleet.dir, "models")
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(models, "model"))
    tiny = os.path.join(fleet.dir, "tiny")
    subprocess.run([GEN_BIN, "make-tiny", tiny, "--seed", "5"], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    vaes = os.path.join(models, "vae")
    os.makedirs(vaes)
    shutil.copytree(os.path.join(tiny, "vae"), os.path.join(vaes, "tinyvae"))
    shutil.copytree(os.path.join(tiny, "text_encoder"), os.path.join(vaes, "not_a_vae"))
    try:
        fleet.start_broker(["--models-root", models, "--vaes-root", vaes])
        w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                             os.path.join(fleet.dir, "out")], wid="inf-vae")
        fleet.wait_registered([w.wid], 20)

        def run(vae=None):
            r = fleet.request(req(vae), timeout=120, enc="msgpack")
            return r, (r["data"]["images"][0]["image"] if r.get("success") else b"")

        r0, plain = run()
        r1, other = run("tinyvae")
        t.check(plain and other and pngutil.pixels(plain)[3] != pngutil.pixels(other)[3] and
                r1["data"].get("vae_model") == "tinyvae",
                "vae_model tinyvae: another image, the reply names the VAE",
                (r0.get("error"), r1.get("error")))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "g.png")
            g = subprocess.run([GEN_BIN, "generate", "--model", os.path.join(models, "model"),
                                "--vae", os.path.join(vaes, "tinyvae"), "--prompt",
                                "a lighthouse at dusk", "--seed", "9", "--steps", "3", "--cfg",
                                "5", "--scheduler", "EulerDiscreteScheduler", "--width", "64",
                                "--height", "64", "--dtype", "fp32", "--out", out, "--quiet"],
                               capture_output=True, timeout=120)
            pg = open(out, "rb").read() if g.returncode == 0 else b""
        t.check(pg and pngutil.pixels(pg)[3] == pngutil.pixels(other)[3],
                "sdxl-gen generate --vae, the same request: the same pixels", g.stderr[-300:])
        r2, back = run()
        r3, again = run("tinyvae")
        loads = [((x.get("data") or {}).get("timings") or {}).get("load_ms") for x in (r2, r3)]
        t.check(back == plain and again == other and loads == [0, 0],
                "switching VAEs on the loaded model (load_ms %s): each image again, byte for byte"
                % loads, (r2.get("error"), r3.get("error")))
        cs = {"RequestId": "cs-vae", "Action": "GenerateSDXL",
              "Data": {"Model": {"Base": "model", "Vae": "tinyvae"},
                       "Scheduler": {"Type": "EulerDiscrete", "Steps": 3},
                       "Hyperparameters": {"GuidanceScale": 5.0, "Width": 64, "Height": 64,
                                           "Seed": 9},
                       "Conditioning": {"Prompt": "a lighthouse at dusk"},
                       "Precision": {"Dtype": "fp32"}, "Output": {"Format": "PNG"}}}
        rc = fleet.request(cs, timeout=120)
        ims = (rc.get("Data") or {}).get("Images") or [{}]
        pc = base64.b64decode(ims[0].get("Image") or "")
        t.check(rc.get("Success") is True and pc and
                pngutil.pixels(pc)[3] == pngutil.pixels(other)[3],
                "C# Model.Vae: the same pixels as the native request", rc.get("Error"))
        r, _ = run("tinyvea")
        e = r.get("error") or {}
        t.check(e.get("code") == "not_found" and e.get("field") == "vae_model" and
                "tinyvae" in e.get("message", ""),
                "an unknown VAE: not_found on vae_model with the near match (%s)" %
                e.get("message"), e)
        r, _ = run("not_a_vae")
        e = r.get("error") or {}
        t.check(not r.get("success") and e.get("field") == "vae_model",
                "a folder that holds no VAE: refused on vae_model (%s: %s)" %
                (e.get("code"), e.get("message")), e)
        r, img = run()
        t.check(img == plain, "the worker still serves, the checkpoint's VAE", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
