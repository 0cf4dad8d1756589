#!/usr/bin/python3
"""The worker runtime against SDXW01 itself: a scripted ROUTER plays the
broker (frames as common/sdx_mdp.h specifies them), so this checks the worker
alone: READY, heartbeats, REQUEST/REPLY, PROGRESS, CANCEL, not_available,
Paranoid-Pirate reconnection after broker silence, broker DISCONNECT,
SIGTERM drain (finish, DISCONNECT, exit 0) and --gpu validation (exit 2).
Runs on ipc and tcp loopback."""
import os
import signal
import subprocess
import sys

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

READY, REQUEST, REPLY, PROGRESS, HEARTBEAT, DISCONNECT, CANCEL = range(1, 8)


class FakeBroker:
    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.ident = None
        self.heartbeats = True
        self.last_hb = 0.0
        self.log = []  # (cmd, rid, body, ident)

    def send(self, cmd, rid=None, body=None, ident=None):
        frames = [ident or self.ident, b"", b"SDXW01", bytes([cmd])]
        if cmd in (REQUEST, CANCEL):
            frames.append(rid.encode())
        if body is not None:
            frames.append(msgpack.packb(body, use_bin_type=True))
        self.sock.send_multipart(frames)

    def request(self, rid, mtype, data=None, **kw):
        body = {"message_type": mtype, "request_id": rid, "data": data or {},
                "priority": "normal", "timeout_ms": 0, "deadline_ms": 0, "attempt": 0,
                "stream": False}
        body.update(kw)
        self.send(REQUEST, rid, body)

    def pump(self, pred, timeout, what):
        """Receive (sending heartbeats each second while enabled) until
        pred(msg) is true for a message; returns that message."""
        end = fl.now() + timeout
        while True:
            t = fl.now()
            if self.heartbeats and self.ident and t - self.last_hb >= 1.0:
                self.send(HEARTBEAT)
                self.last_hb = t
            if t >= end:
                raise TimeoutError("timed out waiting for " + what)
            if not self.sock.poll(50):
                continue
            f = self.sock.recv_multipart()
            ident, cmd = f[0], f[3][0]
            assert f[1] == b"" and f[2] == b"SDXW01", f[:3]
            rid = f[4].decode() if cmd in (REPLY, PROGRESS) else None
            bi = 5 if cmd in (REPLY, PROGRESS) else 4
            body = msgpack.unpackb(f[bi], raw=False) if len(f) > bi and f[bi] else None
            m = {"cmd": cmd, "rid": rid, "body": body, "ident": ident}
            self.log.append(m)
            if cmd == READY:
                self.ident = ident
            if pred(m):
                return m


def start_worker(fleet, endpoint, extra=()):
    wid = "t-%d" % fl.free_port()
    argv = [fl.WORKER_BIN, "--domain", "test", "--broker", endpoint, "--id", wid] + list(extra)
    p = fl.Proc("worker", argv, os.path.join(fleet.dir, wid + ".log"))
    fleet.procs.append(p)
    p.wid = wid
    return p


