#!/usr/bin/python3
"""The postprocessing domain through a real broker and worker: upscaling by
upscaler name (the golden tiny RRDBNet files installed as RealESRGAN_x4plus
and RealESRGAN_x2plus under a temporary upscalers root) and with Lanczos,
encoding with A1111 metadata read back by PIL, finalize's atomic save under
the outputs root with its SHA-256, traversal and symlink escapes refused,
unknown names answered with what is there, safety_check not_available, and
the worker still serving after every error. Skips (77) without the golden
data or PIL."""
import hashlib
import io
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

try:
    from PIL import Image
except ImportError:
    print("SKIP: needs python3-pil")
    sys.exit(77)

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")


def png_bytes(w, h):
    im = Image.new("RGB", (w, h))
    im.putdata([((x * 7) % 256, (y * 5) % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def user_comment(im):
    raw = im.getexif().get_ifd(0x8769).get(0x9286)
    return raw[8:].decode("utf-16-be") if isinstance(raw, bytes) else None


def call(fleet, mtype, data, enc="msgpack", timeout=60):
    return fleet.request({"message_type": mtype, "data": data}, timeout=timeout, enc=enc)


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    up = os.path.join(GOLDEN, "upscaler")
    if not os.path.isdir(up):
        print("SKIP: no golden upscaler models")
        return 77
    t = fl.Tally("fleet_postprocessing")
    fleet = fl.Fleet("ipc", "post")
    roots = os.path.join(fleet.dir, "upscalers")
    outs = os.path.join(fleet.dir, "outputs")
    os.makedirs(roots)
    shutil.copy(os.path.join(up, "rrdbnet_x4.safetensors"),
                os.path.join(roots, "RealESRGAN_x4plus.safetensors"))
    shutil.copy(os.path.join(up, "rrdbnet_x2.safetensors"),
                os.path.join(roots, "RealESRGAN_x2plus.safetensors"))
    try:
        fleet.start_broker()
        w = fleet.start_worker("postprocessing", ["--upscalers-root", roots, "--outputs-root", outs,
                                                  "--tile", "32"], wid="post-1")
        fleet.wait_registered([w.wid], 15)
        src = png_bytes(40, 24)

        r = call(fleet, "postprocessing.upscale", {"image": src, "model": "ESRGAN", "factor": 4})
        d = r.get("data") or {}
        im = Image.open(io.BytesIO(d.get("image", b""))) if r.get("success") else None
        t.check(im is not None and im.size == (160, 96) and "RealESRGAN_x4plus x4" in d["method"],
                "upscale 'ESRGAN' x4 picks RealESRGAN_x4plus (tiled 32): 40x24 -> 160x96", r if
                not im else d["method"])
        r = call(fleet, "postprocessing.upscale", {"image": src, "model": "ESRGAN", "factor": 2})
        d = r.get("data") or {}
        t.check(r.get("success") and d.get("width") == 80 and "x2plus" in d.get("method", ""),
                "upscale 'ESRGAN' x2 picks RealESRGAN_x2plus", d.get("method") or r)
        r = call(fleet, "postprocessing.upscale", {"image": src, "model": "realesrgan_x4plus",
                                                   "factor": 3})
        d = r.get("data") or {}
        t.check(r.get("success") and (d.get("width"), d.get("height")) == (120, 72) and
                d.get("method", "").endswith("+ lanczos"),
                "factor 3 with an x4 model: model, then Lanczos to the factor", d.get("method") or r)
        import base64
        r = call(fleet, "postprocessing.upscale", {"image": base64.b64encode(src).decode(),
                                                   "factor": 2}, enc="json")
        t.check(r.get("success") and r["data"]["method"] == "lanczos" and r["data"]["width"] == 80,
                "no model named: Lanczos (JSON client, base64 image)", r.get("error"))
        r = call(fleet, "postprocessing.upscale", {"image": src, "model": "SwinIR"})
        e = r.get("error") or {}
        t.check(e.get("code") == "not_found" and e.get("field") == "model" and
                "RealESRGAN_x2plus" in e.get("message", "") and "RealESRGAN_x4plus" in
                e.get("message", ""), "an unknown upscaler lists what is there", e)
        r = call(fleet, "postprocessing.upscale", {"image": b"not an image"})
        t.check((r.get("error") or {}).get("field") == "image", "undecodable image refused",
                r.get("error"))

        params = {"prompt": "a lighthouse, dusk", "negative_prompt": "blurry", "steps": 20,
                  "scheduler": "DPMSolverMultistepScheduler", "use_karras_sigmas": True,
                  "guidance_scale": 7.5, "seed": 42, "model_name": "sdxl_base",
                  "model_hash": "31e35c80fc"}
        want = ("a lighthouse, dusk\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, "
                "CFG scale: 7.5, Seed: 42, Size: 40x24, Model hash: 31e35c80fc, Model: sdxl_base")
        for fmt in ("png", "jpeg", "webp"):
            r = call(fleet, "postprocessing.encode", {"image": src, "format": fmt, "quality": 90,
                                                      "metadata": params})
            d = r.get("data") or {}
            ok = r.get("success") and hashlib.sha256(d["image"]).hexdigest() == d["sha256"]
            text = None
            if ok:
                im = Image.open(io.BytesIO(d["image"]))
                text = im.text.get("parameters") if fmt == "png" else user_comment(im)
            t.check(ok and text == want, "encode %s: PIL reads the A1111 text, sha256 matches" %
                    fmt, text or r)

        r = call(fleet, "postprocessing.finalize", {
            "image": src, "upscale": {"factor": 2, "model": "RealESRGAN_x2plus"},
            "format": "webp", "lossless": True, "metadata": params, "save_path": "run1/"})
        d = r.get("data") or {}
        path = d.get("path", "")
        ok = r.get("success") and path.startswith(os.path.realpath(outs) + "/run1/") and \
            os.path.isfile(path)
        body = open(path, "rb").read() if ok else b""
        t.check(ok and hashlib.sha256(body).hexdigest() == d["sha256"] and body == d["image"],
                "finalize: upscale, encode, save under the outputs root; sha256 of the file",
                r if not ok else path)
        if ok:
            im = Image.open(path)
            t.check(im.size == (80, 48) and user_comment(im) == want,
                    "finalize: the saved WebP carries the text (Size: the generation's)",
                    user_comment(im))
            leftovers = [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f]
            t.check(not leftovers, "no temporary file left behind", leftovers)
        r = call(fleet, "postprocessing.finalize", {"image": src, "save_path": "named.jpg",
                                                    "format": "jpeg", "return_image": False})
        d = r.get("data") or {}
        t.check(r.get("success") and d.get("path", "").endswith("/named.jpg") and
                "image" not in d, "finalize to a named file, without the bytes back", r)

        os.symlink("/tmp", os.path.join(outs, "escape"))
        for sp, what in (("../evil.png", "'..'"), ("/etc/evil.png", "an absolute path elsewhere"),
                         ("escape/evil.png", "a symlink out of the root")):
            r = call(fleet, "postprocessing.finalize", {"image": src, "save_path": sp})
            e = r.get("error") or {}
            t.check(e.get("code") == "invalid_request" and e.get("field") == "save_path",
                    "save_path through %s refused" % what, e)
        t.check(not os.path.exists("/tmp/evil.png") and not os.path.exists(
            os.path.join(fleet.dir, "evil.png")), "nothing written outside the root")
        newdir = "sdxl-post-%d" % os.getpid()
        r = call(fleet, "postprocessing.finalize", {"image": src,
                                                    "save_path": "escape/%s/x.png" % newdir})
        t.check((r.get("error") or {}).get("field") == "save_path" and
                not os.path.exists("/tmp/" + newdir),
                "no folder is made through a symlink out of the root", r.get("error"))
        r = call(fleet, "postprocessing.finalize", {"image": src, "save_path": "x.jpg",
                                                    "format": "png"})
        e = r.get("error") or {}
        t.check(e.get("field") == "save_path" and ".jpg" in e.get("message", ""),
                "a save_path extension that is not the format's is refused", e)
        r = call(fleet, "postprocessing.upscale", {"image": src, "factor": float("nan")})
        t.check((r.get("error") or {}).get("field") == "factor", "a NaN factor is refused",
                r.get("error"))
        b = io.BytesIO()
        Image.new("RGB", (1100, 1000), (9, 9, 9)).save(b, "PNG")
        big = b.getvalue()  # x8: 8800x8000, over 8192x8192
        r = call(fleet, "postprocessing.upscale", {"image": big, "factor": 8})
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and "million pixels" in e.get("message", ""),
                "an upscale over the pixel budget is refused before any work", e)

        r = call(fleet, "postprocessing.safety_check", {"image": src})
        t.check((r.get("error") or {}).get("code") == "not_available",
                "safety_check answers not_available", r.get("error"))
        r = call(fleet, "postprocessing.ping", {})
        t.check(r.get("success") and w.alive(), "the worker still serves after every error")
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
        fleet.dump_logs()
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
