#!/usr/bin/python3
"""Fault injection with real processes (issue 16's reliability figures).
Every scenario asserts that no request is lost or duplicated: each client
request gets exactly one final reply (progress frames aside), and each
workflow session ends once, with one step_finished per step and one output.

  workflow_stage_kills  sdxl_txt2img (tiny model, two workers per domain):
                        SIGKILL the worker that holds the encode, the denoise
                        and the finalize step in turn (the request delivered
                        and not yet answered: both workers of that domain are
                        SIGSTOPped while the session starts, the holder is
                        killed, the other resumed), and the denoise worker
                        mid-run (after its first progress). The session
                        completes on the other worker with the pixels of one
                        inference.generate and exactly one saved file.
  broker_sigstop        the broker SIGSTOPped for 2.5x the heartbeat expiry
                        with requests running and queued, then SIGCONT: every
                        request answered once; the running ones are not run
                        again (the reconnected workers resume them in READY).
  silent_worker         a worker that stops heartbeating but keeps its socket:
                        a real one SIGSTOPped (its late reply after SIGCONT is
                        dropped; it comes back) and a scripted one that
                        registers, takes a request and goes quiet.
  garbage_worker        a scripted worker that answers with garbage: bytes
                        that are not msgpack, msgpack that is not a map, a
                        reply with no `success`, a reply for an unknown id, a
                        wrong protocol frame, an unknown command, a second
                        reply for one request, a READY with nonsense fields.
                        The broker stays up and each request gets one reply.
  full_disk             postprocessing.finalize into an output root that is
                        full (a 1 MiB tmpfs when root; otherwise RLIMIT_FSIZE,
                        a per-file limit): one clear error, no partial or
                        temp file left, the worker serves on and saves once
                        space is back; a workflow whose save step hits it
                        fails once with that error.
  locked_state_db       the broker's SQLite state file held by another
                        process (BEGIN EXCLUSIVE): the broker refuses to
                        start and says why; once released it starts and takes
                        the file for itself, so a second writer is refused
                        while it runs and its sessions are all on disk.
"""
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
import pngutil  # noqa: E402

GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
READY, REQUEST, REPLY, PROGRESS, HEARTBEAT, DISCONNECT, CANCEL = range(1, 8)


def req(mt, data=None, **env):
    m = {"message_type": mt, "request_id": "f-" + uuid.uuid4().hex[:8], "data": data or {}}
    m.update(env)
    return m


def call(fleet, mt, data=None, timeout=10, enc="json", **env):
    return fleet.request(req(mt, data, **env), timeout=timeout, enc=enc)


def send(sock, msg):
    sock.send(fl.encode(msg, "msgpack"))


def once_each(got, ids):
    return {i: len(got.get(i, [])) for i in ids} == {i: 1 for i in ids} and set(got) == set(ids)


def next_event(sub, pred, timeout, what, keep=None):
    """The first event for which pred holds; every event read on the way
    (that one included) is appended to keep."""
    end = fl.now() + timeout
    seen = [] if keep is None else keep
    while True:
        left = end - fl.now()
        if left <= 0 or not sub.poll(int(left * 1000)):
            raise TimeoutError("no event: %s (saw %s)" % (what, [x.get("event")
                                                               for x in seen[-8:]]))
        frames = sub.recv_multipart()
        e = msgpack.unpackb(frames[-1], raw=False)
        seen.append(e)
        if pred(e):
            return e


def drain_events(sub, sid, timeout=0.5):
    out = []
    while sub.poll(int(timeout * 1000)):
        e = msgpack.unpackb(sub.recv_multipart()[-1], raw=False)
        if e.get("session_id") == sid:
            out.append(e)
    return out


def session(fleet, sid, results="summary"):
    return call(fleet, "processing.session_get", {"session_id": sid, "results": results})["data"]


def wait_session(fleet, sid, timeout=90):
    return fl.wait_for(lambda: (lambda s: s if s["status"] in ("completed", "failed",
                                                               "cancelled") else None)(
        session(fleet, sid)), timeout, "session %s to end" % sid, 0.1)


def gen_data(seed=21, steps=4, size=64):
    return {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry",
            "model_name": "sdxl-tiny",
            "hyperparameters": {"num_inference_steps": steps, "seed": seed,
                                "guidance_scale": 5.0},
            "dimensions": {"width": size, "height": size}, "precision": {"dtype": "fp32"}}


