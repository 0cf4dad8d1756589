#!/usr/bin/python3
"""Two inference workers behind one broker, over two models (the golden tiny
SDXL `model` and the project's own `sdxl-tiny` from sdxl-gen make-tiny):

- model affinity: once each worker has loaded one model (--max-models 1),
  requests for each model go to the worker that holds it (the reply's
  timing.worker), alternating models, and the images are those of the first
  run (the same request and seed give the same image on any worker);
- a worker SIGKILLed in the middle of a generation (after its progress
  reached step 2): the broker re-dispatches the request to the other worker,
  which completes it with the identical image (timing.attempts 2);
- bad model names (a misspelt one lists the near match from the worker's
  catalogue), sizes and schedulers get clear errors and the surviving worker
  keeps serving.
Skips (77) without the golden data or without sdxl-gen."""
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

GOLDEN = os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT", "")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")


def gen(model, steps=3, size=64, seed=11, **extra):
    data = {"prompt": "a red bicycle", "model_name": model,
            "hyperparameters": {"num_inference_steps": steps, "seed": seed},
            "dimensions": {"width": size, "height": size}, "precision": {"dtype": "fp32"}}
    data.update(extra)
    return {"message_type": "inference.generate", "request_id": "m-" + uuid.uuid4().hex[:8],
            "timeout_ms": 120000, "data": data}


def ask(fleet, req, timeout=120):
    r = fleet.request(req, timeout=timeout, enc="msgpack")
    d = r.get("data") or {}
    img = d["images"][0]["image"] if r.get("success") else None
    return r, img, (r.get("timing") or {}).get("worker")


def models_seen(fleet):
    return {(w.get("worker_id") or w.get("id")): set(w.get("models") or [])
            for w in fleet.workers()}


