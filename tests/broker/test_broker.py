#!/usr/bin/python3
"""test_broker.py - sdxl-broker against scripted fake workers (SDXW01 over a
real DEALER socket) and real REQ/DEALER clients on loopback.

Covers: framing (REQ and DEALER), both encodings, aliases, system.*,
processing.* not_available, unknown types, no_worker, payload_too_large,
malformed input, routing (least in flight, gpu hint, model affinity),
priority queue order, streaming progress, timeout + CANCEL, worker death +
re-dispatch, retries exhausted -> worker_lost, late replies dropped, events.

Usage: test_broker.py [path/to/sdxl-broker]   (default: $SDXL_BUILD_ROOT/broker/sdxl-broker)
Exit 0 pass, 1 fail, 77 skip (no pyzmq/msgpack).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import msgpack
    import zmq
except ImportError:
    print("SKIP: needs python3-zmq and python3-msgpack")
    sys.exit(77)

PROTO = b"SDXW01"
READY, REQUEST, REPLY, PROGRESS, HEARTBEAT, DISCONNECT, CANCEL = range(1, 8)
CTX = zmq.Context.instance()

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class FakeWorker:
    """A scripted SDXW01 worker. behaviour(worker, rid, body) returns a reply
    body, or None to not answer (the test answers later or never)."""

    def __init__(self, endpoint, domain, behaviour, gpu=-1, concurrency=1, models=(), wid=None,
                 heartbeat=True, ready_extra=None):
        self.endpoint = endpoint
        self.domain = domain
        self.behaviour = behaviour
        self.gpu = gpu
        self.concurrency = concurrency
        self.models = list(models)
        self.id = wid or "%s-%d" % (domain, id(self) % 100000)
        self.heartbeat = heartbeat
        self.requests = []  # (rid, body) in arrival order
        self.cancels = []
        self.disconnected = False  # the broker sent DISCONNECT
        self.lock = threading.Lock()
        self.stop_flag = False
        self.outbox = []
        self.sock = CTX.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.send(READY, None, {"worker_id": self.id, "domain": domain, "gpu": gpu,
                                "capabilities": [], "concurrency": concurrency,
                                "models": self.models, "pid": os.getpid(), "host": "test",
                                "version": "test", **(ready_extra or {})})
        self.thread.start()

    def send(self, cmd, rid=None, body=None):
        frames = [b"", PROTO, bytes([cmd])]
        if rid is not None:
            frames.append(rid.encode() if isinstance(rid, str) else rid)
        if body is not None:
            frames.append(msgpack.packb(body, use_bin_type=True))
        self.sock.send_multipart(frames)

    def later(self, cmd, rid=None, body=None):
        """Queue a message to be sent from the worker's own thread."""
        with self.lock:
            self.outbox.append((cmd, rid, body))

    def run(self):
        next_hb = time.time() + 0.5
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop_flag:
            ev = dict(poller.poll(50))
            with self.lock:
                out, self.outbox = self.outbox, []
            for m in out:
                self.send(*m)
            if self.heartbeat and time.time() >= next_hb:
                self.send(HEARTBEAT)
                next_hb = time.time() + 0.5
            if self.sock in ev:
                frames = self.sock.recv_multipart()
                cmd = frames[2][0]
                if cmd == REQUEST:
                    rid = frames[3].decode()
                    body = msgpack.unpackb(frames[4], raw=False)
                    with self.lock:
                        self.requests.append((rid, body))
                    rep = self.behaviour(self, rid, body)
                    if rep is not None:
                        self.send(REPLY, rid, rep)
                elif cmd == CANCEL:
                    with self.lock:
                        self.cancels.append(frames[3].decode())
                elif cmd == DISCONNECT:
                    self.disconnected = True
        self.sock.close()

    def stop(self, disconnect=False):
        if disconnect:
            self.later(DISCONNECT)
            time.sleep(0.2)
        self.stop_flag = True
        self.thread.join(2)


def echo(w, rid, body):
    return {"success": True, "data": {"echo": body["data"], "worker": w.id,
                                      "attempt": body.get("attempt")},
            "timing": {"worker_ms": 0.1}}


def silent(w, rid, body):
    return None