def files_under(d):
    out = []
    for base, _, names in os.walk(d):
        out.extend(os.path.join(base, n) for n in names)
    return sorted(out)


# ------------------------------------------------- SIGKILL per workflow stage

STAGES = (("encode", "conditioning"), ("denoise", "inference"), ("finalize", "postprocessing"))


def workflow_stage_kills(t):
    fleet = fl.Fleet("ipc", "fault-wf")
    try:
        root = fl.tiny_model(fleet.dir)
        outs = os.path.join(fleet.dir, "outputs")
        os.makedirs(outs)
        fleet.start_broker(["--models-root", root, "--outputs-root", outs, "--state-db",
                            os.path.join(fleet.dir, "state", "broker.db")])
        args = {"conditioning": ["--models-root", root],
                "inference": ["--models-root", root, "--outputs-root", outs],
                "postprocessing": ["--outputs-root", outs]}
        pool = {}

        def start(dom, x):
            w = fleet.start_worker(dom, args[dom], wid="%s-%s" % (dom[:4], x))
            pool.setdefault(dom, {})[x] = w
            return w
        for dom in args:
            for x in "ab":
                start(dom, x)
        fleet.wait_registered([w.wid for d in pool.values() for w in d.values()], 40)
        one = fleet.request(req("inference.generate", gen_data(), timeout_ms=120000),
                            timeout=120, enc="msgpack")
        t.check(one.get("success") is True, "reference: one inference.generate", one.get("error"))
        ref = pngutil.pixels(one["data"]["images"][0]["image"])
        sub = fl.subscriber(fleet, "session.")

        def run(label, idx, dom, conf, when, ref=ref):
            """Start a session; `when` kills a worker of `dom` at step idx and
            returns (victim, survivor). Checks the session's end."""
            before = set(files_under(outs))
            drain_events(sub, None, 0.1)
            holder = {}
            r = call(fleet, "processing.workflow_execute",
                     {"workflow_id": "sdxl_txt2img", "parameters": conf}, enc="msgpack")
            if not t.check(r.get("success") is True, "%s: session accepted" % label, r):
                return
            sid = r["data"]["session_id"]
            victim, survivor = when(sid, holder)
            s = wait_session(fleet, sid, 120)
            s = session(fleet, sid, "last")
            evs = drain_events(sub, sid, 1.0)
            kinds = [e["event"] for e in holder.get("events", []) + evs
                     if e.get("session_id") == sid]
            fin = s["steps"][2].get("result") or {}
            new = sorted(set(files_under(outs)) - before)
            t.check(s["status"] == "completed" and s["steps"][idx]["worker"] == survivor.wid,
                    "%s: the session completed, step %d on the other worker (%s)" %
                    (label, idx + 1, s["steps"][idx]["worker"]), s.get("error"))
            ended = [k for k in kinds if k in ("completed", "failed", "cancelled")]
            fins = [e.get("step") for e in holder.get("events", []) + evs
                    if e["event"] == "step_finished" and e.get("session_id") == sid]
            t.check(ended == ["completed"] and sorted(fins) == [0, 1, 2],
                    "%s: one end event and one step_finished per step" % label, (ended, fins))
            t.check(new == [fin.get("path")] and fin.get("path") and
                    pngutil.pixels(open(fin["path"], "rb").read()) == ref,
                    "%s: exactly one saved file, the pixels of inference.generate" % label, new)
            t.check(not victim.alive(), "%s: the victim is dead" % label)
            # bring the domain back to two workers for the next stage
            victim.wait(5)
            x = [k for k, w in pool[dom].items() if w is victim][0]
            fleet.wait_registered([start(dom, x).wid], 30)

        def stop_domain_then_kill(idx, dom):
            ws = list(pool[dom].values())
            for w in ws:
                w.signal(signal.SIGSTOP)

            def when(sid, holder):
                holder["events"] = []
                next_event(sub, lambda e: e.get("session_id") == sid and
                           e["event"] == "step_started" and e.get("step") == idx, 30,
                           "step %d started" % idx, holder["events"])
                v = fl.wait_for(lambda: next((w for w in ws if fl.in_flight(fleet, w.wid) == 1),
                                             None), 5, "a %s worker to hold it" % dom)
                other = [w for w in ws if w is not v][0]
                v.signal(signal.SIGKILL)
                for w in ws:
                    w.signal(signal.SIGCONT)
                return v, other
            return when

        for idx, (step, dom) in enumerate(STAGES):
            run("SIGKILL at %s (%s)" % (step, dom), idx, dom, gen_data(),
                stop_domain_then_kill(idx, dom))

        def mid_denoise(sid, holder):
            holder["events"] = []
            next_event(sub, lambda e: e.get("session_id") == sid and e["event"] == "progress" and
                       e.get("step") == 1, 60, "denoise progress", holder["events"])
            ws = list(pool["inference"].values())
            v = fl.wait_for(lambda: next((w for w in ws if fl.in_flight(fleet, w.wid) == 1), None),
                            5, "the inference worker that holds it")
            v.signal(signal.SIGKILL)
            return v, [w for w in ws if w is not v][0]
        conf = gen_data(steps=60, size=128)  # long enough to be killed while it runs
        two = fleet.request(req("inference.generate", conf, timeout_ms=120000), timeout=120,
                            enc="msgpack")
        run("SIGKILL mid-denoise (after its first progress)", 1, "inference", conf, mid_denoise,
            pngutil.pixels(two["data"]["images"][0]["image"]))
    finally:
        for d in list(pool.values()) if "pool" in dir() else []:
            for w in d.values():
                w.signal(signal.SIGCONT)
        if t.failed:
            fleet.dump_logs()
        fleet.close()