def scenario(t, kind):
    fleet = fl.Fleet(kind, "sdxw")
    ep = fleet.endpoint("backend")
    fb = FakeBroker(fleet.ctx, ep)
    try:
        w = start_worker(fleet, ep, ["--concurrency", "2"])
        m = fb.pump(lambda m: m["cmd"] == READY, 10, "READY")
        b = m["body"]
        t.check(b.get("worker_id") == w.wid and b.get("domain") == "test" and b.get("gpu") == -1
                and b.get("concurrency") == 2 and b.get("pid") == w.pid and b.get("host")
                and b.get("version") and isinstance(b.get("models"), list),
                "%s: READY body has worker_id, domain, gpu, concurrency, pid, host" % kind, b)
        caps = b.get("capabilities") or []
        t.check("test.echo" in caps and "test.ping" in caps and "test.status" in caps,
                "%s: READY capabilities" % kind, caps)

        m = fb.pump(lambda m: m["cmd"] == HEARTBEAT, 3, "a HEARTBEAT")
        t.check(isinstance(m["body"], dict) and "in_flight" in m["body"],
                "%s: worker heartbeats with in_flight" % kind, m["body"])

        fb.request("r1", "test.echo", {"x": [1, 2, {"y": "z"}], "bin": b"\x00\x01"})
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r1", 5, "echo REPLY")
        t.check(m["body"]["success"] is True and
                m["body"]["data"] == {"x": [1, 2, {"y": "z"}], "bin": b"\x00\x01"} and
                "worker_ms" in m["body"].get("timing", {}),
                "%s: test.echo REPLY echoes data, with timing" % kind, m["body"])

        # a REQUEST whose body is not msgpack is answered, not dropped
        fb.sock.send_multipart([fb.ident, b"", b"SDXW01", bytes([REQUEST]), b"rg", b"\xc1\x00"])
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "rg", 5, "REPLY to a bad body")
        t.check(m["body"]["success"] is False and
                m["body"]["error"]["code"] == "invalid_request" and
                "could not decode" in m["body"]["error"]["message"],
                "%s: an undecodable REQUEST body gets an error REPLY" % kind, m["body"])

        fb.request("r2", "test.nothing_here")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r2", 5, "REPLY r2")
        t.check(m["body"]["error"]["code"] == "unknown_message_type",
                "%s: unknown verb of the domain -> unknown_message_type" % kind, m["body"])

        fb.request("r3", "test.sleep", {"ms": 20000, "steps": 200})
        fb.pump(lambda m: m["cmd"] == PROGRESS and m["rid"] == "r3", 5, "PROGRESS r3")
        m = fb.log[-1]
        t.check(all(k in m["body"] for k in ("step", "total", "elapsed_ms")),
                "%s: PROGRESS body step/total/elapsed_ms" % kind, m["body"])
        # a status request runs beside it (concurrency 2, status is inline)
        fb.request("r4", "test.status")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r4", 5, "status")
        st = m["body"]["data"]
        t.check(st.get("in_flight", 0) >= 1 and "uptime_s" in st and "requests_served" in st and
                "loaded_models" in st and st.get("gpu") == -1,
                "%s: test.status reports uptime, counters, in flight" % kind, st)
        t0 = fl.now()
        fb.send(CANCEL, "r3")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r3", 3, "REPLY r3 after CANCEL")
        t.check(m["body"]["success"] is False and m["body"]["error"]["code"] == "cancelled" and
                fl.now() - t0 < 1.0, "%s: CANCEL stops test.sleep within 1 s" % kind, m["body"])
        fb.request("r5", "test.status")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r5", 5, "status")
        t.check(m["body"]["data"].get("cancels_received") == 1 and
                m["body"]["data"].get("requests_cancelled") == 1,
                "%s: status counts the CANCEL" % kind, m["body"]["data"])

        # broker DISCONNECT -> worker re-registers at once
        old = fb.ident
        fb.send(DISCONNECT)
        m = fb.pump(lambda m: m["cmd"] == READY and m["ident"] != old, 5, "READY after DISCONNECT")
        t.check(True, "%s: broker DISCONNECT -> worker sends READY again" % kind)

        # broker silence -> reconnect (3 missed heartbeats + back-off); what it
        # still runs is listed in the new READY's resume and answered on the
        # new connection; a reply made between the connections follows READY
        fb.request("r-run", "test.sleep", {"ms": 6500, "steps": 13})
        fb.request("r-held", "test.sleep", {"ms": 4000, "steps": 8})
        fb.heartbeats = False
        old = fb.ident
        t0 = fl.now()
        m = fb.pump(lambda m: m["cmd"] == READY and m["ident"] != old, 10, "READY after silence")
        dt = fl.now() - t0
        fb.heartbeats = True
        t.check(2.5 <= dt <= 8.0, "%s: silent broker -> reconnect + READY after %.1fs" % (kind, dt))
        resume = m["body"].get("resume") or []
        t.check("r-run" in resume, "%s: the new READY resumes the running request %s" %
                (kind, resume), m["body"])
        new = m["ident"]
        seen = len(fb.log)
        fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r-run", 10, "REPLY r-run")
        reps = [x for x in fb.log if x["cmd"] == REPLY and x["rid"] in ("r-run", "r-held")]
        run = [x for x in reps if x["rid"] == "r-run"]
        held = [x for x in reps if x["rid"] == "r-held"]
        t.check(len(run) == 1 and run[0]["ident"] == new and run[0]["body"]["success"] is True,
                "%s: r-run is answered once, on the new connection" % kind, run)
        where = "before the reconnection, on the old connection" if held and \
            held[0]["ident"] == old else "after the new READY (held while disconnected)"
        t.check(len(held) == 1 and held[0]["body"]["success"] is True and
                (held[0]["ident"] == old or ("r-held" in resume and
                                             fb.log.index(held[0]) >= seen - 1)),
                "%s: r-held is answered once, %s" % (kind, where), held)

        # SIGTERM mid-request: finishes it, DISCONNECT, exit 0
        fb.request("r6", "test.sleep", {"ms": 1200, "steps": 4})
        fb.request("r6b", "test.sleep", {"ms": 1200, "steps": 4})
        fb.request("r8", "test.sleep", {"ms": 1200, "steps": 4})  # beyond concurrency 2
        fb.pump(lambda m: m["cmd"] == PROGRESS and m["rid"] == "r6", 5, "PROGRESS r6")
        w.signal(signal.SIGTERM)
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r8", 5, "REPLY r8")
        t.check(m["body"]["success"] is False and m["body"]["error"]["code"] == "worker_lost",
                "%s: SIGTERM: a request still queued in the worker goes back (worker_lost)" %
                kind, m["body"])
        fb.pump(lambda m: m["cmd"] == HEARTBEAT and (m["body"] or {}).get("draining"), 5,
                "a draining HEARTBEAT")
        fb.request("r7", "test.echo", {"late": True})
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "r7", 5, "REPLY r7")
        t.check(m["body"]["success"] is False and m["body"]["error"]["code"] == "worker_lost",
                "%s: draining worker refuses new work (worker_lost, retryable)" % kind, m["body"])
        done = {}

        def both(m):
            if m["cmd"] == REPLY and m["rid"] in ("r6", "r6b"):
                done[m["rid"]] = m["body"]
            return len(done) == 2
        fb.pump(both, 5, "REPLY r6 and r6b")
        t.check(all(b["success"] is True for b in done.values()),
                "%s: SIGTERM: both running requests finished" % kind, done)
        fb.pump(lambda m: m["cmd"] == DISCONNECT, 5, "DISCONNECT")
        rc = w.wait(5)
        t.check(rc == 0, "%s: worker sent DISCONNECT and exited 0" % kind, rc)
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fb.sock.close()
        fleet.close()


