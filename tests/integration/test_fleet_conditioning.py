#!/usr/bin/python3
"""The conditioning domain through a real broker and worker, on the golden
tiny model:

- conditioning.tokenize: the built-in CLIP tokenizers (no model_name) and the
  model's own give transformers' CLIPTokenizer ids (golden tokens.json) for
  both tokenizers (tokenizer pads with <|endoftext|>, tokenizer_2 with "!");
- conditioning.encode_prompt: the tensors (dtype, shape, raw little-endian
  bytes in msgpack bin; base64 text for a JSON client) equal diffusers'
  StableDiffusionXLPipeline.encode_prompt (golden ref/encode_prompt), within
  relative L2 1e-4 (float32, CPU; the engine tests' tolerance), for the
  default case, clip_skip 1, a batch of 2, and negative "" (= None: exact
  zeros, force_zeros_for_empty_prompt); guidance_scale 1 returns no negatives;
- errors name the field (unknown model, clip_skip beyond the model, a schema
  range) and the worker keeps serving; the loaded model shows in
  conditioning.status;
- the split path: conditioning.encode_prompt's tensors handed unchanged to
  inference.denoise give the PNG of inference.generate for the same request,
  byte for byte, over msgpack and over JSON (base64); bad embeddings (a
  missing negative pair, a wrong size, embeddings given to
  inference.generate) are refused naming the field;
- with the broker's validation off, the worker checks and fills the request
  with the same schema files itself (same tensors; clip_skip 99 refused on
  clip_skip; an unknown key refused).
Skips (77) without the golden data."""
import array
import base64
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
TOL = 1e-4


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        vals = array.array("f")
        vals.frombytes(body[a:b])
        out[k] = (v["shape"], vals)
    return out


def floats(t):
    """A reply tensor {dtype, shape, data} as (shape, float32 array)."""
    data = t["data"]
    if isinstance(data, str):
        data = base64.b64decode(data)
    vals = array.array("f")
    vals.frombytes(data)
    return t["shape"], vals


def rel_l2(a, b):
    num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    den = math.sqrt(sum(y * y for y in b))
    return num / den if den else num


def call(fleet, mtype, data, enc="msgpack", timeout=60):
    return fleet.request({"message_type": mtype, "data": data}, timeout=timeout, enc=enc)


def err(r):
    e = r.get("error") or {}
    return e.get("code"), e.get("field")


def compare(t, what, r, ref, case, zeros_neg=False):
    d = r.get("data") or {}
    ts = d.get("tensors") or {}
    names = ["prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
             "negative_pooled_prompt_embeds"]
    if not r.get("success") or sorted(ts) != sorted(names):
        t.check(False, "%s: four tensors" % what, r.get("error") or sorted(ts))
        return
    worst = 0.0
    ok = True
    for n in names:
        shape, got = floats(ts[n])
        rshape, want = ref["%s.%s" % (case, n)]
        ok &= ts[n]["dtype"] == "float32" and shape == rshape and len(got) == len(want)
        if zeros_neg and n.startswith("negative"):
            ok &= all(x == 0.0 for x in got)
        else:
            worst = max(worst, rel_l2(got, want))
    t.check(ok and worst <= TOL, "%s: dtype, shapes and values of diffusers' encode_prompt "
            "(worst rel. L2 %.1e <= %g)" % (what, worst, TOL), (ok, worst))


