#!/usr/bin/python3
"""The alias table, the message catalogue and the fleet, held against each
other with a real broker and one worker of every domain:

- every alias target of proto/actions.json (action rows and
  message_type_aliases) is a message type of proto/catalog.json, and so is
  every `WORKER + action -> type` example of proto/PROTOCOL.md;
- every catalogued type that is not planned gets an answer other than
  unknown_message_type (and so do the PROTOCOL.md examples, sent as C#
  worker_type + action);
- every planned type gets not_available.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

DOMAINS = ["device", "model", "conditioning", "scheduler", "inference", "postprocessing", "test"]


def load(rel):
    with open(os.path.join(fl.SOURCE_ROOT, rel)) as f:
        return json.load(f)


def catalogue():
    cat = load("proto/catalog.json")
    types = {}
    for dom, d in cat["domains"].items():
        for mt, m in d.get("messages", {}).items():
            types[mt] = m.get("status")
    return types


def protocol_examples():
    """`DEVICE` + `get_device_memory` -> `device.get_memory` style examples."""
    with open(os.path.join(fl.SOURCE_ROOT, "proto", "PROTOCOL.md")) as f:
        text = f.read()
    return re.findall(r"`([A-Z]+)`\s+\+\s+`([A-Za-z_]+)`\s+->\s+`([a-z_]+\.[a-z_]+)`", text)


def check_tables(t):
    types = catalogue()
    acts = load("proto/actions.json")
    aliases = acts.get("message_type_aliases", {})
    for row in acts["actions"]:
        mt = aliases.get(row["message_type"], row["message_type"])
        t.check(mt in types, "action %r -> %s is catalogued" % (row["action"], mt))
    for src, dst in aliases.items():
        t.check(dst in types, "message_type alias %s -> %s is catalogued" % (src, dst))
    ex = protocol_examples()
    t.check(len(ex) >= 1, "PROTOCOL.md has worker_type + action examples", ex)
    for wt, action, target in ex:
        final = aliases.get(target, target)
        t.check(final in types, "PROTOCOL.md example %s + %s -> %s resolves to a catalogued type "
                "(%s)" % (wt, action, target, final))
    return types, ex


def ask(fleet, msg, timeout=15.0):
    try:
        return fleet.request(msg, timeout=timeout, enc="msgpack")
    except TimeoutError as e:
        return {"success": False, "error": {"code": "no reply", "message": str(e)}}


def code_of(r):
    """The outcome of a native or a C#-shaped reply: "ok" or the error code."""
    if r.get("success") or r.get("Success"):
        return "ok"
    err = r.get("error") or r.get("Error") or {}
    return err.get("code") or err.get("Code")


def check_fleet(t, fleet, types, examples):
    aliases = load("proto/actions.json").get("message_type_aliases", {})
    roots = os.path.join(fleet.dir, "roots")
    os.makedirs(os.path.join(roots, "models"))
    os.makedirs(os.path.join(roots, "outputs"))
    extra = {"inference": ["--models-root", os.path.join(roots, "models"),
                           "--outputs-root", os.path.join(roots, "outputs")],
             "conditioning": ["--models-root", os.path.join(roots, "models")]}
    workers = [fleet.start_worker(d, extra=extra.get(d, ()), wid="cat-" + d) for d in DOMAINS]
    fleet.wait_registered([w.wid for w in workers], timeout=30.0)
    last = []
    for mt, status in sorted(types.items()):
        if mt == "test.crash":
            last.append(mt)  # kills its worker: asked last
            continue
        data = {"request_id": "nobody"} if mt == "system.cancel" else {}
        if mt == "test.sleep":
            data = {"ms": 10}
        r = ask(fleet, {"message_type": mt, "request_id": "cat-" + mt, "timeout_ms": 10000,
                        "data": data})
        c = code_of(r)
        if status == "planned":
            t.check(c == "not_available", "planned %s -> not_available (%s)" % (mt, c),
                    r.get("error"))
        else:
            t.check(c not in ("unknown_message_type", "no reply"),
                    "%s %s is answered (%s)" % (status, mt, c), r.get("error"))
    for wt, action, target in examples:
        r = ask(fleet, {"WorkerType": wt, "Action": action, "RequestId": "ex-" + action})
        c = code_of(r)
        final = aliases.get(target, target)
        want = "not_available" if types.get(final) == "planned" else "ok"
        # the orchestrator's operations need their data (a batch needs items):
        # without it they answer invalid_request naming the field, which is
        # an answer from the handler all the same
        served = c == want or (want == "ok" and final.startswith("processing.") and
                               c == "invalid_request" and (r.get("Error") or {}).get("Field"))
        t.check(served, "C# %s + %s (-> %s) is answered %s (%s)" % (wt, action, final, want, c),
                r.get("Error"))
    for mt in last:
        r = ask(fleet, {"message_type": mt, "timeout_ms": 3000, "data": {"mode": "exit"}})
        t.check(code_of(r) != "unknown_message_type", "%s is answered (%s)" % (mt, code_of(r)))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("catalog_drift")
    types, examples = check_tables(t)
    fleet = fl.Fleet("ipc", "catalog")
    try:
        fleet.start_broker()
        check_fleet(t, fleet, types, examples)
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", e)
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
