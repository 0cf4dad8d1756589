#!/usr/bin/python3
"""The scheduler domain through a real broker and two scheduler workers:

- scheduler.list: every class of the generation schema's enum, each with its
  parameters (type, default, rules) and aliases (the schema's with what they
  set, the engine's with their overrides), the request fields' rules as the
  schema has them;
- scheduler.info by class, short name and alias; unknown names answered
  invalid_request on `scheduler` with near matches;
- scheduler.timesteps equal to diffusers 0.27.2 (golden ref/schedulers: the
  tables for 1, 4 and 25 steps of every scheduler file) and to
  `sdxl-gen schedule` (the engine's CLI) for names users know, img2img
  strength as diffusers' get_timesteps;
- the inference worker, generating with the golden tiny model, makes as many
  model calls (its progress total) as scheduler.timesteps says for the same
  fields and the model's scheduler_config.json as config;
- scheduler.validate: ok with the resolved config, errors naming the field
  and the rule; bad input of every kind, and the workers still serving.
Skips (77) without the engine-built binaries."""
import json
import os
import struct
import subprocess
import sys
import uuid

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

GOLDEN = (os.environ.get("SDXL_GOLDEN_DIR") or os.environ.get("SDXL_GOLDEN_DIR_DEFAULT")
          or os.path.join(fl.SOURCE_ROOT, "..", "shared", "golden"))