# ------------------------------------------------------------ SIGSTOP broker

def broker_sigstop(t):
    """Four 10 s requests running on two workers and two more queued in the
    broker; the broker stopped 7.5 s (2.5x the heartbeat expiry). The workers
    give up on it and reconnect; their READY resumes what they still run, so
    nothing that was running runs twice."""
    fleet = fl.Fleet("tcp", "fault-bstop")
    try:
        fleet.start_broker()
        ws = [fleet.start_worker("test", ["--concurrency", "2", "--capacity", "2"],
                                 wid="bs-%d" % i) for i in range(2)]
        fleet.wait_registered([w.wid for w in ws])
        s = fleet.client(zmq.DEALER)
        long_ids = ["bs-long-%d" % i for i in range(4)]
        short_ids = ["bs-short-%d" % i for i in range(2)]
        for rid in long_ids:
            send(s, {"message_type": "test.sleep", "request_id": rid,
                     "data": {"ms": 10000, "steps": 20}})
        fl.wait_for(lambda: sum(fl.in_flight(fleet, w.wid) for w in ws) == 4, 5, "4 running")
        for rid in short_ids:
            send(s, {"message_type": "test.sleep", "request_id": rid,
                     "data": {"ms": 500, "steps": 2}})
        time.sleep(0.3)
        fleet.broker.signal(signal.SIGSTOP)
        time.sleep(7.5)  # heartbeats 1 s x liveness 3: 2.5x the expiry
        fleet.broker.signal(signal.SIGCONT)
        ids = long_ids + short_ids
        got = fl.collect(s, ids, 40, settle=2.0)
        t.check(once_each(got, ids), "broker stopped 7.5 s with 4 requests running and 2 "
                "queued: each answered exactly once", {k: len(v) for k, v in got.items()})
        oks = {i: r for i in ids for r in got.get(i, []) if r.get("success") is True}
        t.check(len(oks) == len(ids), "and all succeeded",
                [(r.get("request_id"), r.get("error")) for i in ids for r in got.get(i, [])
                 if not r.get("success")])
        att = {i: oks[i].get("timing", {}).get("attempts") for i in long_ids if i in oks}
        t.check(att == {i: 1 for i in long_ids},
                "the 4 running ones were not run again: the reconnected workers resumed them "
                "(attempts %s)" % sorted(att.values()), att)
        st = call(fleet, "system.status")["data"].get("requests", {})
        # a worker may reconnect twice on a slow machine: each carry-over counts
        t.check(st.get("resumed", 0) >= 4 and st.get("broker_stalls") == 1,
                "system.status counts the resumed requests (%s) and 1 broker stall" %
                st.get("resumed"), st)
        fleet.wait_registered([w.wid for w in ws], 15)
        t.check(all(w.alive() for w in ws), "the workers are registered and alive")
        r = fleet.request({"message_type": "test.echo", "data": {"after": "stop"}})
        t.check(r.get("success") is True, "new requests flow", r)
        s.close()
    finally:
        fleet.broker.signal(signal.SIGCONT)
        if t.failed:
            fleet.dump_logs()
        fleet.close()