def test_ipc(t):
    scenario(t, "ipc")


def test_tcp(t):
    scenario(t, "tcp")


def test_bad_gpu(t):
    r = subprocess.run([fl.WORKER_BIN, "--domain", "inference", "--broker", "tcp://127.0.0.1:1",
                        "--gpu", "99"], capture_output=True, timeout=20)
    err = r.stderr.decode()
    t.check(r.returncode == 2 and "--gpu 99" in err, "--gpu 99 without such GPU: exit 2", (r.returncode, err))
    r = subprocess.run([fl.WORKER_BIN, "--domain", "nope", "--broker", "tcp://127.0.0.1:1"],
                       capture_output=True, timeout=20)
    t.check(r.returncode == 2 and "unknown domain" in r.stderr.decode(),
            "unknown domain: exit 2", r.stderr)


def test_config(t):
    """--config: flat keys, and the fleet-file form (broker.backend, worker:
    defaults, the workers: entry of the domain); flags override the file."""
    fleet = fl.Fleet("ipc", "sdxwcfg")
    ep = fleet.endpoint("backend")
    fb = FakeBroker(fleet.ctx, ep)
    try:
        flat = os.path.join(fleet.dir, "worker.yaml")
        with open(flat, "w") as f:
            f.write("domain: test\nbroker: %s\nconcurrency: 3\nid: cfg-flat\n" % ep)
        p = fl.Proc("worker", [fl.WORKER_BIN, "--config", flat],
                    os.path.join(fleet.dir, "flat.log"))
        fleet.procs.append(p)
        m = fb.pump(lambda m: m["cmd"] == READY, 10, "READY (flat config)")
        t.check(m["body"]["worker_id"] == "cfg-flat" and m["body"]["concurrency"] == 3,
                "--config flat keys: id, concurrency, broker", m["body"])
        p.stop()
        fleetf = os.path.join(fleet.dir, "fleet.yaml")
        with open(fleetf, "w") as f:
            f.write("broker:\n  frontend: tcp://*:1\n  backend: %s\n"
                    "worker:\n  concurrency: 2\n  log_level: warn\n"
                    "workers:\n  - {domain: device}\n  - domain: test\n    concurrency: 5\n"
                    % ep)
        p = fl.Proc("worker", [fl.WORKER_BIN, "--config", fleetf, "--domain", "test",
                               "--id", "cfg-fleet"], os.path.join(fleet.dir, "fleet.log"))
        fleet.procs.append(p)
        m = fb.pump(lambda m: m["cmd"] == READY and m["body"]["worker_id"] == "cfg-fleet", 10,
                    "READY (fleet config)")
        t.check(m["body"]["concurrency"] == 5 and m["body"]["domain"] == "test",
                "--config fleet file: broker.backend + the domain's entry; --id flag wins",
                m["body"])
        p.stop()
    finally:
        fb.sock.close()
        fleet.close()


def test_refused(t):
    """A broker answering READY with DISCONNECT (it refuses the worker) gets
    READY again only after a back-off, not in a tight loop."""
    fleet = fl.Fleet("ipc", "sdxwref")
    ep = fleet.endpoint("backend")
    fb = FakeBroker(fleet.ctx, ep)
    fb.heartbeats = False
    try:
        start_worker(fleet, ep)
        readies = []
        end = fl.now() + 4.5
        while fl.now() < end:
            try:
                m = fb.pump(lambda m: m["cmd"] == READY, end - fl.now(), "READY")
            except TimeoutError:
                break
            readies.append(fl.now())
            fb.send(DISCONNECT, ident=m["ident"])
        gaps = [b - a for a, b in zip(readies, readies[1:])]
        t.check(2 <= len(readies) <= 4 and all(g >= 0.9 for g in gaps),
                "refused registration: READY retried with back-off (gaps %s)" %
                ["%.1f" % g for g in gaps], len(readies))
    finally:
        fb.sock.close()
        fleet.close()


def main():
    fl.require_binaries(fl.WORKER_BIN)
    t = fl.Tally("worker_sdxw")
    t.run(test_bad_gpu)
    t.run(test_config)
    t.run(test_refused)
    t.run(test_ipc)
    t.run(test_tcp)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