SCHED_REF = os.path.join(GOLDEN, "ref", "schedulers")
GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def read_safetensors(path):
    """{name: list of numbers} for the 1-d F32/I64 tensors of a file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    head = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in head.items():
        if name == "__metadata__" or len(t["shape"]) != 1:
            continue
        b, e = t["data_offsets"]
        raw = blob[base + b:base + e]
        fmt = {"F32": "f", "I64": "q"}.get(t["dtype"])
        if fmt:
            out[name] = list(struct.unpack("<%d%s" % (t["shape"][0], fmt), raw))
    return out


def call(fleet, mtype, data, enc="msgpack"):
    return fleet.request({"message_type": mtype, "data": data}, timeout=30, enc=enc)


def err_of(r):
    return r.get("error") or {}


def close(a, b, rel=1e-5, abs_=1e-6):
    return len(a) == len(b) and all(abs(x - y) <= abs_ + rel * abs(y) for x, y in zip(a, b))


def check_list(t, fleet):
    schema = json.load(open(os.path.join(fl.SOURCE_ROOT, "schemas",
                                         "prompt_submission_schema.json")))
    sched = schema["properties"]["scheduler"]
    r = call(fleet, "scheduler.list", {})
    d = r.get("data") or {}
    items = d.get("schedulers") or []
    names = [s.get("name") for s in items]
    t.check(r.get("success") and sorted(names) == sorted(sched["enum"]),
            "list: the schema's classes, all of them (%d)" % len(names), names or r)
    t.check(d.get("default") == sched["default"], "list: the schema's default", d.get("default"))
    rf = d.get("request_fields") or {}
    steps_rule = schema["properties"]["hyperparameters"]["properties"]["num_inference_steps"]
    t.check(rf.get("num_inference_steps") == steps_rule,
            "list: num_inference_steps rule is the generation schema's", rf)
    by = {s.get("name"): s for s in items}
    dpm = by.get("DPMSolverMultistepScheduler") or {}
    params = {p["name"]: p for p in dpm.get("parameters", [])}
    so = params.get("solver_order") or {}
    t.check(so.get("type") == "integer" and so.get("default") == 2 and so.get("minimum") == 1
            and so.get("maximum") == 3, "list: DPM++ solver_order integer, default 2, 1..3", so)
    at = params.get("algorithm_type") or {}
    t.check(at.get("default") == "dpmsolver++" and "sde-dpmsolver++" in at.get("enum", []),
            "list: DPM++ algorithm_type default and allowed values", at)
    ts = params.get("timestep_spacing") or {}
    t.check(ts.get("default") == "leading", "list: SDXL base config's spacing is the default", ts)
    t.check(dpm.get("sigma_options", {}).get("karras") is True and dpm.get("has_sigmas") is True
            and dpm.get("timesteps_dtype") == "int64", "list: DPM++ karras, sigmas, int64",
            {k: dpm.get(k) for k in ("sigma_options", "has_sigmas", "timesteps_dtype")})
    ddim = by.get("DDIMScheduler") or {}
    t.check(ddim.get("sigma_options", {}).get("karras") is False and not ddim.get("has_sigmas"),
            "list: DDIM has no Karras sigmas and no sigma table", ddim.get("sigma_options"))
    t.check(by.get("HeunDiscreteScheduler", {}).get("order") == 2, "list: Heun is second order")
    al = {a["name"]: a for a in dpm.get("aliases", [])}
    k = al.get("DPM++ 2M Karras") or {}
    t.check(k.get("sets") == {"use_karras_sigmas": True} and k.get("accepted_by_generate") is True,
            "list: alias DPM++ 2M Karras sets use_karras_sigmas", k)
    sde = al.get("DPM++ 2M SDE Karras") or {}
    t.check(sde.get("engine_overrides", {}).get("algorithm_type") == "sde-dpmsolver++" and
            sde.get("accepted_by_generate") is False,
            "list: engine-only alias DPM++ 2M SDE Karras with its overrides", sde)
    n_alias = sum(len(s.get("aliases", [])) for s in items)
    t.check(n_alias >= len(sched["x-aliases"]), "list: every schema alias is listed (%d)" % n_alias)
    for s in items:
        missing = [p["name"] for p in s.get("parameters", []) if "default" not in p]
        t.check(not missing and s.get("parameters"), "list: %s parameters have defaults"
                % s.get("name"), missing)


def check_info(t, fleet):
    for name in ("DPMSolverMultistepScheduler", "DPMSolverMultistep", "dpm++_2m_karras",
                 "DPM++ 2M Karras"):
        r = call(fleet, "scheduler.info", {"scheduler": name})
        d = r.get("data") or {}
        karras = d.get("config", {}).get("use_karras_sigmas")
        t.check(r.get("success") and d.get("name") == "DPMSolverMultistepScheduler" and
                karras == ("arras" in name), "info %r -> DPMSolverMultistep, karras %s"
                % (name, karras), d.get("name") or r)
    r = call(fleet, "scheduler.info", {"scheduler": "Euler a"}, enc="json")
    t.check(r.get("success") and r["data"]["name"] == "EulerAncestralDiscreteScheduler" and
            r["data"]["timesteps_dtype"] == "float32", "info 'Euler a' over JSON", r.get("error"))
    r = call(fleet, "scheduler.info", {"scheduler": "DPM++ 2M Karas"})
    e = err_of(r)
    t.check(e.get("code") == "invalid_request" and e.get("field") == "scheduler" and
            "DPM++ 2M Karras" in e.get("message", ""),
            "info: a misspelt name -> invalid_request on scheduler, near matches", e)
    r = call(fleet, "scheduler.info", {"scheduler": "DPM++ SDE"})
    e = err_of(r)
    t.check(e.get("code") == "invalid_request" and "near" in e.get("message", ""),
            "info: DPM++ SDE (not implemented) is refused with near names", e)


def check_golden(t, fleet):
    meta_path = os.path.join(SCHED_REF, "schedulers.json")
    if not os.path.exists(meta_path):
        print("note: no golden ref/schedulers; diffusers comparison skipped")
        return
    meta = json.load(open(meta_path))["schedulers"]
    for key, m in sorted(meta.items()):
        ref = read_safetensors(os.path.join(SCHED_REF, key + ".safetensors"))
        ov = dict(m.get("overrides") or {})
        data = {"scheduler": m["cls"]}
        if "use_karras_sigmas" in ov:
            data["use_karras_sigmas"] = ov.pop("use_karras_sigmas")
        if ov:
            data["config"] = ov
        for n in (1, 4, 25):
            data["num_inference_steps"] = n
            r = call(fleet, "scheduler.timesteps", data)
            d = r.get("data") or {}
            want_ts = ref.get("n%d.timesteps" % n)
            want_sg = ref.get("n%d.sigmas" % n)
            got_ts = d.get("timesteps") or []
            exact = m["tables"]["n%d" % n]["timesteps_dtype"] == "int64"
            ok_ts = (got_ts == want_ts) if exact else close([f32(x) for x in got_ts], want_ts)
            ok_sg = (not want_sg and not d.get("sigmas")) or close(d.get("sigmas") or [],
                                                                   want_sg or [])
            ins = m["tables"]["n%d" % n]["init_noise_sigma"]
            ok_ins = abs(d.get("init_noise_sigma", -1) - ins) <= 1e-5 * max(1, ins)
            t.check(r.get("success") and ok_ts and ok_sg and ok_ins and
                    d.get("timesteps_dtype") == m["tables"]["n%d" % n]["timesteps_dtype"],
                    "timesteps %s n=%d equal diffusers (%s)" % (key, n,
                                                                "exact" if exact else "1e-5"),
                    r.get("error") or {"got": got_ts[:6], "want": (want_ts or [])[:6]})


def check_cli(t, fleet):
    """The same names through `sdxl-gen schedule` (the engine's CLI)."""
    if not os.access(GEN_BIN, os.X_OK):
        print("note: no sdxl-gen; CLI comparison skipped")
        return
    for name, steps, karras in (("Euler a", 7, False), ("DPM++ 2M SDE Karras", 12, False),
                                ("Heun", 5, False), ("DDIM", 9, False), ("PLMS", 6, False),
                                ("LMS", 10, True), ("UniPC", 8, False), ("LCM", 4, False)):
        argv = [GEN_BIN, "schedule", "--scheduler", name, "--steps", str(steps)]
        data = {"scheduler": name, "num_inference_steps": steps}
        if karras:
            argv.append("--karras")
            data["use_karras_sigmas"] = True
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        want = json.loads(out.stdout) if out.returncode == 0 else {}
        r = call(fleet, "scheduler.timesteps", data)
        d = r.get("data") or {}
        ts = [f32(x) for x in d.get("timesteps") or []]
        sg = [f32(x) for x in d.get("sigmas") or []]
        t.check(out.returncode == 0 and r.get("success") and
                ts == [f32(x) for x in want.get("timesteps", [])] and
                sg == [f32(x) for x in want.get("sigmas", [])] and
                f32(d.get("init_noise_sigma", 0)) == f32(want.get("init_noise_sigma", -1)),
                "timesteps %r x%d%s equal sdxl-gen schedule" % (name, steps,
                                                                 " karras" if karras else ""),
                out.stderr.strip() or r.get("error") or {"got": ts[:5], "want":
                                                         want.get("timesteps", [])[:5]})


def check_strength(t, fleet):
    # diffusers get_timesteps: init = int(N * strength), t_start = N - init, begin = t_start*order
    for name, n, s, order in (("Euler", 10, 0.55, 1), ("Heun", 10, 0.3, 2), ("DDIM", 20, 1.0, 1)):
        r = call(fleet, "scheduler.timesteps", {"scheduler": name, "num_inference_steps": n,
                                                "strength": s})
        d = r.get("data") or {}
        begin = (n - int(n * s)) * order
        t.check(r.get("success") and d.get("begin_index") == begin and
                d.get("model_calls") == len(d.get("timesteps", [])) - begin,
                "strength %s %g of %d: begin %d" % (name, s, n, begin), d.get("begin_index") or r)


def check_validate(t, fleet):
    r = call(fleet, "scheduler.validate", {"scheduler": "DPM++ 2M Karras",
                                           "num_inference_steps": 20,
                                           "config": {"solver_order": 3, "clip_sample": True}})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("valid") is True and d["config"]["solver_order"] == 3 and
            d["config"]["use_karras_sigmas"] is True and d.get("ignored_config") == ["clip_sample"],
            "validate: ok, resolved config, keys the class ignores listed", d or r)
    r = call(fleet, "scheduler.validate", {"scheduler": "LCM", "prediction_type": "v_prediction"})
    d = r.get("data") or {}
    t.check(r.get("success") and d.get("config", {}).get("prediction_type") == "v_prediction"
            and d.get("num_inference_steps") == 30,
            "validate: prediction_type applied, steps default from the schema (30)", d or r)
    # an engine alias's overrides sit above `config`, as above a model's scheduler_config.json
    r = call(fleet, "scheduler.validate", {"scheduler": "DPM++ 2M SDE", "config": {"solver_order": 3}})
    d = r.get("data") or {}
    t.check(r.get("success") and d["config"]["solver_order"] == 2 and
            d["config"]["algorithm_type"] == "sde-dpmsolver++",
            "validate: the alias's overrides win over config (the engine's layering)", d or r)
    bad = [
        ({"scheduler": "Euler", "num_inference_steps": 0}, "num_inference_steps", "minimum"),
        ({"scheduler": "Euler", "num_inference_steps": 151}, "num_inference_steps", "maximum"),
        ({"scheduler": "Euler", "num_inference_steps": "many"}, "num_inference_steps", "type"),
        ({"scheduler": "Euler", "strength": 1.5}, "strength", "maximum"),
        ({"scheduler": "Euler", "strength": 0.01, "num_inference_steps": 10}, "strength",
         "leaves no"),
        ({"scheduler": "DDIM", "use_karras_sigmas": True}, "use_karras_sigmas", "Karras"),
        ({"scheduler": "Euler", "use_karras_sigmas": "yes"}, "use_karras_sigmas", "type"),
        ({"scheduler": "Euler", "prediction_type": "flow"}, "prediction_type", "enum"),
        ({"scheduler": "DPM++ 2M", "config": {"solver_order": 4}}, "config.solver_order",
         "maximum"),
        ({"scheduler": "DPM++ 2M", "config": {"algorithm_type": "magic"}},
         "config.algorithm_type", "enum"),
        ({"scheduler": "DPM++ 2M", "config": {"timestep_spacing": 3}}, "config.timestep_spacing",
         "type"),
        ({"scheduler": "DPM++ 2M", "config": {"solver_ordr": 2}}, "config.solver_ordr",
         "additionalProperties"),
        ({"scheduler": "DPMSolverMultistep", "config": {"solver_order": 3,
                                                        "algorithm_type": "sde-dpmsolver++"}},
         "config.solver_order", "not defined"),
        ({"scheduler": "DPM++ 2M", "config": "solver_order=3"}, "config", "type"),
        ({"scheduler": "Euler", "steps": 20}, "steps", "additionalProperties"),
        ({"scheduler": 7}, "scheduler", "string"),
        ({"scheduler": ""}, "scheduler", "string"),
        ({}, "scheduler", "required"),
        ({"scheduler": "Eulr"}, "scheduler", "near"),
    ]
    for data, field, rule in bad:
        r = call(fleet, "scheduler.validate", data)
        e = err_of(r)
        t.check(e.get("code") == "invalid_request" and e.get("field") == field and
                rule in e.get("message", ""), "validate %s -> invalid_request on %s (%s)"
                % (json.dumps(data), field, rule), e)
    r = call(fleet, "scheduler.timesteps", {"scheduler": "Euler", "num_inference_steps": 1000})
    t.check(err_of(r).get("field") == "num_inference_steps", "timesteps: 1000 steps refused",
            err_of(r))
    r = call(fleet, "scheduler.step", {})
    e = err_of(r)
    t.check(e.get("code") == "not_available" and "inference worker" in e.get("message", ""),
            "step: not_available, says the loop runs in the inference worker", e)


