"""test_fleet_generate - a real generation through the fleet: client ->
sdxl-broker -> sdxl-worker (inference, engine) -> PNG -> client, over the
golden tiny random-weight SDXL model (SDXL_GOLDEN_DIR/model).

The inference worker gets its settings as flags (--models-root,
--outputs-root, --max-models), not from the environment.

Checks: JSON over REQ; msgpack over DEALER with stream: true (progress for
every step, then the reply); the PNG decodes (signature, IHDR) and matches
what `sdxl-gen generate` writes for the same parameters (every chunk but the
whole file byte for byte); determinism; a C#-dialect GenerateSDXL
request gets a C#-shaped reply; a LoRA gets not_available naming the field;
a deadline shorter than the run gets `timeout` and the worker cancels;
model_name with `..` gets invalid_request; inference.status lists the model.
Skips (77) without golden data or without the engine-built binaries.
"""
import base64
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402

GOLDEN = (os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT")
          or os.path.join(fl.SOURCE_ROOT, "..", "shared", "golden"))
MODEL_DIR = os.path.join(GOLDEN, "model")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")

PROMPT = "a lighthouse at dusk"
SEED = 1234
STEPS = 3
SIZE = 64


def png_chunks(data):
    """[(type, payload)] of a PNG; raises ValueError when malformed."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("no PNG signature")
    out, i = [], 8
    while i < len(data):
        n, = struct.unpack(">I", data[i:i + 4])
        typ = data[i + 4:i + 8]
        body = data[i + 8:i + 8 + n]
        crc, = struct.unpack(">I", data[i + 8 + n:i + 12 + n])
        if zlib.crc32(typ + body) & 0xffffffff != crc:
            raise ValueError("bad CRC in %r" % typ)
        out.append((typ, body))
        i += 12 + n
    return out


def png_size(data):
    ch = png_chunks(data)
    if ch[0][0] != b"IHDR":
        raise ValueError("first chunk is not IHDR")
    return struct.unpack(">II", ch[0][1][:8])


def gen_request(extra=None, steps=STEPS, seed=SEED):
    data = {"prompt": PROMPT, "model_name": "model",
            "scheduler": "EulerDiscreteScheduler",
            "hyperparameters": {"num_inference_steps": steps, "seed": seed,
                                "guidance_scale": 7.5},
            "dimensions": {"width": SIZE, "height": SIZE},
            "precision": {"dtype": "fp32"}}
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k].update(v)
            else:
                data[k] = v
    return {"message_type": "inference.generate", "request_id": "g-" + uuid.uuid4().hex[:8],
            "timeout_ms": 120000, "data": data}


def image_bytes(img, enc):
    b = img["image"] if isinstance(img, dict) else img
    return base64.b64decode(b) if enc == "json" else b


def reference_png(tmp):
    out = os.path.join(tmp, "ref.png")
    subprocess.run([GEN_BIN, "generate", "--model", MODEL_DIR, "--prompt", PROMPT,
                    "--seed", str(SEED), "--steps", str(STEPS), "--width", str(SIZE),
                    "--height", str(SIZE), "--cfg", "7.5", "--scheduler",
                    "EulerDiscreteScheduler", "--out", out, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    with open(out, "rb") as f:
        return f.read()


def test_json_req(t, fleet, ref):
    r = fleet.request(gen_request(), timeout=120)
    if not t.check(r.get("success") is True, "json REQ generate succeeds", r.get("error")):
        return None
    d = r["data"]
    t.check(d.get("width") == SIZE and d.get("height") == SIZE and d.get("steps") == STEPS
            and d.get("seed") == SEED, "reply has width/height/steps/seed", d)
    t.check(d.get("model") == "model" and d.get("scheduler") == "EulerDiscreteScheduler",
            "reply names model and scheduler", (d.get("model"), d.get("scheduler")))
    tm = d.get("timings", {})
    t.check(all(k in tm for k in ("load_ms", "encode_ms", "denoise_ms", "decode_ms",
                                  "total_ms")), "reply has timings", tm)
    t.check("total_ms" in r.get("timing", {}), "reply has the broker's timing")
    png = image_bytes(d["images"][0], "json")
    t.check(png_size(png) == (SIZE, SIZE), "PNG decodes with IHDR %dx%d" % (SIZE, SIZE))
    t.check(png == ref, "PNG is byte-identical to what sdxl-gen generate writes")
    return png


def test_msgpack_stream(t, fleet, first_png):
    s = fleet.client(zmq.DEALER)
    req = gen_request()
    req["stream"] = True
    s.send(msgpack.packb(req, use_bin_type=True))
    steps, rates, reply = [], [], None
    while reply is None:
        if not s.poll(120000):
            raise TimeoutError("no reply on the DEALER")
        m = msgpack.unpackb(s.recv(), raw=False)
        if m.get("message_type") == "progress":
            if m.get("message") == "denoising":
                steps.append(m.get("step"))
                rates.append(m.get("it_per_s"))
        else:
            reply = m
    s.close()
    t.check(steps == list(range(1, STEPS + 1)), "progress for every step (msgpack DEALER)",
            steps)
    t.check(all(isinstance(r, float) and r > 0 for r in rates),
            "every denoising progress carries the loop's it_per_s", rates)
    t.check(reply.get("success") is True, "msgpack generate succeeds", reply.get("error"))
    img = reply["data"]["images"][0]["image"]
    t.check(isinstance(img, bytes), "msgpack reply carries the image as bin")
    t.check(img == first_png, "determinism: the same request gives the same PNG")


def test_csharp(t, fleet):
    rid = str(uuid.uuid4())
    req = {"RequestId": rid, "Action": "GenerateSDXL",
           "Data": {"Model": {"Base": "model"},
                    "Scheduler": {"Type": "EulerDiscrete", "Steps": 2},
                    "Hyperparameters": {"GuidanceScale": 5.0, "Width": SIZE, "Height": SIZE,
                                        "Seed": 42},
                    "Conditioning": {"Prompt": "a red fox"},
                    "Precision": {"Dtype": "fp32"},
                    "Output": {"Format": "PNG"}}}
    r = fleet.request(req, timeout=120)
    ok = t.check(r.get("Success") is True and r.get("RequestId") == rid,
                 "C# GenerateSDXL gets a C#-shaped success reply", r.get("Error"))
    if ok:
        ims = r.get("Data", {}).get("Images") or []
        png = base64.b64decode(ims[0]["Image"]) if ims else b""
        t.check(ims and ims[0].get("Format") == "png" and png_size(png) == (SIZE, SIZE),
                "C# reply Data.Images[0].Image is the PNG", ims and list(ims[0]))
    # the seeds' PostProcessing step: Upscale x2 with "ESRGAN" (the golden
    # tiny RRDBNet installed as RealESRGAN_x4plus, then Lanczos to x2), JPEG,
    # the A1111 text in its EXIF
    if os.path.isdir(os.path.join(fleet.dir, "upscalers")):
        req["RequestId"] = rid2 = str(uuid.uuid4())
        req["Data"]["PostProcessing"] = [{"Type": "Upscale", "Factor": 2.0, "Model": "ESRGAN"}]
        req["Data"]["Output"] = {"Format": "JPEG", "Quality": 90}
        r = fleet.request(req, timeout=120, enc="msgpack")
        ims = (r.get("Data") or {}).get("Images") or [{}]
        jpg = ims[0].get("Image") or b""
        t.check(r.get("Success") is True and r.get("RequestId") == rid2 and
                (ims[0].get("Width"), ims[0].get("Height")) == (2 * SIZE, 2 * SIZE) and
                jpg[:3] == b"\xff\xd8\xff" and
                "a red fox\nSteps: 2, Sampler: Euler".encode("utf-16-be") in jpg and
                "RealESRGAN_x4plus" in str((r.get("Data") or {}).get("Upscale")),
                "C# PostProcessing Upscale ESRGAN x2 + JPEG: upscaled image with its A1111 text",
                r.get("Error") or (r.get("Data") or {}).get("Upscale"))
    # a random seed (Seed omitted, or -1) must fit the C# int the reply's
    # Seed is read into; the run uses it (same seed in the image and Data)
    for seed in (None, -1):
        hp = {"GuidanceScale": 5.0, "Width": SIZE, "Height": SIZE}
        if seed is not None:
            hp["Seed"] = seed
        r = fleet.request({"RequestId": str(uuid.uuid4()), "Action": "GenerateSDXL",
                           "Data": {"Model": {"Base": "model"},
                                    "Scheduler": {"Type": "EulerDiscrete", "Steps": 1},
                                    "Hyperparameters": hp, "Conditioning": {"Prompt": "a fox"},
                                    "Precision": {"Dtype": "fp32"}}}, timeout=120)
        d = r.get("Data") or {}
        s_top, ims = d.get("Seed"), d.get("Images") or [{}]
        t.check(r.get("Success") is True and isinstance(s_top, int) and
                0 <= s_top <= 2**31 - 1 and ims[0].get("Seed") == s_top,
                "C# random seed (Seed %s) is drawn in 0..2^31-1: %s" %
                ("omitted" if seed is None else seed, s_top), r.get("Error"))


def test_refusals(t, fleet):
    r = fleet.request(gen_request({"controlnet": [{"model": "x", "image": "iVBORw0KGgo="}]}),
                      timeout=60)
    e = r.get("error") or {}
    t.check(not r.get("success") and "controlnet" in (e.get("field") or ""),
            "a ControlNet that is not there is refused naming it (%s)" % e.get("code"), e)
    r = fleet.request(gen_request({"textual_inversions": [{"name": "x", "token": "<x>"}]}),
                      timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "not_found" and e.get("field") == "textual_inversions[0].name",
            "an embedding that is not there gets not_found naming it", e)
    r = fleet.request(gen_request({"lora": {"models": [{"name": "x", "weight": 0.5}]}}),
                      timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "not_found" and e.get("field") == "lora.models[0].name",
            "a LoRA that is not there gets not_found naming it", e)
    r = fleet.request(gen_request({"prompt_attention": "a1111",
                                   "prompt": "a (castle:1.3) on a [hill] BREAK ((forest))"}),
                      timeout=120)
    d = r.get("data") or {}
    t.check(r.get("success") is True and len(d.get("images") or []) == 1,
            "prompt_attention a1111 (weights, BREAK) generates", r.get("error"))
    r = fleet.request(gen_request({"prompt_attention": "compel"}), timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "not_available" and e.get("field") == "prompt_attention",
            "prompt_attention compel gets not_available naming it", e)
    r = fleet.request(gen_request({"model_name": "../golden/model"}), timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "invalid_request", "model_name with .. gets invalid_request", e)
    r = fleet.request(gen_request({"model_name": "no_such_model"}), timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "not_found", "an unknown model gets not_found", e)


def test_outputs(t, fleet):
    r = fleet.request(gen_request({"output": {"format": "webp", "quality": 80,
                                              "save_path": "demo/"}}), timeout=60)
    d = r.get("data") or {}
    ok = t.check(r.get("success") is True, "webp + save_path succeeds", r.get("error"))
    if ok:
        img = base64.b64decode(d["images"][0]["image"])
        t.check(img[:4] == b"RIFF" and img[8:12] == b"WEBP", "output.format webp gives WebP")
        saved = d.get("saved") or []
        root = os.path.realpath(os.path.join(fleet.dir, "outputs"))
        t.check(len(saved) == 1 and saved[0].startswith(root + "/demo/") and
                os.path.isfile(saved[0]) and open(saved[0], "rb").read() == img,
                "output.save_path writes the image under the outputs root", saved)
    r = fleet.request(gen_request({"output": {"format": "jpeg", "quality": 80}}), timeout=60,
                      enc="msgpack")
    d = r.get("data") or {}
    img = d["images"][0]["image"] if r.get("success") else b""
    t.check(img[:3] == b"\xff\xd8\xff" and b"Exif\x00\x00" in img[:64] and
            ("Steps: %d" % STEPS).encode("utf-16-be") in img,
            "output.format jpeg gives a JPEG with the A1111 text in EXIF", r.get("error"))
    r = fleet.request(gen_request({"output": {"upscale": {"factor": 2, "model": "lanczos"}}}),
                      timeout=60, enc="msgpack")
    d = r.get("data") or {}
    img = d["images"][0] if r.get("success") else {}
    t.check((img.get("width"), img.get("height")) == (2 * SIZE, 2 * SIZE) and
            d.get("upscale") == "lanczos" and png_size(img.get("image", b"")) == (2 * SIZE,
                                                                                     2 * SIZE),
            "output.upscale factor 2 (lanczos) doubles the image", r.get("error") or d.get("upscale"))
    r = fleet.request(gen_request({"output": {"upscale": {"factor": 2, "model": "NoSuch"}}}),
                      timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "invalid_request" and e.get("field") == "output.upscale.model",
            "an unknown upscaler is refused naming output.upscale.model", e)
    r = fleet.request({"message_type": "nosuch.thing"}, timeout=5)
    tm = r.get("timing") or {}
    t.check(all(k in tm for k in ("total_ms", "queued_ms", "attempts")),
            "the broker's own replies carry timing {total_ms, queued_ms, attempts}", tm)


def make_models_root(root):
    """A models root inside the test dir: `model` (a folder whose files link to
    the golden model), `single.safetensors` (a copy of the golden single file)
    with `single.config/` (configs), and `evil`, a symlink out of the root."""
    os.makedirs(os.path.join(root, "model"))
    for name in os.listdir(MODEL_DIR):
        os.symlink(os.path.join(MODEL_DIR, name), os.path.join(root, "model", name))
    single = os.path.join(GOLDEN, "model_single_file", "tiny_sdxl.safetensors")
    have_single = os.path.isfile(single)
    if have_single:
        shutil.copyfile(single, os.path.join(root, "single.safetensors"))
        os.makedirs(os.path.join(root, "single.config"))
        for name in os.listdir(MODEL_DIR):
            os.symlink(os.path.join(MODEL_DIR, name), os.path.join(root, "single.config", name))
    os.symlink(MODEL_DIR, os.path.join(root, "evil"))
    return have_single


def test_model_names(t, fleet, have_single):
    r = fleet.request(gen_request({"model_name": "evil"}), timeout=60)
    e = r.get("error") or {}
    t.check(e.get("code") == "invalid_request" and e.get("field") == "model_name",
            "a model_name symlinked out of the models root gets invalid_request", e)
    if not have_single:
        print("skip: no golden single file")
        return
    r = fleet.request(gen_request({"model_name": "single"}), timeout=120)
    ok = t.check(r.get("success") is True, "a single .safetensors model (with <name>.config/)",
                 r.get("error"))
    if ok:
        png = base64.b64decode(r["data"]["images"][0]["image"])
        t.check(png_size(png) == (SIZE, SIZE), "single-file model gives a %dx%d PNG" %
                (SIZE, SIZE))


def test_timeout(t, fleet, wid):
    req = gen_request(steps=150, seed=5)
    req["data"]["dimensions"] = {"width": 128, "height": 128}
    req["timeout_ms"] = 400
    r = fleet.request(req, timeout=60)
    t.check((r.get("error") or {}).get("code") == "timeout", "a short deadline gets timeout",
            r.get("error"))

    def cancelled():
        st = fleet.request({"message_type": "inference.status"}, timeout=5)
        d = st.get("data") or {}
        eng = d.get("engine") or {}
        # in_flight counts this status request itself
        return (eng.get("cancelled_runs", 0) >= 1 and d.get("in_flight", 2) <= 1 and
                d.get("requests_timed_out", 0) + d.get("requests_cancelled", 0) >= 1) and d
    d = fl.wait_for(cancelled, 30, "the worker to cancel the run")
    t.check(bool(d), "the worker stopped the run (inference.status cancelled_runs)")
    names = [m.get("name") for m in (d.get("engine") or {}).get("loaded_models", [])]
    t.check("model" in names, "inference.status lists the loaded model", names)
    t.check(len(names) == 1, "max_models 1: the other model was unloaded (LRU)", names)
    opts = d.get("options") or {}
    t.check(opts.get("max_models") == {"value": "1", "from": "flag"} and
            (opts.get("models_root") or {}).get("from") == "flag" and
            (d.get("engine") or {}).get("max_models") == 1,
            "the engine's settings came from the worker's flags", opts)
    t.check("model" in (d.get("loaded_models") or []), "the runtime reports the model",
            d.get("loaded_models"))

    def seen():  # HEARTBEAT (every 1 s) carries the models to the broker
        ws = [w for w in fleet.workers() if (w.get("worker_id") or w.get("id")) == wid]
        return ws and "model" in (ws[0].get("models") or [])
    t.check(fl.wait_for(seen, 5, "the broker to see the model"),
            "the broker sees the model for affinity (system.workers)")


def make_upscalers(base):
    """The golden tiny RRDBNet as RealESRGAN_x4plus under an upscalers root."""
    d = os.path.join(base, "upscalers")
    src = os.path.join(os.path.dirname(MODEL_DIR), "upscaler", "rrdbnet_x4.safetensors")
    os.makedirs(d, exist_ok=True)
    if os.path.isfile(src):
        shutil.copy(src, os.path.join(d, "RealESRGAN_x4plus.safetensors"))
    return d


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, GEN_BIN)
    if not os.path.isfile(os.path.join(MODEL_DIR, "model_index.json")):
        print("SKIP: no golden model at %s" % MODEL_DIR)
        return fl.SKIP
    t = fl.Tally("fleet_generate")
    tmp = tempfile.mkdtemp(prefix="sdxl-gen-ref-")
    ref = reference_png(tmp)
    fleet = fl.Fleet("ipc", "generate")
    try:
        fleet.start_broker()
        models = os.path.join(fleet.dir, "models")
        have_single = make_models_root(models)
        # the engine's settings as the worker's own flags (no SDXL_* roots in
        # its environment: they would only be the fallback)
        env = {k: v for k, v in os.environ.items()
               if k not in ("SDXL_MODELS_ROOT", "SDXL_OUTPUTS_ROOT", "SDXL_CONFIG_DIR",
                            "SDXL_MAX_MODELS", "SDXL_THREADS")}
        wid = "inference-" + uuid.uuid4().hex[:6]
        argv = [fl.WORKER_BIN, "--domain", "inference", "--broker", fleet.backend, "--id", wid,
                "--models-root", models, "--outputs-root", os.path.join(fleet.dir, "outputs"),
                "--upscalers-root", make_upscalers(fleet.dir),
                "--max-models", "1"]
        p = fl.Proc("worker " + wid, argv, os.path.join(fleet.dir, "%s.log" % wid), env=env)
        fleet.procs.append(p)
        fleet.wait_registered([wid], 20)
        png = None
        for fn, args in ((test_json_req, (fleet, ref)),):
            print("--- %s" % fn.__name__, flush=True)
            png = fn(t, *args)
        if png is not None:
            t.run(test_msgpack_stream, fleet, png)
        t.run(test_csharp, fleet)
        t.run(test_refusals, fleet)
        t.run(test_outputs, fleet)
        t.run(test_model_names, fleet, have_single)
        t.run(test_timeout, fleet, wid)
        if t.failed:
            fleet.dump_logs(40)
    finally:
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