class Client:
    def __init__(self, endpoint, kind=zmq.DEALER):
        self.kind = kind
        self.sock = CTX.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, msg, enc="msgpack", raw=None):
        payload = raw if raw is not None else (
            msgpack.packb(msg, use_bin_type=True) if enc == "msgpack" else json.dumps(msg).encode())
        self.sock.send(payload)

    def recv(self, timeout=5.0):
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frame = self.sock.recv()
        if frame[:1] in (b"{", b"["):
            return ("json", json.loads(frame))
        return ("msgpack", msgpack.unpackb(frame, raw=False))

    def call(self, msg, enc="msgpack", timeout=5.0, raw=None):
        self.send(msg, enc, raw)
        r = self.recv(timeout)
        return r[1] if r else None

    def close(self):
        self.sock.close()


def pascal(k):
    return "".join(p[:1].upper() + p[1:] for p in k.split("_"))


def get(m, *path):
    """Look a path up in a native (snake_case) or C#-dialect (PascalCase) reply."""
    for k in path:
        if not isinstance(m, dict):
            return None
        m = m.get(k, m.get(pascal(k)))
    return m


def wait_for(pred, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def main():
    broker_bin = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("SDXL_BUILD_ROOT", "build"), "broker", "sdxl-broker")
    if not os.path.exists(broker_bin):
        print("SKIP: no broker binary at", broker_bin)
        return 77
    fp, bp, ep = free_port(), free_port(), free_port()
    front, back, events = ("tcp://127.0.0.1:%d" % p for p in (fp, bp, ep))

    # --- a named schemas folder that is missing: refuse, do not fall back
    bad_env = dict(os.environ, SDXL_SCHEMAS_DIR="/nonexistent/sdxl-schemas")
    for args, env, what in ((["--check-config"], bad_env, "--check-config, $SDXL_SCHEMAS_DIR"),
                            (["--check-config", "--schemas-dir", "/nonexistent/sdxl-schemas"],
                             None, "--check-config, --schemas-dir"),
                            (["--frontend", front, "--backend", back, "--events", events],
                             bad_env, "start, $SDXL_SCHEMAS_DIR")):
        try:
            p = subprocess.run([broker_bin] + args, env=env, capture_output=True, text=True,
                               timeout=10)
            out = p.stdout + p.stderr
            check(p.returncode != 0 and "/nonexistent/sdxl-schemas" in out,
                  "missing schemas folder refused (%s): rc=%s %s" % (what, p.returncode, out[-300:]))
        except subprocess.TimeoutExpired:
            check(False, "missing schemas folder refused (%s): the broker kept running" % what)
    p = subprocess.run([broker_bin, "--check-config"], capture_output=True, text=True, timeout=10)
    check(p.returncode == 0 and "# schemas:" in p.stdout, "--check-config loads the schemas")

    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write("max_frame_bytes: 64KiB\nheartbeat_ms: 300\nliveness: 3\nlog_level: info\n"
              "cancel_grace_ms: 500\nno_worker_grace_ms: 1500\n")
    cfg.close()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([broker_bin, "--config", cfg.name, "--frontend", front, "--backend", back,
                             "--events", events], stdout=log, stderr=subprocess.STDOUT)
    workers = []
    try:
        # events subscriber first, so it sees everything
        sub = CTX.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"request.")
        sub.connect(events)

        dealer = Client(front)
        ok = wait_for(lambda: dealer.call({"message_type": "system.ping"}, timeout=0.5) is not None, 10)
        check(ok, "broker answers system.ping")
        if not ok:
            return 1
        check(wait_for(lambda: (dealer.call({"message_type": "system.status"}) or {})
                       .get("data", {}).get("events", {}).get("subscriptions", 0) >= 1),
              "events subscription seen by the broker")

        # --- system.* over REQ + JSON, request_id echoed / generated
        req = Client(front, zmq.REQ)
        req.send({"message_type": "system.ping", "request_id": "p-1"}, "json")
        enc, r = req.recv()
        check(enc == "json" and r["request_id"] == "p-1" and r["success"] and r["data"]["pong"],
              "REQ + JSON system.ping echoes request_id, answers in JSON")
        r = dealer.call({"type": "system.status"})
        check(r and r["success"] and "domains" in r["data"] and r["request_id"].startswith("r-"),
              "system.status via `type`, generated request_id")
        r = dealer.call({"action": "ping", "request_id": 42})
        check(r and get(r, "success") and get(r, "request_id") == 42 and get(r, "data", "pong"),
              "action alias ping -> system.ping, integer request_id echoed as an integer: %s" % r)
        for enc in ("msgpack", "json"):
            r = dealer.call({"Action": "ping", "RequestId": 7}, enc)
            check(r and r.get("RequestId") == 7 and r.get("Success"),
                  "C# RequestId 7 echoed as an integer (%s): %s" % (enc, r))
            # (an unknown key is only a warning in the C# dialect: a bad TimeSpan is refused)
            r = dealer.call({"Action": "ping", "RequestId": 8, "Data": {}, "Timeout": "soon"}, enc)
            check(r and r.get("RequestId") == 8 and get(r, "error", "code") == "invalid_request",
                  "C# RequestId 8 echoed as an integer when the dialect refuses (%s): %s"
                  % (enc, r))
            r = dealer.call({"message_type": "system.ping", "request_id": 12345}, enc)
            check(r and r["request_id"] == 12345 and r["success"],
                  "integer request_id 12345 echoed as an integer (%s): %s" % (enc, r))
            r = dealer.call({"message_type": "system.ping", "request_id": "12345"}, enc)
            check(r and r["request_id"] == "12345", "string request_id stays a string (%s)" % enc)
            r = dealer.call({"message_type": "system.ping", "request_id": 99, "priority": "x"}, enc)
            check(r and r["request_id"] == 99 and r["error"]["code"] == "invalid_request",
                  "integer request_id echoed in an error reply (%s): %s" % (enc, r))

        # --- errors answered at once
        r = dealer.call({"message_type": "inference.generate", "request_id": "nw",
                         "data": {"prompt": "x"}})
        check(r and not r["success"] and r["error"]["code"] == "no_worker", "no_worker at once")
        r = dealer.call({"action": "generate_sdxl", "data": {"prompt": "a dragon"}})
        check(r and get(r, "error", "code") == "no_worker" and "inference" in get(r, "error", "message"),
              "generate_sdxl -> inference.generate: %s" % r)
        r = dealer.call({"worker_type": "DEVICE", "action": "get_device_status"})
        check(r and get(r, "error", "code") == "no_worker" and "device" in get(r, "error", "message"),
              "DEVICE + get_device_status -> device.status: %s" % r)
        r = dealer.call({"message_type": "foo.bar", "request_id": "u1"})
        check(r and r["error"]["code"] == "unknown_message_type" and r["request_id"] == "u1",
              "unknown prefix -> unknown_message_type")
        r = dealer.call({"action": "batch_process", "request_id": "b1"})
        check(r and get(r, "error", "code") == "invalid_request" and
              (get(r, "error", "field") or "").lower() == "items",
              "batch_process -> the orchestrator: %s" % r)
        r = dealer.call({"message_type": "processing.workflow_execute"})
        check(r and r["error"]["code"] == "invalid_request" and
              r["error"].get("field") == "workflow_id", "processing.* answered by the broker")
        r = dealer.call({"message_type": "system.nope"})
        check(r and r["error"]["code"] == "unknown_message_type", "unknown system verb")
        r = dealer.call(None, raw=b"\x82\xa1a")
        check(r and r["error"]["code"] == "invalid_request" and "truncated" in r["error"]["message"],
              "truncated msgpack -> invalid_request")
        r = dealer.call(None, raw=b'{"message_type": "system.ping"')
        check(r and r["error"]["code"] == "invalid_request", "truncated JSON -> invalid_request")
        r = dealer.call(None, raw=b"\xa3abc")
        check(r and r["error"]["code"] == "unsupported_encoding", "msgpack string -> unsupported_encoding")
        r = dealer.call({"message_type": "system.ping", "priority": "urgent"})
        check(r and r["error"]["code"] == "invalid_request" and
              "low, normal, high, critical" in r["error"]["message"],
              "priority urgent is not an alias: the error names the accepted values: %s" % r)
        r = dealer.call({"message_type": "system.ping", "priority": "urgentest"})
        check(r and r["error"]["code"] == "invalid_request" and r["error"].get("field") == "priority",
              "bad priority -> invalid_request field=priority")
        big = {"message_type": "test.echo", "data": {"blob": b"x" * 70000}}
        r = dealer.call(big)
        check(r and r["error"]["code"] == "payload_too_large", "payload_too_large")
        r = dealer.call({"message_type": "system.ping"})
        check(r and r["success"], "broker keeps serving after payload_too_large")

        # --- too many / too large envelope frames: answered, not dropped
        body = msgpack.packb({"message_type": "system.ping", "request_id": "ef"})
        for frames, what in (([b"e"] * 5, "too many"), ([b"x" * 400, b"y" * 400], "too large")):
            dealer.sock.send_multipart(frames + [body])
            m = dealer.recv(3)
            r = m[1] if m else None
            check(r and r["success"] is False and r["error"]["code"] == "invalid_request" and
                  "at most 4 envelope frames" in r["error"]["message"] and
                  "600 bytes" in r["error"]["message"],
                  "%s envelope frames -> invalid_request naming the rule: %s" % (what, r))
        r = dealer.call({"message_type": "system.ping"})
        check(r and r["success"], "broker keeps serving after a bad envelope")

        # --- a worker: echo over both encodings and both socket kinds
        w1 = FakeWorker(back, "test", echo, concurrency=2, wid="echo-1")
        workers.append(w1)
        ok = wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                      .get("data", {}).get("count") == 1)
        check(ok, "worker registered (system.workers)")
        r = dealer.call({"message_type": "test.echo", "request_id": "e1",
                         "data": {"s": "caf\u00e9", "n": 2**62, "f": 0.5, "b": b"\x00\x01"}})
        check(r and r["success"] and r["data"]["echo"] == {"s": "caf\u00e9", "n": 2**62, "f": 0.5,
                                                           "b": b"\x00\x01"},
              "msgpack echo round trip (bin, big int, unicode)")
        check(r and r["timing"]["worker"] == "echo-1" and "total_ms" in r["timing"] and
              r["timing"]["worker_ms"] == 0.1, "timing merged (worker + broker)")
        req.send({"message_type": "test.echo", "data": {"x": 1}, "request_id": "e2"}, "json")
        enc, r = req.recv()
        check(enc == "json" and r["success"] and r["data"]["echo"] == {"x": 1}, "REQ + JSON echo")
        r = dealer.call({"message_type": "test.echo", "prompt": "flat"})
        check(r and r["data"]["echo"] == {"prompt": "flat"}, "flat request: top-level keys become data")

        # duplicate request ids in flight get distinct backend keys
        slow_hold = []

        def hold(w, rid, body):
            slow_hold.append(rid)
            return None
        w1.behaviour = hold
        dealer.send({"message_type": "test.echo", "request_id": "dup"})
        dealer.send({"message_type": "test.echo", "request_id": "dup"})
        wait_for(lambda: len(slow_hold) == 2)
        check(len(set(slow_hold)) == 2 and slow_hold[0] == "dup",
              "same client request_id twice -> distinct backend keys")
        for rid in slow_hold:
            w1.later(REPLY, rid, {"success": True, "data": {}})
        got = [dealer.recv(), dealer.recv()]
        check(all(g and g[1]["request_id"] == "dup" and g[1]["success"] for g in got),
              "both duplicates answered with the client's id")
        w1.behaviour = echo

        # --- streaming progress to DEALER
        def progress3(w, rid, body):
            for i in range(3):
                w.send(PROGRESS, rid, {"step": i + 1, "total": 3, "elapsed_ms": i})
            return {"success": True, "data": {"done": True}}
        w1.behaviour = progress3
        dealer.send({"message_type": "test.sleep", "request_id": "s1", "stream": True})
        msgs = []
        while True:
            m = dealer.recv()
            if not m:
                break
            msgs.append(m[1])
            if m[1].get("message_type") != "progress":
                break
        check(len(msgs) == 4 and [m.get("step") for m in msgs[:3]] == [1, 2, 3] and
              all(m["request_id"] == "s1" for m in msgs) and msgs[3]["success"],
              "DEALER + stream gets 3 progress then the reply")
        req.send({"message_type": "test.sleep", "request_id": "s2", "stream": True}, "json")
        enc, r = req.recv()
        check(r["message_type"] == "test.sleep" and r["success"], "REQ client gets only the final reply")
        # integer request ids come back integers in progress and in the reply, both encodings
        for enc in ("msgpack", "json"):
            dealer.send({"message_type": "test.sleep", "request_id": 12345, "stream": True}, enc)
            msgs = []
            while True:
                m = dealer.recv()
                if not m:
                    break
                msgs.append(m)
                if m[1].get("message_type") != "progress":
                    break
            check(len(msgs) == 4 and all(e == enc and m["request_id"] == 12345 for e, m in msgs)
                  and msgs[3][1]["success"],
                  "integer request_id echoed as an integer in progress + reply (%s): %s"
                  % (enc, msgs))
        check(any(rid == "12345" for rid, _ in w1.requests),
              "the backend key is the id's text form")
        w1.behaviour = echo

        # --- timeout while running: error reply + CANCEL to the worker, late reply dropped
        w1.behaviour = silent
        t0 = time.time()
        r = dealer.call({"message_type": "test.sleep", "request_id": "t1", "timeout_ms": 300})
        dt = time.time() - t0
        check(r and r["error"]["code"] == "timeout" and 0.25 < dt < 2.0, "timeout_ms while running")
        check(wait_for(lambda: "t1" in w1.cancels), "worker got CANCEL")
        w1.later(REPLY, "t1", {"success": True, "data": {}})
        check(dealer.recv(0.5) is None, "late REPLY dropped (exactly one reply)")

        # --- system.cancel of a running request (from another client)
        dealer.send({"message_type": "test.sleep", "request_id": "c1", "timeout_ms": 10000})
        wait_for(lambda: any(rid == "c1" for rid, _ in w1.requests))
        other = Client(front)
        r = other.call({"message_type": "system.cancel", "data": {"request_id": "c1"}})
        check(r and r["success"] and r["data"]["cancelled"] and r["data"]["state"] == "running",
              "system.cancel answers {cancelled, state}: %s" % r)
        m = dealer.recv(2)
        check(m and m[1]["request_id"] == "c1" and m[1]["error"]["code"] == "cancelled",
              "the cancelled request gets error cancelled")
        check(wait_for(lambda: "c1" in w1.cancels), "its worker got CANCEL")
        r = other.call({"message_type": "system.cancel", "data": {"request_id": "c1"}})
        check(r and r["success"] and not r["data"]["cancelled"] and r["data"]["state"] == "finished",
              "second cancel: already answered (cancelled false)")
        r = other.call({"message_type": "system.cancel", "data": {"request_id": "never-was"}})
        check(r and r["error"]["code"] == "not_found", "cancel of an unknown request -> not_found")
        r = other.call({"message_type": "system.cancel"})
        check(r and r["error"]["code"] == "invalid_request" and r["error"]["field"] == "data.request_id",
              "system.cancel without request_id -> invalid_request")
        other.close()
        w1.later(REPLY, "c1", {"success": False, "error": {"code": "cancelled", "message": "x"}})
        check(dealer.recv(0.3) is None, "worker's cancelled REPLY dropped")
        w1.behaviour = echo

        # --- priority order: one slot, busy; queue low, normal, critical, high
        w1.stop(disconnect=True)
        workers.remove(w1)
        order = []
        gate = threading.Event()

        def ordered(w, rid, body):
            order.append(body["data"]["name"])
            if body["data"]["name"] == "blocker":
                threading.Thread(target=lambda: (gate.wait(5), w.later(
                    REPLY, rid, {"success": True, "data": {}})), daemon=True).start()
                return None
            return {"success": True, "data": {}}
        w2 = FakeWorker(back, "test", ordered, concurrency=1, wid="prio-1")
        workers.append(w2)
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 1)
        dealer.send({"message_type": "test.echo", "data": {"name": "blocker"}})
        wait_for(lambda: order == ["blocker"])
        for name, prio in (("low", "low"), ("normal", "normal"), ("critical", "critical"),
                           ("high", "high"), ("normal2", None)):
            m = {"message_type": "test.echo", "data": {"name": name}}
            if prio:
                m["priority"] = prio
            dealer.send(m)
        time.sleep(0.2)
        st = dealer.call({"message_type": "system.status"})
        check(st and st["data"]["domains"]["test"]["queued"] == 5, "5 requests queued behind the blocker")
        gate.set()
        for _ in range(6):
            dealer.recv()
        check(order == ["blocker", "critical", "high", "normal", "normal2", "low"],
              "priority order critical > high > normal (FIFO) > low: %s" % order)

        # --- timeout while queued
        gate.clear()
        order.clear()
        dealer.send({"message_type": "test.echo", "data": {"name": "blocker"}})
        wait_for(lambda: order == ["blocker"])
        r = dealer.call({"message_type": "test.echo", "data": {"name": "late"}, "timeout_ms": 200})
        check(r and r["error"]["code"] == "timeout" and "queued" in r["error"]["message"],
              "timeout while queued")
        gate.set()
        dealer.recv()
        check("late" not in order, "timed-out queued request never dispatched")
        w2.stop(disconnect=True)
        workers.remove(w2)

        # --- prefetch from READY: a concurrency-1 worker holds one extra request
        pf = FakeWorker(back, "test", silent, concurrency=1, wid="prefetcher",
                        ready_extra={"prefetch": 1})
        workers.append(pf)
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 1)
        for i in range(3):
            dealer.send({"message_type": "test.echo", "request_id": "pf%d" % i, "timeout_ms": 5000})
        wait_for(lambda: len(pf.requests) == 2)
        time.sleep(0.2)
        st = dealer.call({"message_type": "system.status"})
        check(len(pf.requests) == 2 and st["data"]["domains"]["test"]["queued"] == 1,
              "prefetch 1: worker holds 2, broker queues the third")
        for rid, _ in list(pf.requests):
            pf.later(REPLY, rid, {"success": True, "data": {}})
        got = [dealer.recv(3) for _ in range(2)]
        check(all(got) and wait_for(lambda: len(pf.requests) == 3), "third dispatched after a reply")
        pf.later(REPLY, "pf2", {"success": True, "data": {}})
        dealer.recv(3)
        pf.stop(disconnect=True)
        workers.remove(pf)

        # --- credit: READY capacity N keeps N in flight (prefetch ignored), the
        # rest waits in the broker's queue; a READY with a bad capacity is refused
        for bad in ({"capacity": "many"}, {"capacity": 0}, {"capacity": 5000}):
            bw = FakeWorker(back, "test", silent, concurrency=1, wid="credit-bad",
                            ready_extra=bad)
            workers.append(bw)
            wait_for(lambda: bw.disconnected)
            n = (dealer.call({"message_type": "system.workers"}) or {}).get("data", {})
            check(bw.disconnected and n.get("count") == 0,
                  "READY %s: DISCONNECT, not registered" % bad)
            bw.stop()
            workers.remove(bw)
        answered = set()
        for cap, extra, want in ((3, {"capacity": 3, "prefetch": 5}, 3),
                                 (1, {"capacity": 1}, 1)):
            cw = FakeWorker(back, "test", silent, concurrency=1, wid="credit-%s" % want,
                            ready_extra=extra)
            workers.append(cw)
            wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                     .get("data", {}).get("count") == 1)
            wl = dealer.call({"message_type": "system.workers"})["data"]["workers"][0]
            for i in range(want + 2):
                dealer.send({"message_type": "test.echo", "request_id": "cr%d" % i,
                             "timeout_ms": 5000})
            wait_for(lambda: len(cw.requests) == want)
            time.sleep(0.2)
            st = dealer.call({"message_type": "system.status"})
            check(wl.get("capacity") == want and len(cw.requests) == want and
                  st["data"]["domains"]["test"]["queued"] == 2 and
                  st["data"]["domains"]["test"]["capacity"] == want,
                  "READY %s: %d slot(s) in flight, 2 queued in the broker" % (extra, want))
            for _ in range(want + 2):  # each reply frees a slot for the next
                wait_for(lambda: any(r not in answered for r, _ in cw.requests))
                rid = next(r for r, _ in cw.requests if r not in answered)
                answered.add(rid)
                cw.later(REPLY, rid, {"success": True, "data": {}})
                dealer.recv(3)
            check(len(cw.requests) == want + 2, "credit %d: all %d dispatched as slots freed" %
                  (want, want + 2))
            answered.clear()
            cw.stop(disconnect=True)
            workers.remove(cw)

        # --- routing: least in flight, gpu hint, model affinity
        seen = {}

        def tag(w, rid, body):
            seen[rid] = w.id
            return {"success": True, "data": {"worker": w.id}}
        wa = FakeWorker(back, "test", tag, gpu=0, concurrency=4, models=["sdxl-base"], wid="gpu0")
        wb = FakeWorker(back, "test", tag, gpu=1, concurrency=4, models=["sdxl-turbo"], wid="gpu1")
        workers += [wa, wb]
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 2)
        r = dealer.call({"message_type": "test.echo", "data": {"gpu": 1}})
        check(r and r["data"]["worker"] == "gpu1", "data.gpu hint")
        r = dealer.call({"message_type": "test.echo", "gpu": 0})
        check(r and r["data"]["worker"] == "gpu0", "top-level gpu hint")
        r = dealer.call({"message_type": "test.echo", "gpu": 7})
        check(r and r["error"]["code"] == "no_worker", "gpu hint with no such GPU -> no_worker")
        r = dealer.call({"message_type": "test.echo", "data": {"model_name": "sdxl-turbo"}})
        check(r and r["data"]["worker"] == "gpu1", "model affinity (data.model_name)")
        r = dealer.call({"message_type": "test.echo", "data": {"model": "sdxl-base"}})
        check(r and r["data"]["worker"] == "gpu0", "model affinity (data.model)")
        spread = [dealer.call({"message_type": "test.echo"})["data"]["worker"] for _ in range(6)]
        check(set(spread) == {"gpu0", "gpu1"}, "idle workers share the load: %s" % spread)
        wa.stop(disconnect=True)
        wb.stop(disconnect=True)
        workers.remove(wa)
        workers.remove(wb)

        # --- worker death: silent worker -> re-dispatch to another, attempt 2
        hb_less = FakeWorker(back, "test", silent, concurrency=1, wid="dies", heartbeat=True)
        workers.append(hb_less)
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 1)
        dealer.send({"message_type": "test.echo", "request_id": "d1", "data": {"v": 1},
                     "timeout_ms": 10000})
        wait_for(lambda: len(hb_less.requests) == 1)
        good = FakeWorker(back, "test", echo, concurrency=1, wid="survivor")
        workers.append(good)
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 2)
        hb_less.stop()  # stops heartbeating and answering: dead after 3 x 300 ms
        workers.remove(hb_less)
        r = None
        m = dealer.recv(5)
        r = m[1] if m else None
        check(r and r["success"] and r["request_id"] == "d1" and r["data"]["worker"] == "survivor"
              and r["data"]["attempt"] == 2 and r["timing"]["attempts"] == 2,
              "lost worker's request re-dispatched (attempt 2): %s" % r)
        good.stop(disconnect=True)
        workers.remove(good)

        # --- retries exhausted -> worker_lost (each worker dies via DISCONNECT)
        def die(w, rid, body):
            w.later(DISCONNECT)
            return None
        dying = [FakeWorker(back, "test", die, wid="die-%d" % i) for i in range(3)]
        workers += dying
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 3)
        r = dealer.call({"message_type": "test.echo", "request_id": "x1"}, timeout=5)
        check(r and r["error"]["code"] == "worker_lost" and r["timing"]["attempts"] == 3,
              "three lost workers -> worker_lost after 2 retries: %s" % r)
        for w in dying:
            w.stop()
            workers.remove(w)

        # --- queued work with no worker at all fails after no_worker_grace_ms
        solo = FakeWorker(back, "test", silent, wid="solo")
        workers.append(solo)
        wait_for(lambda: (dealer.call({"message_type": "system.workers"}) or {})
                 .get("data", {}).get("count") == 1)
        dealer.send({"message_type": "test.echo", "request_id": "q1", "timeout_ms": 20000})
        dealer.send({"message_type": "test.echo", "request_id": "q2", "timeout_ms": 20000})
        wait_for(lambda: len(solo.requests) == 1)
        solo.stop(disconnect=True)
        workers.remove(solo)
        replies = [dealer.recv(6), dealer.recv(6)]
        codes = sorted((m[1]["request_id"], m[1]["error"]["code"]) for m in replies if m)
        check(len(codes) == 2 and all(c[1] in ("worker_lost", "no_worker") for c in codes),
              "requests of a vanished domain fail (no hang): %s" % codes)

        # --- events were published
        kinds = set()
        topic_ok = True
        while sub.poll(100):
            t, body = sub.recv_multipart()
            ev = msgpack.unpackb(body, raw=False)
            kinds.add(ev.get("event"))
            check("request_id" in ev and "message_type" in ev, "event body has ids")
            topic_ok = topic_ok and t.decode() == "request." + ev.get("request_id", "")
        check({"accepted", "dispatched", "done", "progress"} <= kinds,
              "events published: %s" % sorted(kinds))
        check(topic_ok, "every request event's topic is request.<request_id>")

        # --- a worker whose REPLY body is garbage: the request fails at once
        # (not at its deadline) and the worker's slot is free again
        def garbage(w, rid, body):
            w.sock.send_multipart([b"", PROTO, bytes([REPLY]), rid.encode(), b"\xc1\xff"])
            return None
        junk = FakeWorker(back, "test", garbage, gpu=7, wid="junk-1")  # gpu 7: only it
        workers.append(junk)
        wait_for(lambda: any(x.get("worker_id") == "junk-1" for x in
                             (dealer.call({"message_type": "system.workers"}) or {})
                             .get("data", {}).get("workers", [])))
        t0 = time.time()
        r1 = dealer.call({"message_type": "test.x", "request_id": "g1", "gpu": 7,
                          "timeout_ms": 20000},
                         timeout=5)
        r2 = dealer.call({"message_type": "test.x", "request_id": "g2", "gpu": 7,
                          "timeout_ms": 20000},
                         timeout=5)
        check(r1 and r1["success"] is False and r1["error"]["code"] == "internal" and
              "cannot be decoded" in r1["error"]["message"] and time.time() - t0 < 4,
              "an undecodable REPLY ends its request at once: %s" % r1)
        check(r2 and r2["request_id"] == "g2" and len(junk.requests) == 2,
              "and the worker's slot is free for the next one: %s" % r2)
        junk.stop()
        workers.remove(junk)

        # --- the broker survives a burst of garbage
        for i in range(200):
            dealer.send(None, raw=os.urandom(1 + i % 50))
        got = 0
        while dealer.recv(1):
            got += 1
        check(got == 200, "every garbage frame answered (%d/200)" % got)
        r = dealer.call({"message_type": "system.status"})
        check(r and r["success"] and r["data"]["requests"]["in_broker"] == 0,
              "nothing left inside the broker")

        # --- every request ends with one info line of the same shape
        import re
        shape = re.compile(r"broker: (\S+) (\S+) worker=(\S+) attempt=(\d+) ([0-9.]+)ms (\S+)"
                           r"(?: field=(\S+))?(?:: (.*))?$")
        log.flush()
        with open(log.name) as f:
            finals = [m.groups() for m in map(shape.search, f.read().splitlines()) if m]
        by_id = {}
        for g in finals:
            by_id.setdefault(g[0], []).append(g)
        u1 = by_id.get("u1", [None])[0]
        check(u1 and u1[1] == "foo.bar" and u1[2] == "-" and u1[5] == "unknown_message_type",
              "rejected request logs id type worker=- attempt ms code: %s" % (u1,))
        ip = by_id.get("99", [None])[0]
        check(ip and ip[5] == "invalid_request" and ip[6] == "priority" and ip[7],
              "invalid_request logs its field: %s" % (ip,))
        e1 = by_id.get("e1", [None])[0]
        check(e1 and e1[2] == "echo-1" and e1[3] == "1" and e1[5] == "ok" and e1[6] is None,
              "worker reply logs the same shape: %s" % (e1,))
        p1 = by_id.get("p-1", [None])[0]
        check(p1 and p1[2] == "broker" and p1[5] == "ok", "broker-answered request: %s" % (p1,))
        ef = by_id.get("-", [])
        check(any(g[5] == "invalid_request" and "envelope frames" in (g[7] or "") for g in ef),
              "bad envelope frames logged in the same shape")
        dealer.close()
        req.close()
        sub.close()
    finally:
        for w in workers:
            w.stop()
        proc.terminate()
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
        check(rc == 0, "broker exits 0 on SIGTERM (rc=%s)" % rc)
        if failed:
            log.seek(0)
            print("---- broker log (tail) ----")
            print("".join(log.readlines()[-40:]))
        os.unlink(cfg.name)
        os.unlink(log.name)
    return 0


if __name__ == "__main__":
    rc = main()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(rc if rc else (1 if failed else 0))
