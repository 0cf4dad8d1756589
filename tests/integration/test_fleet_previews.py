#!/usr/bin/python3
"""Live previews (output.preview) through a real broker and inference
worker on the golden tiny model, with the golden TAESD as the worker's
--preview-decoder:

- a streaming request with output.preview {every: 2} gets a PROGRESS
  "preview" after steps 2 and 4 of 5 (not after the last), each carrying an
  encoded image of the request's size (JPEG by default, PNG when asked) that
  is not the final image;
- the final image is the one the same request gives without previews
  (previews never change the result), and the reply counts them;
- a C# client gets them inside its Progress object (Progress.Preview);
- sdxl-gen generate --preview-every writes the same previews, byte for byte;
- a worker without a decoder answers not_available naming output.preview;
- a --preview-decoder that does not exist stops the worker at start (exit 2,
  naming the option).
Skips (77) without golden data or the engine-built binaries."""
import json
import os
import struct
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402

GOLDEN = (os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT")
          or os.path.join(fl.SOURCE_ROOT, "..", "shared", "golden"))
MODEL_DIR = os.path.join(GOLDEN, "model")
TAESD_DIR = os.path.join(GOLDEN, "taesd")
SIZE = 64
STEPS = 5


def request(preview=None, rid=None):
    data = {"prompt": "a lighthouse at dusk", "model_name": "model",
            "hyperparameters": {"num_inference_steps": STEPS, "seed": 77, "guidance_scale": 5.0},
            "dimensions": {"width": SIZE, "height": SIZE}, "precision": {"dtype": "fp32"}}
    if preview is not None:
        data["output"] = {"preview": preview}
    return {"message_type": "inference.generate", "request_id": rid or "p-" + uuid.uuid4().hex[:8],
            "timeout_ms": 120000, "stream": True, "data": data}


def stream(fleet, req, enc="msgpack"):
    """(progress messages, final reply) over a DEALER."""
    s = fleet.client(zmq.DEALER)
    try:
        s.send(msgpack.packb(req, use_bin_type=True) if enc == "msgpack" else
               json.dumps(req).encode())
        prog = []
        while True:
            if not s.poll(120000):
                raise TimeoutError("no reply")
            m = fl.decode(s.recv_multipart()[-1])
            if m.get("message_type") == "progress" or m.get("Type") == "progress":
                prog.append(m)
            else:
                return prog, m
    finally:
        s.close()


def png_size(data):
    return struct.unpack(">II", data[16:24])