# ------------------------------------------------------------- silent worker

class ScriptedWorker:
    """A worker written here against proto/PROTOCOL.md §2 (SDXW01): it
    registers and then behaves as a scenario tells it to."""

    def __init__(self, fleet, wid, caps=("test.echo", "test.sleep")):
        self.sock = fleet.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(fleet.backend)
        self.wid = wid
        self.caps = list(caps)

    def send(self, cmd, rid=None, body=None, proto=b"SDXW01"):
        frames = [b"", proto, bytes([cmd])]
        if rid is not None:
            frames.append(rid.encode() if isinstance(rid, str) else rid)
        if body is not None:
            frames.append(body if isinstance(body, bytes) else
                          msgpack.packb(body, use_bin_type=True))
        self.sock.send_multipart(frames)

    def ready(self, **over):
        b = {"worker_id": self.wid, "domain": "test", "gpu": -1, "capabilities": self.caps,
             "concurrency": 1, "capacity": 1, "models": [], "pid": os.getpid(),
             "host": socket.gethostname(), "version": "scripted"}
        b.update(over)
        self.send(READY, body=b)

    def next_request(self, timeout):
        end = fl.now() + timeout
        while True:
            left = end - fl.now()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TimeoutError("no REQUEST for scripted worker " + self.wid)
            f = self.sock.recv_multipart()
            if len(f) >= 4 and f[2] == bytes([REQUEST]):
                return f[3].decode(), msgpack.unpackb(f[4], raw=False)

    def heartbeat(self):
        self.send(HEARTBEAT)

    def close(self):
        self.sock.close()


def silent_worker(t):
    fleet = fl.Fleet("ipc", "fault-silent")
    try:
        fleet.start_broker()
        w1 = fleet.start_worker("test", wid="quiet-real")
        w2 = fleet.start_worker("test", wid="steady")
        fleet.wait_registered([w1.wid, w2.wid])
        s = fleet.client(zmq.DEALER)
        # a real worker stopped (SIGSTOP): alive, socket open, no heartbeats
        send(s, {"message_type": "test.sleep", "request_id": "held-1", "stream": True,
                 "data": {"ms": 800, "steps": 4}})
        fl.wait_for(lambda: fl.in_flight(fleet, w1.wid) == 1 or fl.in_flight(fleet, w2.wid) == 1, 5,
                    "held-1 dispatched")
        holder, other = (w1, w2) if fl.in_flight(fleet, w1.wid) == 1 else (w2, w1)
        holder.signal(signal.SIGSTOP)
        t0 = fl.now()
        got = fl.collect(s, ["held-1"], 20, settle=0.1)
        r = (got.get("held-1") or [{}])[0]
        dt = fl.now() - t0
        t.check(r.get("success") is True and r["data"].get("worker_id") == other.wid and
                r.get("timing", {}).get("attempts") == 2,
                "a SIGSTOPped worker's request finished on the other worker in %.1fs "
                "(second attempt)" % dt, r)
        holder.signal(signal.SIGCONT)  # it wakes, finishes, replies late
        late = fl.collect(s, [], 3.0, settle=0)
        t.check(not any(late.values()), "its late reply after SIGCONT is dropped (no duplicate)",
                late)
        fleet.wait_registered([holder.wid], 15)
        t.check(holder.alive(), "the stopped worker registers again after SIGCONT")
        st = call(fleet, "system.status")["data"]
        lost = [w.get("worker_id") for w in st.get("lost_workers", [])]
        t.check(holder.wid in lost, "system.status lists it among the lost workers", lost)

        # a scripted worker: registers, takes a request, never heartbeats again
        for w in (w1, w2):
            w.signal(signal.SIGTERM)
        for w in (w1, w2):
            w.wait(10)
        fl.wait_for(lambda: not ({"quiet-real", "steady"} & fleet.worker_ids()), 10, "drained")
        q = ScriptedWorker(fleet, "mute")
        q.ready()
        fleet.wait_registered(["mute"])
        send(s, {"message_type": "test.echo", "request_id": "to-mute", "data": {"x": 1}})
        rid, _ = q.next_request(5)
        t.check(rid == "to-mute", "the mute worker took the request")
        w3 = fleet.start_worker("test", wid="rescuer")
        fleet.wait_registered(["rescuer"])
        t0 = fl.now()
        got = fl.collect(s, ["to-mute"], 20, settle=1.0)
        r = (got.get("to-mute") or [{}])[0]
        t.check(once_each(got, ["to-mute"]) and r.get("success") is True and
                r["data"] == {"x": 1},
                "a registered worker that goes quiet: its request is answered once, by the "
                "rescuer, %.1fs later" % (fl.now() - t0), got)
        q.send(REPLY, "to-mute", {"success": True, "data": {"x": "late"}})
        late = fl.collect(s, [], 1.5, settle=0)
        t.check(not any(late.values()), "the mute worker's reply after it was dropped is "
                "ignored", late)
        t.check("mute" not in fleet.worker_ids(), "the broker dropped the mute worker")
        q.close()
        s.close()
        del w3
    finally:
        for p in fleet.procs:
            p.signal(signal.SIGCONT)
        if t.failed:
            fleet.dump_logs()
        fleet.close()


