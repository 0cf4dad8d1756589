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
- preprocessor canny gives the image that preprocessor none gives on the
  edge map of an independent Python implementation of cv2.Canny's rules
  (canny_py); its thresholds matter; low above high is refused;
- errors name the field: an unknown ControlNet (not_found on
  controlnet[0].model), a preprocessor not built (depth: not_available on
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


def shapes_rgb(w, h):
    """A control image: rectangles and a disc of several strengths, one in
    the red channel only (RGB bytes, row-major)."""
    px = bytearray(w * h * 3)

    def put(x, y, rgb):
        i = (y * w + x) * 3
        px[i:i + 3] = bytes(rgb)
    for y in range(h):
        for x in range(w):
            if 10 <= x < 60 and 12 <= y < 50:
                put(x, y, (200, 200, 200))
            elif 70 <= x < 118 and 20 <= y < 40:
                put(x, y, (45, 45, 45))  # weak sides, strong corners (L1)
            elif (x - 40) ** 2 + (y - 90) ** 2 < 20 ** 2:
                put(x, y, (180, 0, 0))  # red only
            elif 80 <= x < 120 and 70 <= y < 110:
                put(x, y, (90 + (x - 80), 120, 30))
    return px


def canny_py(px, w, h, low, high):
    """cv2.Canny's rules (as in workers/sdxl/sdx_canny.h), written again
    here: Sobel 3x3 per channel with replicated borders, the strongest
    channel's L1 gradient, non-maximum suppression with tan(22.5) sectors
    and OpenCV's tie-break, hysteresis over 8 neighbours. RGB edge map."""
    def at(c, y, x):
        y = min(max(y, 0), h - 1)
        x = min(max(x, 0), w - 1)
        return px[(y * w + x) * 3 + c]
    mag = [0.0] * (w * h)
    gx = [0.0] * (w * h)
    gy = [0.0] * (w * h)
    for y in range(h):
        for x in range(w):
            best = -1
            for c in range(3):
                dx = (at(c, y - 1, x + 1) - at(c, y - 1, x - 1) + 2 * (at(c, y, x + 1) -
                      at(c, y, x - 1)) + at(c, y + 1, x + 1) - at(c, y + 1, x - 1))
                dy = (at(c, y + 1, x - 1) - at(c, y - 1, x - 1) + 2 * (at(c, y + 1, x) -
                      at(c, y - 1, x)) + at(c, y + 1, x + 1) - at(c, y - 1, x + 1))
                m = abs(dx) + abs(dy)
                if m > best:
                    best, bx, by = m, dx, dy
            mag[y * w + x], gx[y * w + x], gy[y * w + x] = best, bx, by

    def M(y, x):
        return 0 if y < 0 or y >= h or x < 0 or x >= w else mag[y * w + x]
    state = [0] * (w * h)
    stack = []
    t22, t67 = 0.41421356237309503, 2.414213562373095
    for y in range(h):
        for x in range(w):
            i = y * w + x
            m = mag[i]
            if not m > low:
                continue
            ax, ay = abs(gx[i]), abs(gy[i])
            if ay < ax * t22:
                keep = m > M(y, x - 1) and m >= M(y, x + 1)
            elif ay > ax * t67:
                keep = m > M(y - 1, x) and m >= M(y + 1, x)
            else:
                s = -1 if (gx[i] < 0) != (gy[i] < 0) else 1
                keep = m > M(y - 1, x - s) and m > M(y + 1, x + s)
            if keep:
                state[i] = 1
                if m > high:
                    state[i] = 2
                    stack.append(i)
    while stack:
        i = stack.pop()
        y, x = divmod(i, w)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and state[yy * w + xx] == 1:
                    state[yy * w + xx] = 2
                    stack.append(yy * w + xx)
    return bytearray(255 if state[i // 3] == 2 else 0 for i in range(w * h * 3))


def png_rgb(px, w, h):
    import zlib

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xffffffff)
    raw = b"".join(b"\0" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


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
        # preprocessor canny: the worker's edge map is the one an independent
        # implementation of cv2.Canny's rules (canny_py, below) computes
        ctrl = shapes_rgb(128, 128)
        rc1 = fleet.request(req(png_rgb(ctrl, 128, 128), pre="canny"), timeout=120,
                            enc="msgpack")
        edges = canny_py(ctrl, 128, 128, 100, 200)
        rc2 = fleet.request(req(png_rgb(edges, 128, 128)), timeout=120, enc="msgpack")
        ok = rc1.get("success") and rc2.get("success")
        t.check(ok and pngutil.pixels(rc1["data"]["images"][0]["image"])[3] ==
                pngutil.pixels(rc2["data"]["images"][0]["image"])[3] and
                0 < sum(edges) // 765 < 128 * 128 // 4,
                "preprocessor canny (100, 200): the image of preprocessor none on the edge map "
                "that a separate Python Canny computes (%d edge pixels)" % (sum(edges) // 765),
                (rc1.get("error"), rc2.get("error")))
        loose = dict(req(png_rgb(ctrl, 128, 128), pre="canny"))
        loose["data"]["controlnet"][0]["canny"] = {"low_threshold": 250, "high_threshold": 600}
        rc3 = fleet.request(loose, timeout=120, enc="msgpack")
        t.check(ok and rc3.get("success") and
                pngutil.pixels(rc3["data"]["images"][0]["image"])[3] !=
                pngutil.pixels(rc1["data"]["images"][0]["image"])[3],
                "canny.low_threshold/high_threshold 250/600 (the weak rectangle drops out) give "
                "another image", rc3.get("error"))
        bad = dict(req(png_rgb(ctrl, 128, 128), pre="canny"))
        bad["data"]["controlnet"][0]["canny"] = {"low_threshold": 250, "high_threshold": 20}
        r = fleet.request(bad, timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "invalid_request" and
                e.get("field") == "controlnet[0].canny.low_threshold",
                "canny low above high: invalid_request naming the field (%s)" % e.get("message"),
                e)
        r = fleet.request(req(img, pre="depth"), timeout=60, enc="msgpack")
        e = r.get("error") or {}
        t.check(e.get("code") == "not_available" and
                e.get("field") == "controlnet[0].preprocessor",
                "preprocessor depth: not_available on controlnet[0].preprocessor (%s)" %
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