def jpeg_size(data):
    """(width, height) from the first SOFn marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, seg = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isfile(os.path.join(MODEL_DIR, "model_index.json")) or \
            not os.path.isfile(os.path.join(TAESD_DIR, "config.json")):
        print("SKIP: no golden model or TAESD at %s" % GOLDEN)
        return fl.SKIP
    t = fl.Tally("fleet_previews")
    fleet = fl.Fleet("ipc", "previews")
    try:
        models = os.path.join(fleet.dir, "models")
        os.makedirs(os.path.join(models, "model"))
        for name in os.listdir(MODEL_DIR):  # a folder whose entries link to the golden model
            os.symlink(os.path.join(MODEL_DIR, name), os.path.join(models, "model", name))
        fleet.start_broker()
        common = ["--models-root", models, "--outputs-root", os.path.join(fleet.dir, "out")]
        w = fleet.start_worker("inference", common + ["--preview-decoder", TAESD_DIR],
                               wid="inf-preview")
        fleet.wait_registered([w.wid], 30)

        prog, plain = stream(fleet, request())
        t.check(plain.get("success") is True and
                not any(m.get("message") == "preview" for m in prog),
                "without output.preview: no previews", plain.get("error"))
        base = pngutil.pixels(plain["data"]["images"][0]["image"])

        prog, rep = stream(fleet, request({"every": 2}))
        pv = [m for m in prog if m.get("message") == "preview"]
        t.check(rep.get("success") is True and [m.get("step") for m in pv] == [2, 4] and
                all(m.get("total") == STEPS for m in pv),
                "every 2 of %d steps: previews after steps 2 and 4, not after the last" % STEPS,
                [(m.get("step"), m.get("total")) for m in pv])
        jp = [m.get("preview") for m in pv]
        t.check(all(isinstance(b, bytes) and b[:3] == b"\xff\xd8\xff" and
                    jpeg_size(b) == (SIZE, SIZE) for b in jp) and
                all(m.get("preview_format") == "jpeg" and m.get("preview_width") == SIZE and
                    m.get("preview_height") == SIZE for m in pv),
                "each is a %dx%d JPEG (the default format) with its size and format" %
                (SIZE, SIZE), [(len(b or b""), jpeg_size(b or b"")) for b in jp])
        t.check(rep.get("success") and pngutil.pixels(rep["data"]["images"][0]["image"]) == base,
                "the final image is the one the request gives without previews")
        t.check(rep.get("success") and rep["data"].get("previews") == 2 and
                "preview_ms" in rep["data"].get("timings", {}),
                "the reply counts them and times them (%s ms)" %
                rep.get("data", {}).get("timings", {}).get("preview_ms"),
                rep.get("data", {}).get("previews"))

        # sdxl-gen generate --preview-every: the same previews and the same image
        gen = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
        if os.access(gen, os.X_OK) and rep.get("success"):
            d = os.path.join(fleet.dir, "gen")
            os.makedirs(d)
            p = subprocess.run([gen, "generate", "--model", MODEL_DIR, "--prompt",
                                "a lighthouse at dusk", "--steps", str(STEPS), "--seed", "77",
                                "--cfg", "5.0", "--width", str(SIZE), "--height", str(SIZE),
                                "--dtype", "fp32", "--out", os.path.join(d, "img.png"),
                                "--preview-every", "2", "--preview-decoder", TAESD_DIR,
                                "--preview-dir", d, "--quiet"],
                               capture_output=True, text=True, timeout=120)
            files = sorted(f for f in os.listdir(d) if f.startswith("preview-"))
            same = p.returncode == 0 and files == ["preview-002.jpg", "preview-004.jpg"] and \
                [open(os.path.join(d, f), "rb").read() for f in files] == jp
            t.check(same and pngutil.pixels(open(os.path.join(d, "img.png"), "rb").read()) == base,
                    "sdxl-gen generate --preview-every 2 writes the same two previews, byte for "
                    "byte, and the same image", (p.returncode, files, p.stderr[-300:]))

        prog, rep = stream(fleet, request({"every": 1, "format": "png"}))
        pv = [m for m in prog if m.get("message") == "preview"]
        pngs = [m.get("preview") for m in pv]
        ok = len(pngs) == STEPS - 1 and all(b[:8] == b"\x89PNG\r\n\x1a\n" and
                                            png_size(b) == (SIZE, SIZE) for b in pngs)
        t.check(ok, "every 1, png: %d PNG previews of %dx%d" % (len(pngs), SIZE, SIZE),
                [len(b) for b in pngs])
        if ok:
            first, last = pngutil.pixels(pngs[0]), pngutil.pixels(pngs[-1])
            t.check(first != last and last != base,
                    "the previews change as the loop goes, and none is the final image")

        # the C# dialect: Progress {Step, Total, Message "preview", Preview, ...}
        cs = {"Action": "generate_sdxl", "RequestId": "cs-preview",
              "Data": {"Prompt": "a lighthouse at dusk", "ModelName": "model",
                       "Hyperparameters": {"NumInferenceSteps": STEPS, "Seed": 77,
                                           "GuidanceScale": 5.0},
                       "Dimensions": {"Width": SIZE, "Height": SIZE},
                       "Precision": {"Dtype": "fp32"},
                       "Output": {"Preview": {"Every": 2}}},
              "Stream": True}
        prog, rep = stream(fleet, cs)
        cpv = [m.get("Progress", {}) for m in prog if m.get("Progress", {}).get("Message") ==
               "preview"]
        t.check(rep.get("Success") is True and [p.get("Step") for p in cpv] == [2, 4] and
                all(isinstance(p.get("Preview"), bytes) and p.get("PreviewFormat") == "jpeg"
                    for p in cpv) and all("Success" not in m for m in prog),
                "C# client: Progress.Preview (bytes) after steps 2 and 4, no Success on "
                "progress", [(p.get("Step"), type(p.get("Preview")).__name__) for p in cpv] or
                (rep.get("Error") or rep.get("error")))

        # a worker without a decoder
        w2 = fleet.start_worker("inference", common, wid="inf-plain")
        fleet.wait_registered([w2.wid], 30)
        w.signal(15)
        w.wait(15)
        fl.wait_for(lambda: w.wid not in fleet.worker_ids(), 10, "the preview worker to go")
        _, rep = stream(fleet, request({"every": 2}))
        err = rep.get("error") or {}
        t.check(rep.get("success") is False and err.get("code") == "not_available" and
                err.get("field") == "output.preview" and "--preview-decoder" in
                err.get("message", ""),
                "a worker without a decoder: not_available naming output.preview (%s)" %
                err.get("message"), rep)
        _, rep = stream(fleet, request({"every": 0}))
        err = rep.get("error") or {}
        t.check(err.get("code") == "invalid_request" and "every" in (err.get("field") or ""),
                "output.preview.every 0 is refused by the schema (%s)" % err.get("message"), rep)

        # a decoder path that does not exist
        p = subprocess.run([fl.WORKER_BIN, "--domain", "inference", "--broker", fleet.backend,
                            "--id", "inf-bad"] + common +
                           ["--preview-decoder", os.path.join(fleet.dir, "no-such-taesd")],
                           capture_output=True, text=True, timeout=60)
        t.check(p.returncode == 2 and "preview-decoder" in p.stderr + p.stdout,
                "--preview-decoder that does not exist: exit %d naming the option" %
                p.returncode, (p.stderr + p.stdout)[-300:])
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