def generate_calls(fleet, data):
    """Stream an inference.generate; (progress totals seen, reply)."""
    s = fleet.client(zmq.DEALER)
    req = {"message_type": "inference.generate", "request_id": "g-" + uuid.uuid4().hex[:8],
           "timeout_ms": 120000, "stream": True, "data": data}
    s.send(msgpack.packb(req, use_bin_type=True))
    totals, reply = set(), None
    try:
        while reply is None:
            if not s.poll(120000):
                raise TimeoutError("no reply to inference.generate")
            m = msgpack.unpackb(s.recv(), raw=False)
            if m.get("message_type") == "progress":
                if m.get("message") == "denoising":
                    totals.add(m.get("total"))
            else:
                reply = m
    finally:
        s.close()
    return totals, reply


def check_inference(t, fleet):
    model = os.path.join(GOLDEN, "model")
    if not os.path.isfile(os.path.join(model, "model_index.json")):
        print("note: no golden model; inference comparison skipped")
        return
    models = os.path.join(fleet.dir, "models")
    os.makedirs(os.path.join(models, "model"))
    for name in os.listdir(model):  # links to the files: a link out of the root is refused
        os.symlink(os.path.join(model, name), os.path.join(models, "model", name))
    w = fleet.start_worker("inference", ["--models-root", models, "--outputs-root",
                                         os.path.join(fleet.dir, "outputs")], wid="inf-1")
    fleet.wait_registered([w.wid], 20)
    with open(os.path.join(model, "scheduler", "scheduler_config.json")) as f:
        model_cfg = json.load(f)  # as diffusers saved it, _class_name and all
    for name, steps, karras in (("Heun", 3, False), ("DPM++ 2M Karras", 4, False),
                                ("PLMS", 3, False), ("LMS", 3, True)):
        gen = {"prompt": "a lighthouse", "model_name": "model", "scheduler": name,
               "hyperparameters": {"num_inference_steps": steps, "seed": 7,
                                   "guidance_scale": 5.0},
               "dimensions": {"width": 64, "height": 64}, "precision": {"dtype": "fp32"}}
        ask = {"scheduler": name, "num_inference_steps": steps, "config": model_cfg}
        if karras:
            gen["use_karras_sigmas"] = ask["use_karras_sigmas"] = True
        totals, reply = generate_calls(fleet, gen)
        r = call(fleet, "scheduler.timesteps", ask)
        d = r.get("data") or {}
        t.check(reply.get("success") and r.get("success") and
                totals == {d.get("model_calls")} and
                (reply.get("data") or {}).get("scheduler") == d.get("scheduler"),
                "inference %r x%d: %s model calls, as scheduler.timesteps (%s, %s)"
                % (name, steps, sorted(totals), d.get("model_calls"), d.get("scheduler")),
                reply.get("error") or r.get("error"))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("fleet_scheduler")
    fleet = fl.Fleet("ipc", "sched")
    try:
        fleet.start_broker()
        ws = [fleet.start_worker("scheduler", wid="sched-%d" % i) for i in (1, 2)]
        fleet.wait_registered([w.wid for w in ws], 20)
        r = call(fleet, "scheduler.list", {})
        if not r.get("success") and err_of(r).get("code") == "not_available":
            print("SKIP: sdxl-worker built without the engine")
            return 77
        t.run(check_list, fleet)
        t.run(check_info, fleet)
        t.run(check_golden, fleet)
        t.run(check_cli, fleet)
        t.run(check_strength, fleet)
        t.run(check_validate, fleet)
        t.run(check_inference, fleet)
        r = call(fleet, "scheduler.timesteps", {"scheduler": "Euler", "num_inference_steps": 4})
        t.check(r.get("success") and all(w.alive() for w in ws),
                "both workers alive and serving after the bad requests", r.get("error"))
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", e)
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