def split_path(t, fleet, P, NEG):
    w = fleet.start_worker("inference", ["--models-root", GOLDEN, "--outputs-root",
                                         os.path.join(fleet.dir, "out")], wid="infer-1")
    fleet.wait_registered([w.wid], 20)
    req = {"prompt": P, "negative_prompt": NEG, "model_name": "model",
           "hyperparameters": {"num_inference_steps": 3, "seed": 7, "guidance_scale": 5.0},
           "dimensions": {"width": 64, "height": 64}, "precision": {"dtype": "fp32"}}
    call(fleet, "inference.generate", req, timeout=120)  # loads the model: not timed
    t0 = time.monotonic()
    r1 = call(fleet, "inference.generate", req, timeout=120)
    t1 = time.monotonic()
    e = call(fleet, "conditioning.encode_prompt", req)
    t2 = time.monotonic()
    tensors = (e.get("data") or {}).get("tensors")
    r2 = call(fleet, "inference.denoise", dict(req, embeddings=tensors), timeout=120)
    t3 = time.monotonic()
    a = r1.get("success") and r1["data"]["images"][0]["image"]
    b = r2.get("success") and r2["data"]["images"][0]["image"]
    t.check(bool(a) and a == b, "split path (encode_prompt -> denoise) = one hop "
            "(inference.generate): the same PNG bytes", (r1.get("error"), r2.get("error")))
    print("note: one hop %.1f ms; split %.1f ms (encode %.1f + denoise %.1f), tiny model 64x64, "
          "3 steps" % ((t1 - t0) * 1e3, (t3 - t1) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))

    ej = call(fleet, "conditioning.encode_prompt", req, enc="json")
    rj = call(fleet, "inference.denoise", dict(req, embeddings=(ej.get("data") or {}).get(
        "tensors")), enc="json", timeout=120)
    c = rj.get("success") and base64.b64decode(rj["data"]["images"][0]["image"])
    t.check(bool(a) and c == a, "split path over JSON (tensors as base64): the same PNG",
            rj.get("error"))

    if tensors:
        pos = {k: v for k, v in tensors.items() if not k.startswith("negative")}
        r = call(fleet, "inference.denoise", dict(req, embeddings=pos))
        t.check(err(r)[0] == "invalid_request" and "negative" in r["error"]["message"],
                "denoise with CFG but no negative pair: invalid_request (%s)" %
                (r.get("error") or {}).get("message"), r.get("error"))
        short = dict(tensors, prompt_embeds=dict(tensors["prompt_embeds"],
                                                 data=tensors["prompt_embeds"]["data"][:-4]))
        r = call(fleet, "inference.denoise", dict(req, embeddings=short))
        t.check(err(r) == ("invalid_request", "embeddings.prompt_embeds"),
                "denoise with 4 bytes missing: invalid_request on embeddings.prompt_embeds",
                r.get("error"))
        wide = dict(tensors, pooled_prompt_embeds={"dtype": "float32", "shape": [1, 4],
                                                   "data": b"\0" * 16})
        r = call(fleet, "inference.denoise", dict(req, embeddings=wide))
        t.check(err(r)[0] == "invalid_request" and "pooled" in r["error"]["message"],
                "denoise with a pooled tensor of the wrong width: invalid_request (%s)" %
                (r.get("error") or {}).get("message"), r.get("error"))
        r = call(fleet, "inference.generate", dict(req, embeddings=tensors))
        t.check(err(r) == ("invalid_request", "embeddings"),
                "embeddings given to inference.generate: refused", r.get("error"))
    r = call(fleet, "inference.denoise", req)
    t.check(err(r) == ("invalid_request", "embeddings"), "denoise without embeddings: refused",
            r.get("error"))
    r = call(fleet, "inference.generate", req, timeout=120)
    t.check(r.get("success") and r["data"]["images"][0]["image"] == a,
            "the inference worker still serves, same image", r.get("error"))