def budget(t, root):
    """--max-model-mb: a second model evicts the first when both would not
    fit, though --max-models would allow four."""
    fleet = fl.Fleet("ipc", "budget")
    try:
        fleet.start_broker(["--models-root", root])
        w = fleet.start_worker("inference", ["--models-root", root, "--outputs-root",
                                             os.path.join(fleet.dir, "out"), "--max-models", "4",
                                             "--max-model-mb", "20"], wid="inf-budget")
        fleet.wait_registered([w.wid], 20)
        r1, _, _ = ask(fleet, gen("model"))
        st1 = fleet.request({"message_type": "inference.status"}, timeout=5)["data"]["engine"]
        r2, _, _ = ask(fleet, gen("sdxl-tiny"))
        st2 = fleet.request({"message_type": "inference.status"}, timeout=5)["data"]["engine"]
        one = [(m["name"], round(m["mb"], 1)) for m in st1.get("loaded_models", [])]
        two = [(m["name"], round(m["mb"], 1)) for m in st2.get("loaded_models", [])]
        t.check(r1.get("success") and r2.get("success") and [n for n, _ in one] == ["model"] and
                [n for n, _ in two] == ["sdxl-tiny"] and st2.get("max_model_mb") == 20 and
                all(0 < mb <= 20 for _, mb in one + two),
                "memory budget 20 MB: the second model (%s) evicts the first (%s)" % (two, one),
                (st1, st2))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    if not os.path.isdir(os.path.join(GOLDEN, "model")) or not os.access(GEN_BIN, os.X_OK):
        print("SKIP: golden data or sdxl-gen not found")
        return 77
    t = fl.Tally("fleet_multi")
    fleet = fl.Fleet("ipc", "multi")
    root = os.path.join(tempfile.mkdtemp(prefix="sdxl-multi-models-"), "models")
    os.makedirs(root)
    shutil.copytree(os.path.join(GOLDEN, "model"), os.path.join(root, "model"))  # no symlinks out
    subprocess.run([GEN_BIN, "make-tiny", os.path.join(root, "sdxl-tiny"), "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    outs = os.path.join(fleet.dir, "outputs")
    args = ["--models-root", root, "--outputs-root", outs, "--max-models", "1"]
    try:
        fleet.start_broker(["--models-root", root])
        w1 = fleet.start_worker("inference", args, wid="inf-a")
        w2 = fleet.start_worker("inference", args, wid="inf-b")
        fleet.wait_registered([w1.wid, w2.wid], 20)

        # one model per worker: the second request goes to the idle worker
        ra, img_a, wa = ask(fleet, gen("model"))
        rb, img_b, wb = ask(fleet, gen("sdxl-tiny"))
        t.check(img_a and img_b and wa and wb and wa != wb and img_a != img_b,
                "first runs: 'model' on %s, 'sdxl-tiny' on %s (different images)" % (wa, wb),
                (ra.get("error"), rb.get("error")))
        fl.wait_for(lambda: models_seen(fleet).get(wa) == {"model"} and
                    models_seen(fleet).get(wb) == {"sdxl-tiny"}, 5,
                    "the broker to see each worker's model")
        routed, same = [], True
        for model in ["sdxl-tiny", "model", "model", "sdxl-tiny", "model", "sdxl-tiny"]:
            r, img, wid = ask(fleet, gen(model))
            routed.append((model, wid))
            same &= img == (img_a if model == "model" else img_b)
        t.check(all(wid == (wa if m == "model" else wb) for m, wid in routed),
                "model affinity: every request went to the worker holding its model", routed)
        t.check(same, "the same request and seed give the same image on every run")

        # a worker killed mid-generation: the request completes on the other one
        ref, ref_img, _ = ask(fleet, gen("model", steps=24, size=512, seed=99))
        req = gen("model", steps=24, size=512, seed=99)
        req["stream"] = True
        d = fleet.client(zmq.DEALER)
        d.send(fl.encode(req, "msgpack"))
        killed, final, deadline = None, None, time.time() + 120
        while time.time() < deadline and final is None:
            if not d.poll(1000):
                continue
            m = fl.decode(d.recv_multipart()[-1])
            if m.get("message_type") == "progress":
                step = m.get("step") or 0
                if killed is None and step >= 2:
                    busy = [w.get("worker_id") for w in fleet.workers()
                            if w.get("in_flight", 0) > 0]
                    victim = w1 if w1.wid in busy else w2
                    victim.p.kill()
                    killed = victim.wid
                continue
            final = m
        d.close()
        fr = final or {}
        fimg = fr.get("success") and fr["data"]["images"][0]["image"]
        tm = fr.get("timing") or {}
        t.check(killed and fimg and fimg == ref_img and tm.get("worker") not in (None, killed) and
                tm.get("attempts") == 2,
                "SIGKILL of %s mid-generation: completed on %s (attempt %s), the identical image"
                % (killed, tm.get("worker"), tm.get("attempts")),
                (fr.get("error"), tm, ref.get("error")))

        alive = w2 if killed == w1.wid else w1
        for what, req, field in (
                ("an unknown model", gen("no_such_model"), "model_name"),
                ("a size not a multiple of 8", gen("model", size=100), "dimensions.width"),
                ("an unknown scheduler", gen("model", scheduler="Bogus 3M"), "scheduler")):
            r, _, _ = ask(fleet, req)
            e = r.get("error") or {}
            t.check(not r.get("success") and e.get("field") == field and e.get("message"),
                    "%s: %s on %s (%s)" % (what, e.get("code"), field, e.get("message")), e)
        r, _, _ = ask(fleet, gen("sdxl-tiyn"))
        e = r.get("error") or {}
        t.check(e.get("field") == "model_name" and "near: sdxl-tiny" in e.get("message", ""),
                "a misspelt model name: the error lists the near match (%s)" % e.get("message"), e)
        r, img, wid = ask(fleet, gen("model"))
        t.check(img == img_a and wid == alive.wid and alive.alive(),
                "the surviving worker still serves after the errors", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", repr(e))
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    try:
        budget(t, root)
    except Exception as e:  # noqa: BLE001
        t.check(False, "budget fleet", repr(e))
    shutil.rmtree(os.path.dirname(root), ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
