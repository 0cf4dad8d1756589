#!/usr/bin/python3
"""The model domain through a real broker and model worker, on a models root
of small safetensors files this test writes itself (no golden data needed):
model.list (all, by kind, a bad kind), model.inspect (header facts,
metadata, SHA-256/AutoV2 against hashlib, computed once then cached),
unknown names answered invalid_request with near matches, traversal and
absolute names refused, symlinks out of the root left out, model.status
counts, model.rescan after adding and removing files, the SQLite hash cache
across a worker restart, model.load answered by the broker (no_worker here). With the golden data and
a worker built with the engine, the detector's architectures are checked on
the tiny SDXL files too."""
import hashlib
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
# each kind's root under the models root (hash_file is relative to it)
SUB = {"checkpoints": "", "vae": "vae", "lora": "lora", "controlnet": "controlnet",
       "embeddings": "embeddings", "upscalers": "upscalers"}
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}


def write_st(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape)}; data bytes are a fixed pattern."""
    hdr, off = {}, 0
    for name, (dt, shape) in tensors.items():
        n = SIZES[dt]
        for d in shape:
            n *= d
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    if metadata:
        hdr["__metadata__"] = metadata
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes((i * 7) % 256 for i in range(off)))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


CKPT = {"model.diffusion_model.input_blocks.0.0.weight": ("F16", [8, 4, 3, 3]),
        "model.diffusion_model.input_blocks.0.0.bias": ("F16", [8])}
LORA = {"lora_unet_a.lora_down.weight": ("F16", [4, 8]), "lora_unet_a.lora_up.weight": ("F16", [8, 4])}
RRDB = {"conv_first.weight": ("F32", [8, 3, 3, 3]), "body.0.rdb1.conv1.weight": ("F32", [4, 8, 3, 3])}


def call(fleet, mtype, data=None, timeout=30):
    return fleet.request({"message_type": mtype, "data": data or {}}, timeout=timeout,
                         enc="msgpack")


def names(r, kind=None):
    return {(e["kind"], e["name"]) for e in (r.get("data") or {}).get("models", [])
            if kind is None or e["kind"] == kind}


def build_tree(root, outside):
    write_st(os.path.join(root, "tiny.safetensors"), CKPT,
             {"modelspec.title": "Tiny XL", "ss_base_model_version": "sdxl_base_v1-0"})
    write_st(os.path.join(root, "sub", "deep.safetensors"), CKPT)
    os.makedirs(os.path.join(root, "pipe"), exist_ok=True)
    with open(os.path.join(root, "pipe", "model_index.json"), "w") as f:
        f.write('{"_class_name": "StableDiffusionXLPipeline"}')
    write_st(os.path.join(root, "pipe", "unet", "diffusion_pytorch_model.safetensors"),
             {"conv_in.weight": ("F32", [8, 4, 3, 3])})
    write_st(os.path.join(root, "pipe", "vae", "diffusion_pytorch_model.safetensors"),
             {"decoder.conv_in.weight": ("F32", [4, 4, 3, 3])})
    write_st(os.path.join(root, "lora", "styleA.safetensors"), LORA)
    write_st(os.path.join(root, "lora", "styleB.safetensors"), LORA)
    write_st(os.path.join(root, "vae", "sdxl_vae.safetensors"),
             {"decoder.conv_in.weight": ("F16", [4, 4, 3, 3])})
    write_st(os.path.join(root, "embeddings", "tiny_ti.safetensors"),
             {"clip_l": ("F32", [2, 16]), "clip_g": ("F32", [2, 24])})
    write_st(os.path.join(root, "upscalers", "RealESRGAN_x4plus.safetensors"), RRDB)
    write_st(os.path.join(root, "controlnet", "cn-canny", "diffusion_pytorch_model.safetensors"),
             {"conv_in.weight": ("F32", [8, 4, 3, 3])})
    with open(os.path.join(root, "broken.safetensors"), "wb") as f:
        f.write(b"\xff" * 7 + b"\x7fnot a header")
    with open(os.path.join(root, "old.ckpt"), "wb") as f:
        f.write(b"pickle")
    write_st(os.path.join(outside, "secret.safetensors"), CKPT)
    os.symlink(os.path.join(outside, "secret.safetensors"),
               os.path.join(root, "escape.safetensors"))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("fleet_model")
    fleet = fl.Fleet("ipc", "model")
    root = os.path.join(fleet.dir, "models")
    state = os.path.join(fleet.dir, "state")
    build_tree(root, os.path.join(fleet.dir, "outside"))
    golden = os.path.isdir(os.path.join(GOLDEN, "model_single_file"))
    if golden:
        shutil.copy(os.path.join(GOLDEN, "model_single_file", "tiny_sdxl.safetensors"),
                    os.path.join(root, "golden_sdxl.safetensors"))
        shutil.copy(os.path.join(GOLDEN, "lora", "lora_kohya.safetensors"),
                    os.path.join(root, "lora", "golden_kohya.safetensors"))
    argv = ["--models-root", root, "--state-dir", state]
    try:
        fleet.start_broker()
        w = fleet.start_worker("model", argv, wid="model-1")
        fleet.wait_registered([w.wid], 15)

        r = call(fleet, "model.list")
        got = names(r)
        want = {("checkpoints", "tiny"), ("checkpoints", "sub/deep"), ("checkpoints", "pipe"),
                ("checkpoints", "broken"), ("lora", "styleA"), ("lora", "styleB"),
                ("vae", "sdxl_vae"), ("embeddings", "tiny_ti"),
                ("upscalers", "RealESRGAN_x4plus"), ("controlnet", "cn-canny")}
        t.check(r.get("success") and want <= got, "model.list lists every kind", sorted(got))
        t.check(("checkpoints", "escape") not in got and ("checkpoints", "old") not in got and
                ("checkpoints", "lora/styleA") not in got,
                "symlinks out of the root, pickles and the kind folders are not checkpoints",
                sorted(got))
        ents = {(e["kind"], e["name"]): e for e in r["data"]["models"]}
        e = ents.get(("checkpoints", "tiny"), {})
        t.check(e.get("dtype") == "F16" and e.get("tensor_count") == 2 and
                e.get("path") == "tiny.safetensors" and e.get("format") == "single_file" and
                e.get("size") == os.path.getsize(os.path.join(root, "tiny.safetensors")) and
                "sha256" not in e, "an entry: header facts, no hash until asked", e)
        e = ents.get(("checkpoints", "pipe"), {})
        t.check(e.get("format") == "diffusers" and
                e.get("hash_file") == "pipe/unet/diffusion_pytorch_model.safetensors",
                "a diffusers folder hashes its UNet file", e)
        t.check("error" in ents.get(("checkpoints", "broken"), {}),
                "an unreadable header is listed with its error", ents.get(("checkpoints",
                                                                            "broken")))
        e = ents.get(("upscalers", "RealESRGAN_x4plus"), {})
        t.check(e.get("architecture") == "rrdbnet", "an upscaler is recognised as RRDBNet", e)
        t.check(r["data"].get("count") == len(got), "count matches", r["data"].get("count"))

        r = call(fleet, "model.list", {"kind": "lora"})
        t.check(r.get("success") and {k for k, _ in names(r)} == {"lora"} and
                ("lora", "styleA") in names(r), "model.list kind=lora", names(r))
        r = call(fleet, "model.list", {"kind": "pickles"})
        t.check((r.get("error") or {}).get("code") == "invalid_request" and
                r["error"].get("field") == "kind", "an unknown kind is invalid_request", r)

        tiny = os.path.join(root, "tiny.safetensors")
        r = call(fleet, "model.inspect", {"name": "tiny"})
        d = r.get("data") or {}
        t.check(r.get("success") and d.get("sha256") == sha256(tiny) and
                d.get("autov2") == sha256(tiny)[:10] and d.get("hash_cached") is False,
                "model.inspect: SHA-256 and AutoV2 match hashlib, computed", d or r)
        t.check(d.get("metadata", {}).get("modelspec.title") == "Tiny XL" and
                d.get("metadata_count") == 2 and d.get("tensor_count") == 2,
                "model.inspect: metadata and tensor count", d)
        r = call(fleet, "model.inspect", {"name": "tiny", "kind": "checkpoints"})
        t.check((r.get("data") or {}).get("hash_cached") is True, "the second inspect is cached",
                r.get("data"))
        r = call(fleet, "model.inspect", {"name": "pipe"})
        t.check((r.get("data") or {}).get("sha256") ==
                sha256(os.path.join(root, "pipe", "unet", "diffusion_pytorch_model.safetensors")),
                "a diffusers folder's hash is its UNet file's", r.get("data"))

        r = call(fleet, "model.inspect", {"name": "tiyn"})
        err = r.get("error") or {}
        t.check(err.get("code") == "invalid_request" and err.get("field") == "name" and
                "tiny" in err.get("message", ""), "an unknown name lists near matches", err)
        r = call(fleet, "model.inspect", {"name": "style", "kind": "lora"})
        err = r.get("error") or {}
        t.check(err.get("code") == "invalid_request" and "styleA" in err.get("message", "") and
                "styleB" in err.get("message", ""), "a prefix lists what it prefixes", err)
        for bad in ("../outside/secret", "/etc/passwd", "sub/../tiny", "escape"):
            r = call(fleet, "model.inspect", {"name": bad})
            err = r.get("error") or {}
            t.check(err.get("code") == "invalid_request" and err.get("field") == "name",
                    "name %r is refused" % bad, err)
        r = call(fleet, "model.inspect", {})
        t.check((r.get("error") or {}).get("field") == "name", "inspect needs a name", r)

        r = call(fleet, "model.status")
        cat = (r.get("data") or {}).get("catalog") or {}
        t.check(r.get("success") and cat.get("counts", {}).get("lora") == (3 if golden else 2) and
                cat.get("hash_cache", "").startswith(state) and cat.get("hashes_computed") == 2 and
                "uptime_s" in r["data"], "model.status: catalog counts and hash cache", cat)

        write_st(os.path.join(root, "lora", "styleC.safetensors"), LORA)
        os.unlink(os.path.join(root, "lora", "styleB.safetensors"))
        r = call(fleet, "model.rescan")
        d = r.get("data") or {}
        t.check(r.get("success") and d.get("added") == ["lora/styleC"] and
                d.get("removed") == ["lora/styleB"], "model.rescan reports added and removed", d)

        r = call(fleet, "model.list", {"hash": True})
        ok = all(e.get("sha256") == sha256(os.path.join(root, SUB[e["kind"]], e["hash_file"]))
                 for e in (r.get("data") or {}).get("models", []) if "error" not in e)
        t.check(r.get("success") and ok, "model.list hash=true: every hash matches hashlib")

        if golden:
            r = call(fleet, "model.list")
            ents = {(e["kind"], e["name"]): e for e in r["data"]["models"]}
            g = ents.get(("checkpoints", "golden_sdxl"), {})
            if "without the engine" in g.get("architecture_detail", ""):
                print("note: worker built without the engine: no architecture detection")
            else:
                t.check(g.get("architecture") == "sdxl_base" and g.get("dtype") == "F32",
                        "the engine's detector: tiny SDXL single file is sdxl_base", g)
                t.check(ents.get(("lora", "golden_kohya"), {}).get("architecture") == "lora",
                        "the engine's detector: kohya LoRA", ents.get(("lora", "golden_kohya")))

        r = call(fleet, "model.load", {"model_name": "tiny"})
        t.check((r.get("error") or {}).get("code") == "no_worker",
                "model.load is the broker's fan-out to inference/conditioning workers (none "
                "here: no_worker)", r.get("error"))

        # a restart keeps the hashes (SQLite under --state-dir)
        t.check(w.stop() == 0, "the worker stops with exit 0 (under ASan: nothing leaked)")
        w2 = fleet.start_worker("model", argv, wid="model-2")
        fleet.wait_registered([w2.wid], 15)
        r = call(fleet, "model.inspect", {"name": "tiny"})
        d = r.get("data") or {}
        t.check(d.get("hash_cached") is True and d.get("sha256") == sha256(tiny),
                "after a restart the hash comes from the SQLite cache", d or r)
        r = call(fleet, "model.status")
        cat = (r.get("data") or {}).get("catalog") or {}
        t.check(cat.get("hashes_computed") == 0 and cat.get("hash_cache_hits", 0) >= 1,
                "nothing was hashed again", cat)
        t.check(w2.stop() == 0, "the restarted worker stops with exit 0")
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