def worker_checks(t, P, NEG, want):
    fleet = fl.Fleet("ipc", "cond-nv")
    try:
        fleet.start_broker(["--validate=false"])
        w = fleet.start_worker("conditioning", ["--models-root", GOLDEN], wid="cond-nv")
        fleet.wait_registered([w.wid], 20)
        base = {"prompt": P, "negative_prompt": NEG, "model_name": "model",
                "precision": {"dtype": "fp32"}}
        r = call(fleet, "conditioning.encode_prompt", base)
        ts = (r.get("data") or {}).get("tensors") or {}
        t.check(r.get("success") and all(ts[n]["data"] == want[n]["data"] for n in want),
                "validation off in the broker: the worker fills the schema's defaults itself "
                "(same tensors)", r.get("error"))
        r = call(fleet, "conditioning.encode_prompt", dict(base, clip_skip=99))
        t.check(err(r) == ("invalid_request", "clip_skip"),
                "validation off in the broker: the worker's schema refuses clip_skip 99",
                r.get("error"))
        r = call(fleet, "conditioning.tokenize", {"prompt": "x", "bogus": True})
        t.check(err(r)[0] == "invalid_request", "validation off: the worker refuses an unknown "
                "tokenize key", r.get("error"))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isdir(os.path.join(GOLDEN, "model")):
        print("SKIP: golden data not found")
        return 77
    ref = read_safetensors(os.path.join(GOLDEN, "ref", "encode_prompt.safetensors"))
    with open(os.path.join(GOLDEN, "manifest.json")) as f:
        cfg = json.load(f)["config"]
    P, NEG = cfg["prompt"], cfg["negative"]
    with open(os.path.join(GOLDEN, "tokens.json")) as f:
        tokens = json.load(f)["prompts"][:4]

    t = fl.Tally("fleet_conditioning")
    fleet = fl.Fleet("ipc", "cond")
    try:
        fleet.start_broker(["--models-root", GOLDEN])
        w = fleet.start_worker("conditioning", ["--models-root", GOLDEN], wid="cond-1")
        fleet.wait_registered([w.wid], 20)

        for name, model in (("built-in", None), ("the model's", "model")):
            good = True
            for case in tokens:
                data = {"prompt": case["prompt"]}
                if model:
                    data["model_name"] = model
                r = call(fleet, "conditioning.tokenize", data)
                toks = (r.get("data") or {}).get("tokenizers") or []
                good &= (len(toks) == 2 and toks[0]["input_ids"] == case["tok1"]["input_ids"] and
                         toks[1]["input_ids"] == case["tok2"]["input_ids"] and
                         toks[0]["pad_id"] == 49407 and toks[1]["pad_id"] == 0)
            t.check(good, "tokenize with %s tokenizers = transformers' CLIPTokenizer ids for "
                    "%d prompts (both tokenizers)" % (name, len(tokens)), r)

        base = {"prompt": P, "negative_prompt": NEG, "model_name": "model",
                "precision": {"dtype": "fp32"}}
        r = call(fleet, "conditioning.encode_prompt", base)
        compare(t, "encode_prompt default", r, ref, "default")
        default_tensors = (r.get("data") or {}).get("tensors") or {}
        d = r.get("data") or {}
        t.check(d.get("do_classifier_free_guidance") is True and d.get("truncated") is False and
                d.get("model_name") == "model" and "encode_ms" in (d.get("timings") or {}),
                "encode_prompt reply: cfg flag, truncated, model, timings", d.get("timings"))

        rj = call(fleet, "conditioning.encode_prompt", base, enc="json")
        same = rj.get("success") and all(
            floats(rj["data"]["tensors"][n])[1] == floats(r["data"]["tensors"][n])[1]
            for n in r["data"]["tensors"]) if r.get("success") else False
        t.check(same, "a JSON client gets the same bytes (base64 text)", rj.get("error"))

        compare(t, "encode_prompt clip_skip 1", call(fleet, "conditioning.encode_prompt",
                                                    dict(base, clip_skip=1)), ref, "clip_skip1")
        compare(t, "encode_prompt negative \"\" (= None, forced zeros)",
                call(fleet, "conditioning.encode_prompt", dict(base, negative_prompt="")), ref,
                "neg_none_force_zeros", zeros_neg=True)

        r = call(fleet, "conditioning.encode_prompt", dict(base, batch={"size": 2}))
        ts = (r.get("data") or {}).get("tensors") or {}
        ok = r.get("success") and ts["prompt_embeds"]["shape"] == [2, 77, 40]
        if ok:
            _, v = floats(ts["prompt_embeds"])
            _, want = ref["default.prompt_embeds"]
            half = len(v) // 2
            ok = rel_l2(v[:half], want) <= TOL and rel_l2(v[half:], want) <= TOL
        t.check(ok, "batch.size 2: [2, 77, 40], both rows the default embedding", r.get("error"))

        r = call(fleet, "conditioning.encode_prompt", dict(base, prompt_attention="a1111"))
        compare(t, "encode_prompt a1111 without weights (= diffusers')", r, ref, "default")
        r = call(fleet, "conditioning.encode_prompt",
                 dict(base, prompt_attention="a1111", prompt="a (castle:1.3) BREAK [forest]"))
        ts = (r.get("data") or {}).get("tensors") or {}
        t.check(r.get("success") and ts["prompt_embeds"]["shape"] == [1, 154, 40] and
                ts["negative_prompt_embeds"]["shape"] == [1, 154, 40] and
                ts["pooled_prompt_embeds"]["shape"] == [1, 20],
                "a1111 with BREAK: two chunks [1, 154, 40], negative padded to them",
                {k: v.get("shape") for k, v in ts.items()} or r.get("error"))
        r = call(fleet, "conditioning.encode_prompt", dict(base, prompt_attention="compel"))
        e = r.get("error") or {}
        t.check(e.get("code") == "not_available" and e.get("field") == "prompt_attention",
                "prompt_attention compel: not_available", e)

        r = call(fleet, "conditioning.encode_prompt",
                 dict(base, hyperparameters={"guidance_scale": 1.0}))
        ts = (r.get("data") or {}).get("tensors") or {}
        t.check(r.get("success") and sorted(ts) == ["pooled_prompt_embeds", "prompt_embeds"] and
                r["data"]["do_classifier_free_guidance"] is False,
                "guidance_scale 1: no negative tensors", sorted(ts) or r.get("error"))

        r = call(fleet, "conditioning.encode_prompt", dict(base, model_name="no_such_model"))
        t.check(not r.get("success") and err(r)[1] == "model_name",
                "unknown model: an error naming model_name (%s)" % (err(r),), r.get("error"))
        r = call(fleet, "conditioning.encode_prompt", dict(base, clip_skip=5))
        t.check(err(r) == ("invalid_request", None) or err(r)[0] == "invalid_request",
                "clip_skip beyond the 5-layer text encoder: invalid_request (%s)" %
                ((r.get("error") or {}).get("message"),), r.get("error"))
        r = call(fleet, "conditioning.encode_prompt", dict(base, clip_skip=99))
        t.check(err(r) == ("invalid_request", "clip_skip"),
                "clip_skip 99: refused by the schema, field clip_skip", r.get("error"))
        r = call(fleet, "conditioning.tokenize", {"prompt": "x", "bogus": 1})
        t.check(err(r)[0] == "invalid_request", "tokenize: an unknown key is refused",
                r.get("error"))

        r = call(fleet, "conditioning.encode_prompt", base)
        t.check(r.get("success") is True, "the worker still serves after the errors",
                r.get("error"))
        r = call(fleet, "conditioning.status", {})
        eng = (r.get("data") or {}).get("engine") or {}
        t.check([m.get("name") for m in eng.get("loaded_models", [])] == ["model"] and
                eng.get("encoded", 0) >= 6, "conditioning.status: the text side of 'model' "
                "loaded, requests counted", eng)
        split_path(t, fleet, P, NEG)
        worker_checks(t, P, NEG, default_tensors)
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