# ------------------------------------------------------------ garbage worker

def garbage_worker(t):
    fleet = fl.Fleet("ipc", "fault-garbage")
    try:
        fleet.start_broker()
        g = ScriptedWorker(fleet, "garbage")
        g.ready()
        fleet.wait_registered(["garbage"])
        s = fleet.client(zmq.DEALER)
        sends = {
            "not-msgpack": lambda rid: g.send(REPLY, rid, b"\xc1\xc1\xff garbage"),
            "not-a-map": lambda rid: g.send(REPLY, rid, [1, 2, 3]),
            "no-success": lambda rid: g.send(REPLY, rid, {"data": {"x": 1}}),
            "success-not-bool": lambda rid: g.send(REPLY, rid, {"success": "yes", "data": 3}),
            "no-body": lambda rid: g.send(REPLY, rid),
            "truncated-msgpack": lambda rid: g.send(REPLY, rid, msgpack.packb(
                {"success": True, "data": {"blob": "x" * 100}})[:40]),
        }
        for name, fn in sends.items():
            rid = "g-" + name
            send(s, {"message_type": "test.echo", "request_id": rid, "timeout_ms": 8000,
                     "data": {"v": name}})
            got_rid, _ = g.next_request(5)
            fn(got_rid)
            got = fl.collect(s, [rid], 10, settle=0.3)
            r = (got.get(rid) or [{}])[0]
            t.check(once_each(got, [rid]) and r.get("success") is False and
                    r.get("error", {}).get("code") and
                    fleet.broker.alive(),
                    "garbage reply (%s): one error reply (%s: %s)" %
                    (name, r.get("error", {}).get("code"), r.get("error", {}).get("message")),
                    got)
            if "garbage" not in fleet.worker_ids():
                g.ready()
                fleet.wait_registered(["garbage"])
        # frames that are not a reply to anything: unknown id, bad protocol,
        # unknown command, a duplicate reply; the one live request is answered once
        send(s, {"message_type": "test.echo", "request_id": "g-dup", "timeout_ms": 8000,
                 "data": {"v": "dup"}})
        rid, _ = g.next_request(5)
        g.send(REPLY, "no-such-request", {"success": True, "data": {}})
        g.send(REPLY, rid, {"success": True, "data": {"v": "first"}}, proto=b"SDXW99")
        g.send(0x42, rid, {"success": True})
        g.sock.send_multipart([b"", b"SDXW01"])  # no command frame
        g.send(REPLY, rid, {"success": True, "data": {"v": "first"}})
        g.send(REPLY, rid, {"success": True, "data": {"v": "second"}})
        got = fl.collect(s, ["g-dup"], 10, settle=1.0)
        r = (got.get("g-dup") or [{}])[0]
        t.check(once_each(got, ["g-dup"]) and r.get("success") is True and
                r.get("data") == {"v": "first"},
                "unknown id, bad protocol frame, unknown command, short message, then two "
                "replies: the client gets the first reply once", got)
        if "garbage" not in fleet.worker_ids():
            g.ready()
        # nonsense READY fields are refused: DISCONNECT, never registered
        told = []
        for k, bad in enumerate(({"capacity": 0}, {"concurrency": -3}, {"domain": 7},
                                 {"capabilities": "test.echo"}, {"worker_id": "x" * 500},
                                 {"gpu": "cuda:0"}, {"models": [1, 2]})):
            h = ScriptedWorker(fleet, "bad-ready-%d" % k)
            h.ready(**bad)
            f = h.sock.recv_multipart() if h.sock.poll(3000) else []
            told.append(len(f) >= 3 and f[2] == bytes([DISCONNECT]))
            h.close()
        ids = fleet.worker_ids()
        t.check(all(told) and not any(i.startswith("bad-ready") or i.startswith("xxx")
                                      for i in ids),
                "a READY with a field out of its type or range (capacity 0, negative "
                "concurrency, ...) gets DISCONNECT and is never registered", (told, ids))
        t.check("capacity must be an integer 1..1024" in fleet.broker.log_text(),
                "the broker logs the field and the rule")
        real = fleet.start_worker("test", wid="after-garbage")
        fleet.wait_registered(["after-garbage"])
        g.close()
        fl.wait_for(lambda: "garbage" not in fleet.worker_ids(), 10, "the garbage worker expiry")
        r = fleet.request({"message_type": "test.echo", "data": {"ok": 1}})
        t.check(r.get("success") is True and r["data"] == {"ok": 1},
                "a real worker serves after all that", r)
        log = fleet.broker.log_text()
        t.check("garbage" in log and ("cannot be decoded" in log or "malformed" in log),
                "the broker logged the garbage, naming the worker")
        s.close()
        del real
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()


