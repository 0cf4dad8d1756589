"""test_fleet_defaults - the request defaults and ranges come from the
schemas folder, and from nowhere else (issue 10): a copy of schemas/ with
other defaults (num_inference_steps 2, guidance_scale 2.0, 64x64) and a
lower maximum (num_inference_steps <= 4) is given to the broker and the
inference worker (--schemas-dir); a request that names neither steps,
guidance nor size then runs with the copy's values (the reply's steps and
size; the same pixels as a request naming those values explicitly, other
pixels than one naming the stock 7.5).

Then the broker's validation is switched off (--validate=false): the worker
alone fills the same defaults from its --schemas-dir (same pixels again) and
refuses a value beyond the copy's maximum naming the field, as the broker
would. A --schemas-dir that does not exist stops the worker (exit 2).

Golden tiny model (SDXL_GOLDEN_DIR/model) on the CPU; skips (77) without
the golden data or the engine-built binaries.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GOLDEN = (os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT")
          or os.path.join(fl.SOURCE_ROOT, "..", "shared", "golden"))
SCHEMAS = os.path.join(fl.SOURCE_ROOT, "schemas")
SEED = 11


def copy_schemas(dst):
    """schemas/ with the test's defaults and maximum; returns the folder."""
    shutil.copytree(SCHEMAS, dst)
    path = os.path.join(dst, "prompt_submission_schema.json")
    with open(path) as f:
        s = json.load(f)
    p = s["properties"]
    hp = p["hyperparameters"]["properties"]
    hp["num_inference_steps"]["default"] = 2
    hp["num_inference_steps"]["maximum"] = 4
    hp["guidance_scale"]["default"] = 2.0
    for k in ("width", "height"):
        p["dimensions"]["properties"][k]["default"] = 64
    with open(path, "w") as f:
        json.dump(s, f, indent=1)
    return dst


def request(data):
    base = {"prompt": "a lighthouse at dusk", "model_name": "model",
            "precision": {"dtype": "fp32"}}
    base.update(data)
    return {"message_type": "inference.generate", "request_id": "d-" + uuid.uuid4().hex[:8],
            "timeout_ms": 120000, "data": base}


def generate(fleet, data):
    """(reply data, pixels) or (error, None)."""
    r = fleet.request(request(data), timeout=120)
    if r.get("success") is not True:
        return r.get("error") or r, None
    d = r["data"]
    return d, pngutil.pixels(base64.b64decode(d["images"][0]["image"]))


def start(tag, schemas, broker_extra=()):
    fleet = fl.Fleet("ipc", tag)
    fleet.start_broker(["--schemas-dir", schemas] + list(broker_extra))
    w = fleet.start_worker("inference", ["--models-root", GOLDEN, "--outputs-root",
                                         os.path.join(fleet.dir, "outputs"),
                                         "--schemas-dir", schemas])
    fleet.wait_registered([w.wid], 30)
    return fleet


def test_broker_and_worker(t, schemas):
    fleet = start("defaults", schemas)
    try:
        bare = {"hyperparameters": {"seed": SEED}}
        d, px = generate(fleet, bare)
        if not t.check(px is not None, "a request without steps/guidance/size succeeds", d):
            return None
        t.check(d.get("steps") == 2 and (d.get("width"), d.get("height")) == (64, 64) and
                px[:2] == (64, 64),
                "it ran with the copied schema's defaults: 2 steps, 64x64",
                (d.get("steps"), d.get("width"), d.get("height")))
        d2, px2 = generate(fleet, {"hyperparameters": {"seed": SEED, "num_inference_steps": 2,
                                                       "guidance_scale": 2.0},
                                   "dimensions": {"width": 64, "height": 64}})
        t.check(px2 is not None and px2 == px,
                "the same pixels as naming steps 2, guidance 2.0, 64x64 explicitly", d2)
        d3, px3 = generate(fleet, {"hyperparameters": {"seed": SEED, "num_inference_steps": 2,
                                                       "guidance_scale": 7.5},
                                   "dimensions": {"width": 64, "height": 64}})
        t.check(px3 is not None and px3 != px,
                "other pixels than the stock default guidance 7.5 gives (the default took effect)",
                d3)
        e, _ = generate(fleet, {"hyperparameters": {"seed": SEED, "num_inference_steps": 5}})
        t.check(e.get("code") == "invalid_request" and
                e.get("field") == "hyperparameters.num_inference_steps" and
                "<= 4" in e.get("message", ""),
                "steps 5 is refused by the copied maximum 4", e)
        return px
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fleet.close()


def test_worker_alone(t, schemas, px):
    # the broker's validation off: nothing is filled before the worker
    fleet = start("defaults-worker", schemas, ["--validate=false"])
    try:
        d, px2 = generate(fleet, {"hyperparameters": {"seed": SEED}})
        t.check(px2 is not None and d.get("steps") == 2 and px2 == px,
                "broker validation off: the worker fills the same defaults from --schemas-dir",
                d if px2 is None else (d.get("steps"), d.get("width")))
        e, _ = generate(fleet, {"hyperparameters": {"seed": SEED, "num_inference_steps": 5}})
        t.check(e.get("code") == "invalid_request" and
                e.get("field") == "hyperparameters.num_inference_steps" and
                "<= 4" in e.get("message", ""),
                "broker validation off: the worker refuses steps 5 by the schema's maximum", e)
        e, _ = generate(fleet, {"hyperparameters": {"guidance_scale": "high"}})
        t.check(e.get("code") == "invalid_request" and
                e.get("field") == "hyperparameters.guidance_scale",
                "broker validation off: the worker refuses a guidance_scale of the wrong type",
                e)
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fleet.close()


def test_missing_schemas_dir(t, tmp):
    p = subprocess.run([fl.WORKER_BIN, "--domain", "inference", "--broker", "ipc://%s/x" % tmp,
                        "--models-root", GOLDEN, "--outputs-root", os.path.join(tmp, "o"),
                        "--schemas-dir", os.path.join(tmp, "no-such-schemas")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    t.check(p.returncode == 2 and "schemas-dir" in out,
            "a --schemas-dir that does not exist stops the worker (exit 2)",
            (p.returncode, out[-300:]))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isfile(os.path.join(GOLDEN, "model", "model_index.json")):
        print("SKIP: no golden model at %s" % os.path.join(GOLDEN, "model"))
        return fl.SKIP
    t = fl.Tally("fleet_defaults")
    tmp = tempfile.mkdtemp(prefix="sdxl-defaults-")
    try:
        schemas = copy_schemas(os.path.join(tmp, "schemas"))
        px = None
        print("--- test_broker_and_worker", flush=True)
        try:
            px = test_broker_and_worker(t, schemas)
        except Exception as e:  # noqa: BLE001
            t.check(False, "broker + worker with the copied schemas", e)
        if px is not None:
            t.run(test_worker_alone, schemas, px)
        t.run(test_missing_schemas_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
