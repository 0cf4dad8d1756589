#!/usr/bin/python3
"""Explicit model load and unload on the workers that hold weights, through a
real broker, on the project's own tiny SDXL (sdxl-gen make-tiny):

- inference.load_model loads (loaded true, then already_loaded true on a
  second call), inference.status and system.workers list the model, and a
  generation after it does not load again (timings.load_ms 0);
- inference.unload_model drops it (loaded_models empty; system.workers'
  models empty after the next heartbeat); unloading a model that is not
  loaded answers unloaded 0 with a note; an unknown name is not_found on
  model_name with the near match listed; a name leaving the models root is
  invalid_request;
- an unload while a generation runs on the model answers deferred 1, the
  generation completes, and the model is gone after it;
- the same load/unload for conditioning.load_model / unload_model (the text
  encoders).
Skips (77) without sdxl-gen."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

import zmq  # noqa: E402

GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
MODEL = "sdxl-tiny"


def rid():
    return "ld-" + uuid.uuid4().hex[:8]


def op(fleet, mtype, data, timeout=120):
    return fleet.request({"message_type": mtype, "request_id": rid(), "timeout_ms": 120000,
                          "data": data}, timeout=timeout, enc="msgpack")


def gen(steps=3, size=64, seed=11):
    return {"message_type": "inference.generate", "request_id": rid(), "timeout_ms": 120000,
            "data": {"prompt": "a red bicycle", "model_name": MODEL,
                     "hyperparameters": {"num_inference_steps": steps, "seed": seed},
                     "dimensions": {"width": size, "height": size},
                     "precision": {"dtype": "fp32"}}}


def worker_models(fleet, wid):
    for w in fleet.workers():
        if (w.get("worker_id") or w.get("id")) == wid:
            return list(w.get("models") or [])
    return None


def status_models(fleet, domain):
    r = fleet.request({"message_type": domain + ".status"}, timeout=5)
    eng = (r.get("data") or {}).get("engine") or {}
    return [m.get("name") for m in eng.get("loaded_models") or []]


def status_states(fleet, domain):
    r = fleet.request({"message_type": domain + ".status"}, timeout=5)
    eng = (r.get("data") or {}).get("engine") or {}
    return [(m.get("name"), m.get("state")) for m in eng.get("loaded_models") or []]


def err(r):
    return r.get("error") or {}


def common(t, fleet, domain, wid):
    """load, already loaded, listed, unload, not loaded, unknown, bad name."""
    r1 = op(fleet, domain + ".load_model", {"model_name": MODEL})
    d1 = r1.get("data") or {}
    t.check(r1.get("success") and d1.get("loaded") is True and d1.get("already_loaded") is False
            and d1.get("model_name") == MODEL and d1.get("path", "").endswith(MODEL)
            and d1.get("dtype") in ("fp32", "fp16") and d1.get("load_ms", 0) > 0
            and d1.get("mb", 0) > 0 and d1.get("loaded_models") == [MODEL],
            "%s.load_model loads %s (%s, %.0f ms, %.1f MB)" %
            (domain, MODEL, d1.get("dtype"), d1.get("load_ms", 0), d1.get("mb", 0)), r1)
    r2 = op(fleet, domain + ".load_model", {"model_name": MODEL})
    d2 = r2.get("data") or {}
    t.check(r2.get("success") and d2.get("loaded") is False and d2.get("already_loaded") is True
            and d2.get("load_ms") == 0 and d2.get("dtype") == d1.get("dtype"),
            "a second %s.load_model: already_loaded" % domain, r2)
    t.check(status_models(fleet, domain) == [MODEL], "%s.status lists the model" % domain,
            status_models(fleet, domain))
    ok = fl.wait_for(lambda: worker_models(fleet, wid) == [MODEL], 5,
                     "system.workers to list the model")
    t.check(ok, "system.workers: %s holds %s" % (wid, MODEL), worker_models(fleet, wid))
    return d1


def unload_checks(t, fleet, domain, wid):
    r = op(fleet, domain + ".unload_model", {"model_name": MODEL})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("unloaded", 0) >= 1 and d.get("deferred") == 0 and
            d.get("loaded_models") == [], "%s.unload_model drops it" % domain, r)
    t.check(status_models(fleet, domain) == [], "%s.status: no model loaded" % domain,
            status_models(fleet, domain))
    time.sleep(1.5)  # the next heartbeat
    t.check(worker_models(fleet, wid) == [], "system.workers: %s holds no model" % wid,
            worker_models(fleet, wid))
    r = op(fleet, domain + ".unload_model", {"model_name": MODEL})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("unloaded") == 0 and d.get("deferred") == 0 and
            "not loaded" in (d.get("note") or ""),
            "%s.unload_model of a model not loaded: unloaded 0 with a note" % domain, r)
    r = op(fleet, domain + ".load_model", {"model_name": "sdxl-tinyy"})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "not_found" and
            e.get("field") == "model_name" and MODEL in (e.get("message") or ""),
            "%s.load_model of a misspelt name: not_found listing %s" % (domain, MODEL), e)
    r = op(fleet, domain + ".unload_model", {"model_name": "no-such-model"})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "not_found" and
            e.get("field") == "model_name",
            "%s.unload_model of a name that exists nowhere: not_found" % domain, e)
    r = op(fleet, domain + ".load_model", {"model_name": "../etc"})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "invalid_request" and
            e.get("field") == "model_name", "%s.load_model '../etc': invalid_request" % domain, e)
    r = op(fleet, domain + ".load_model", {})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "invalid_request" and
            e.get("field") == "model_name", "%s.load_model without model_name" % domain, e)
    r = op(fleet, domain + ".load_model", {"model_name": MODEL, "precision": {"dtype": "fp8"}})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "invalid_request" and
            e.get("field") == "precision.dtype", "%s.load_model dtype fp8 refused" % domain, e)
    r = op(fleet, domain + ".load_model", {"model_name": MODEL, "steps": 3})
    e = err(r)
    t.check(not r.get("success") and e.get("code") == "invalid_request" and
            e.get("field") == "steps", "%s.load_model with an unknown field" % domain, e)


def inference(t, fleet, wid):
    d1 = common(t, fleet, "inference", wid)
    r = fleet.request(gen(), timeout=120, enc="msgpack")
    tm = (r.get("data") or {}).get("timings") or {}
    t.check(r.get("success") and tm.get("load_ms") == 0 and
            (r.get("data") or {}).get("dtype") == "fp32",
            "a generation after load_model loads nothing (timings.load_ms 0)", (err(r), tm))
    del d1
    # an unload while a generation runs on it: deferred
    req = gen(steps=150, size=256)
    req["stream"] = True
    d = fleet.client(zmq.DEALER)
    d.send(fl.encode(req, "msgpack"))
    final, unload, deadline = None, None, time.time() + 150
    while time.time() < deadline and final is None:
        if not d.poll(1000):
            continue
        m = fl.decode(d.recv_multipart()[-1])
        if m.get("message_type") == "progress":
            if unload is None and (m.get("step") or 0) >= 2:
                unload = op(fleet, "inference.unload_model", {"model_name": MODEL})
                listed = status_states(fleet, "inference")
            continue
        final = m
    d.close()
    ud = (unload or {}).get("data") or {}
    t.check(unload and unload.get("success") and ud.get("deferred") == 1 and
            ud.get("unloaded") == 0 and ud.get("loaded_models") == [],
            "unload during a generation: deferred 1", unload)
    t.check(final and final.get("success") and
            len((final.get("data") or {}).get("images") or []) == 1,
            "the generation still completes", final and err(final))
    t.check(unload and listed == [(MODEL, "unloading")],
            "meanwhile inference.status shows the engine as unloading", unload and listed)
    ok = fl.wait_for(lambda: status_models(fleet, "inference") == [], 5,
                     "the model to be gone")
    t.check(ok, "after the generation the model is gone", status_models(fleet, "inference"))
    time.sleep(1.5)
    t.check(worker_models(fleet, wid) == [], "system.workers: no model after the deferred drop",
            worker_models(fleet, wid))
    r = fleet.request(gen(), timeout=120, enc="msgpack")
    tm = (r.get("data") or {}).get("timings") or {}
    t.check(r.get("success") and tm.get("load_ms", 0) > 0,
            "the next generation loads it again", (err(r), tm))
    unload_checks(t, fleet, "inference", wid)
    # a dtype-specific unload leaves other dtypes alone
    op(fleet, "inference.load_model", {"model_name": MODEL, "precision": {"dtype": "fp32"}})
    r = op(fleet, "inference.unload_model", {"model_name": MODEL, "precision": {"dtype": "bf16"}})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("unloaded") == 0 and d.get("loaded_models") == [MODEL],
            "unload_model in bf16 leaves the fp32 engine", r)
    r = op(fleet, "inference.unload_model", {"model_name": MODEL,
                                             "precision": {"dtype": "float32"}})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("unloaded") == 1 and d.get("loaded_models") == [],
            "unload_model in float32 (an alias) drops it", r)


def conditioning(t, fleet, wid):
    common(t, fleet, "conditioning", wid)
    r = fleet.request({"message_type": "conditioning.encode_prompt", "request_id": rid(),
                       "data": {"prompt": "a cat", "model_name": MODEL,
                                "precision": {"dtype": "fp32"}}}, timeout=60, enc="msgpack")
    tm = (r.get("data") or {}).get("timings") or {}
    t.check(r.get("success") and tm.get("load_ms") == 0,
            "conditioning.encode_prompt after load_model loads nothing", (err(r), tm))
    unload_checks(t, fleet, "conditioning", wid)


def through_broker(t, fleet, wids, root):
    """model.load / model.unload from a client: the broker asks every worker
    that holds weights (a fan-out) and answers what each one did."""
    r = op(fleet, "model.load", {"model_name": MODEL})
    d = r.get("data") or {}
    per = {w["worker_id"]: w for w in d.get("workers", [])}
    t.check(r.get("success") and d.get("asked") == len(wids) and d.get("succeeded") == len(wids)
            and set(per) == set(wids),
            "model.load: every inference and conditioning worker loads it (%s)" % sorted(per),
            err(r))
    t.check(fl.wait_for(lambda: all(MODEL in worker_models(fleet, w) for w in wids), 5,
                        "the models in system.workers"),
            "system.workers lists the model on each of them")
    r = op(fleet, "model.load", {"model_name": MODEL, "domains": ["conditioning"]})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("asked") == 1 and
            d["workers"][0]["domain"] == "conditioning" and
            d["workers"][0]["result"].get("already_loaded") is True,
            "model.load with domains: [conditioning] asks only that worker (already loaded)",
            err(r))
    r = op(fleet, "model.load", {"model_name": "sdxl-tinny"})
    e = r.get("error") or {}
    t.check(e.get("code") == "not_found" and e.get("field") == "model_name" and
            MODEL in e.get("message", ""),
            "a misspelt name: the workers' not_found with the near match, naming the worker", e)
    r = fleet.request({"message_type": "model.load", "request_id": rid(), "gpu": 7,
                       "data": {"model_name": MODEL}}, timeout=10)
    t.check((r.get("error") or {}).get("code") == "no_worker",
            "model.load for a GPU no worker has: no_worker", r.get("error"))
    m = {"RequestId": rid(), "WorkerType": "MODEL", "Action": "unload_model",
         "Data": {"ModelName": MODEL}}
    r = fleet.request(m, timeout=60)
    t.check(r.get("Success") is True and r["Data"]["Succeeded"] == len(wids),
            "C# MODEL + unload_model: the model is dropped everywhere", r.get("Error"))
    t.check(fl.wait_for(lambda: all(MODEL not in worker_models(fleet, w) for w in wids), 5,
                        "the models gone from system.workers"),
            "system.workers: no model loaded any more")


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.access(GEN_BIN, os.X_OK):
        print("SKIP: sdxl-gen not built")
        return 77
    t = fl.Tally("worker_load")
    fleet = fl.Fleet("ipc", "load")
    tmp = tempfile.mkdtemp(prefix="sdxl-load-models-")
    root = os.path.join(tmp, "models")
    os.makedirs(root)
    subprocess.run([GEN_BIN, "make-tiny", os.path.join(root, MODEL), "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    try:
        fleet.start_broker(["--models-root", root])
        wi = fleet.start_worker("inference", ["--models-root", root, "--outputs-root",
                                              os.path.join(fleet.dir, "out"), "--max-models",
                                              "2", "--concurrency", "2"], wid="inf-load")
        wc = fleet.start_worker("conditioning", ["--models-root", root], wid="cond-load")
        fleet.wait_registered([wi.wid, wc.wid], 30)
        t.run(inference, fleet, wi.wid)
        t.run(conditioning, fleet, wc.wid)
        t.run(through_broker, fleet, [wi.wid, wc.wid], root)
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