# ---------------------------------------------------------------- full disk

def full_disk(t):
    fleet = fl.Fleet("ipc", "fault-disk")
    outs = os.path.join(fleet.dir, "outputs")
    os.makedirs(outs)
    mounted = False
    try:
        env_pre = None
        if os.geteuid() == 0 and shutil.which("mount") and not os.environ.get("SDXL_FAULTS_NO_MOUNT"):
            rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", outs],
                                capture_output=True)
            mounted = rc.returncode == 0
        how = "a full 1 MiB tmpfs" if mounted else "RLIMIT_FSIZE 64 KiB"
        if mounted:
            with open(os.path.join(outs, "filler"), "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
        else:
            def env_pre():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        fleet.start_broker(["--outputs-root", outs])
        argv = [fl.WORKER_BIN, "--domain", "postprocessing", "--broker", fleet.backend, "--id",
                "post-full", "--outputs-root", outs]
        p = fl.Proc("worker post-full", argv, os.path.join(fleet.dir, "post-full.log"))
        if env_pre:
            p.p.kill()
            p.p.wait()
            p.p = subprocess.Popen(argv, stdout=p.log, stderr=subprocess.STDOUT,
                                   preexec_fn=env_pre, start_new_session=True)
        p.wid = "post-full"
        fleet.procs.append(p)
        fleet.wait_registered(["post-full"])
        # an image bigger than what is left (noise does not compress)
        img = noise_png(256, 256)
        before = set(files_under(outs))
        r = call(fleet, "postprocessing.finalize",
                 {"image": img, "format": "png", "save_path": "full/", "return_image": False},
                 timeout=20, enc="msgpack")
        err = r.get("error") or {}
        msg = err.get("message", "")
        t.check(r.get("success") is False and err.get("code") == "storage_full" and
                err.get("retryable") is True and ("No space" in msg or "too large" in msg),
                "finalize into %s: one clear error (%s: %s)" % (how, err.get("code"), msg), r)
        left = sorted(set(files_under(outs)) - before)
        t.check(left == [], "no partial or temp file is left behind", left)
        t.check(p.alive(), "the worker is alive")
        sess_dir = os.path.join(fleet.dir, "wf")
        os.makedirs(sess_dir)
        with open(os.path.join(sess_dir, "save.yaml"), "w") as f:
            f.write("id: save_only\nname: save only\nversion: 1\nsteps:\n"
                    "  - id: save\n    type: postprocessing\n    operation: finalize\n"
                    "    inputs:\n      \"*\": ${config}\n    retry: 1\n")
        # a broker that knows the save_only workflow; the worker re-registers
        fleet.procs.remove(fleet.broker)
        fleet.broker.stop()
        fleet.start_broker(["--outputs-root", outs, "--workflows-dir", sess_dir])
        fleet.wait_registered(["post-full"], 15)
        sub = fl.subscriber(fleet, "session.")
        r = call(fleet, "processing.workflow_execute",
                 {"workflow_id": "save_only",
                  "parameters": {"image": img, "format": "png", "save_path": "full/"}},
                 enc="msgpack")
        sid = r["data"]["session_id"]
        s = wait_session(fleet, sid, 30)
        evs = [e["event"] for e in drain_events(sub, sid, 1.0)]
        code = (s.get("error") or {}).get("code")
        t.check(s["status"] == "failed" and code == "storage_full" and evs.count("failed") == 1 and
                evs.count("step_retry") == 1 and evs.count("completed") == 0,
                "a workflow whose save step hits it: retried once, then failed once (%s)" % code,
                (s.get("error"), evs))
        # space is back
        if mounted:
            os.unlink(os.path.join(outs, "filler"))
            small = img
        else:
            small = noise_png(32, 32)
        r = call(fleet, "postprocessing.finalize",
                 {"image": small, "format": "png", "save_path": "full/", "return_image": False},
                 timeout=20, enc="msgpack")
        path = (r.get("data") or {}).get("path", "")
        t.check(r.get("success") is True and os.path.exists(path) and
                [x for x in files_under(outs) if x.endswith(".tmp") or "/." in x] == [],
                "with space back the same worker saves %s" % os.path.basename(path), r)
    finally:
        if t.failed:
            fleet.dump_logs()
        fleet.close()
        if mounted:
            subprocess.run(["umount", "-l", outs], capture_output=True)
            shutil.rmtree(fleet.dir, ignore_errors=True)


def noise_png(w, h):
    import random
    import zlib
    import struct
    rng = random.Random(5)
    raw = b"".join(b"\0" + bytes(rng.getrandbits(8) for _ in range(w * 3)) for _ in range(h))

    def chunk(k, d):
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


# ---------------------------------------------------------- locked state db

def locked_state_db(t):
    fleet = fl.Fleet("ipc", "fault-db")
    db = os.path.join(fleet.dir, "state", "broker.db")
    os.makedirs(os.path.dirname(db))
    holder = None
    try:
        # first a broker creates the file, then goes away
        fleet.start_broker(["--state-db", db, "--workflows-dir", "none"])
        fleet.procs.remove(fleet.broker)
        fleet.broker.stop()
        holder = sqlite3.connect(db, timeout=0.1, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        argv = [fl.BROKER_BIN, "--frontend", fleet.frontend, "--backend", fleet.backend,
                "--events", fleet.events, "--state-db", db, "--workflows-dir", "none"]
        t0 = fl.now()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        t.check(p.returncode != 0 and "locked" in out and db in out,
                "a broker on a state file another process holds exits %d in %.1fs naming the "
                "file and the lock" % (p.returncode, fl.now() - t0), out[-400:])
        holder.execute("ROLLBACK")
        holder.close()
        holder = None
        fleet.start_broker(["--state-db", db, "--workflows-dir", "none"])
        w = fleet.start_worker("test", wid="db-test")
        fleet.wait_registered([w.wid])
        other = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            other.execute("ROLLBACK")
            refused = None
        except sqlite3.OperationalError as e:
            refused = str(e)
        other.close()
        t.check(refused and "locked" in refused,
                "while the broker runs, another writer is refused (%s)" % refused)
        sids = []
        for i in range(3):
            r = call(fleet, "processing.workflow_execute",
                     {"workflow_id": "echoes", "steps": [
                         {"id": "a", "type": "test", "operation": "echo",
                          "parameters": {"i": i}}]})
            sids.append(r["data"]["session_id"])
        ends = [wait_session(fleet, sid, 15)["status"] for sid in sids]
        t.check(ends == ["completed"] * 3, "sessions run while the file is held", ends)
        fleet.procs.remove(fleet.broker)
        rc = fleet.broker.stop()
        con = sqlite3.connect(db, timeout=5)
        rows = con.execute("SELECT id, status FROM sessions").fetchall()
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.close()
        t.check(rc == 0 and ok == "ok" and {r[0]: r[1] for r in rows} ==
                {sid: "completed" for sid in sids},
                "after the broker stops (%s) the file holds every session, completed, "
                "integrity ok" % rc, rows)
    finally:
        if holder:
            holder.close()
        if t.failed:
            fleet.dump_logs()
        fleet.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("faults")
    only = sys.argv[1:]
    for fn in (workflow_stage_kills, broker_sigstop, silent_worker, garbage_worker, full_disk,
               locked_state_db):
        if only and fn.__name__ not in only:
            continue
        if fn is workflow_stage_kills and not os.access(GEN_BIN, os.X_OK):
            print("SKIP workflow_stage_kills: the engine is not built (no %s)" % GEN_BIN)
            continue
        t.run(fn)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
