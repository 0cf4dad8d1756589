"""fleetlib - start real sdxl-fleet processes for tests and talk to them.

Used by the integration tests (tests/integration/test_*.py) and the python
client tests (tests/python/) to start brokers and workers on ipc or tcp
loopback endpoints in a private temp dir, wait for events with deadlines
(never a fixed sleep), and stop everything (TERM, then KILL after a
deadline). Not a protocol client of its own beyond the few request helpers
below: tests/python has an independent client.

Runs with /usr/bin/python3 (Debian python3-zmq, python3-msgpack).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

import msgpack
import zmq

SOURCE_ROOT = os.environ.get(
    "SDXL_SOURCE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_ROOT = os.environ.get("SDXL_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))

BROKER_BIN = os.path.join(BUILD_ROOT, "broker", "sdxl-broker")
WORKER_BIN = os.path.join(BUILD_ROOT, "workers", "sdxl-worker")
CLI_BIN = os.path.join(BUILD_ROOT, "tools", "sdxl-cli")

SKIP = 77


def now():
    return time.monotonic()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, what, interval=0.02):
    """Poll pred() until it returns a true value or timeout seconds pass.
    Returns the value; raises TimeoutError naming `what`."""
    end = now() + timeout
    while True:
        v = pred()
        if v:
            return v
        if now() >= end:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Tally:
    """Named checks; prints "N passed, N failed" and gives the exit code."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=None):
        if cond:
            self.passed += 1
            print("ok   %s" % what, flush=True)
        else:
            self.failed += 1
            print("FAIL %s%s" % (what, (": %s" % (detail,)) if detail is not None else ""),
                  flush=True)
        return bool(cond)

    def run(self, fn, *args):
        """Run a test function; an exception counts as one failure."""
        name = getattr(fn, "__name__", "test")
        print("--- %s" % name, flush=True)
        try:
            fn(self, *args)
        except Exception as e:  # noqa: BLE001 - a test's crash is a failure
            self.failed += 1
            print("FAIL %s raised %s: %s" % (name, type(e).__name__, e), flush=True)
            traceback.print_exc()

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


class Proc:
    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, deadline=5.0):
        """TERM, then KILL after the deadline. Returns the exit status."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            if self.wait(deadline) is None:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])


class Fleet:
    """Brokers and workers in one temp dir; kind is "ipc" or "tcp"."""

    def __init__(self, kind="ipc", tag="fleet"):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="sdxl-%s-" % tag)
        self.procs = []
        self.ctx = zmq.Context()
        self.frontend = self.endpoint("frontend")
        self.backend = self.endpoint("backend")
        self.events = self.endpoint("events")
        self.broker = None

    def endpoint(self, name):
        if self.kind == "ipc":
            return "ipc://%s/%s.sock" % (self.dir, name)
        return "tcp://127.0.0.1:%d" % free_port()

    def start_broker(self, extra=()):
        argv = [BROKER_BIN, "--frontend", self.frontend, "--backend", self.backend,
                "--events", self.events] + list(extra)
        self.broker = Proc("broker", argv, os.path.join(self.dir, "broker.log"))
        self.procs.append(self.broker)
        wait_for(lambda: self.ping_broker(0.3) or not self.broker.alive() and
                 _raise(RuntimeError("broker exited: " + self.broker.tail())), 10,
                 "the broker to answer system.ping")
        return self.broker

    def start_worker(self, domain, extra=(), wid=None):
        wid = wid or "%s-%s" % (domain, uuid.uuid4().hex[:6])
        argv = [WORKER_BIN, "--domain", domain, "--broker", self.backend, "--id", wid] + \
            list(extra)
        p = Proc("worker " + wid, argv, os.path.join(self.dir, "%s.log" % wid))
        p.wid = wid
        self.procs.append(p)
        return p

    def ping_broker(self, timeout=1.0):
        try:
            r = self.request({"message_type": "system.ping"}, timeout=timeout)
            return r is not None and r.get("success") is True
        except TimeoutError:
            return False

    def workers(self, timeout=2.0):
        """system.workers as a list of worker maps."""
        r = self.request({"message_type": "system.workers"}, timeout=timeout)
        data = r.get("data") or {}
        ws = data.get("workers", data) if isinstance(data, dict) else data
        if isinstance(ws, dict):  # {domain: [workers]} or {id: worker}
            flat = []
            for k, v in ws.items():
                if isinstance(v, list):
                    flat.extend(v)
                elif isinstance(v, dict):
                    flat.append(v)
            ws = flat
        return ws if isinstance(ws, list) else []

    def worker_ids(self, timeout=2.0):
        ids = set()
        for w in self.workers(timeout):
            if isinstance(w, dict):
                ids.add(w.get("worker_id") or w.get("id"))
        return ids

    def wait_registered(self, wids, timeout=20.0):
        # returns as soon as they are registered; 20 s only on a loaded ASan run
        want = set(wids)

        def ok():
            try:
                return want <= self.worker_ids(1.0)
            except TimeoutError:
                return False
        return wait_for(ok, timeout, "workers %s to register" % sorted(want), 0.05)

    def client(self, kind=zmq.REQ):
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.frontend)
        return s

    def request(self, msg, timeout=5.0, enc="json", sock=None):
        """One round trip on a fresh REQ socket (or `sock`, a REQ). Returns the
        decoded reply; raises TimeoutError."""
        own = sock is None
        s = sock or self.client(zmq.REQ)
        try:
            s.send(encode(msg, enc))
            if not s.poll(int(timeout * 1000)):
                raise TimeoutError("no reply to %s within %.1fs" % (msg.get("message_type"),
                                                                   timeout))
            return decode(s.recv())
        finally:
            if own:
                s.close()

    def close(self, deadline=5.0):
        """Stop every process (TERM, KILL after the deadline) and remove the
        temp dir (kept when SDXL_KEEP_TEST_DIRS is set, for its logs)."""
        codes = {}
        for p in reversed(self.procs):
            codes[p.name] = p.stop(deadline)
        self.ctx.destroy(0)
        if not os.environ.get("SDXL_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return codes

    def dump_logs(self, n=25):
        for p in self.procs:
            print("----- %s (%s) log tail:" % (p.name, p.log_path))
            print(p.tail(n))


def _raise(e):
    raise e


def with_fleet(kind, tag, fn, *args):
    """Run fn(fleet, *args) with a started broker; logs on failure; always
    stops the fleet."""
    fleet = Fleet(kind, tag)
    try:
        fleet.start_broker()
        return fn(fleet, *args)
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fleet.close()


def encode(msg, enc="json"):
    if enc == "json":
        return json.dumps(msg).encode()
    return msgpack.packb(msg, use_bin_type=True)


def decode(frame):
    s = frame.lstrip()
    if s[:1] in (b"{", b"["):
        return json.loads(frame.decode())
    return msgpack.unpackb(frame, raw=False)


def require_binaries(*paths):
    """Exit 77 (skip) when a binary is not built."""
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if missing:
        print("SKIP: not built: %s" % ", ".join(missing))
        sys.exit(SKIP)


# ---- helpers several tests share

def collect(sock, ids, timeout, settle=1.5):
    """Final replies on a DEALER for ids (progress skipped) until each has
    one, then `settle` seconds more to catch duplicates. Returns {id: [replies]}
    (an id that never came maps to [])."""
    got = {i: [] for i in ids}
    end = now() + timeout
    settle_end = None
    while True:
        left = (settle_end if settle_end is not None else end) - now()
        if left <= 0 or not sock.poll(int(left * 1000)):
            break
        m = decode(sock.recv_multipart()[-1])
        if m.get("message_type") == "progress":
            continue
        got.setdefault(m.get("request_id"), []).append(m)
        if settle_end is None and all(got[i] for i in ids):
            settle_end = now() + settle
    return got


def in_flight(fleet, wid):
    """The broker's in_flight count for a worker (-1 when it is not there)."""
    for w in fleet.workers():
        if w.get("worker_id") == wid:
            return w.get("in_flight", 0)
    return -1


def subscriber(fleet, prefix):
    """A SUB on the fleet's events for topics starting with prefix (connected
    and given 0.2 s for the subscription to reach the broker)."""
    s = fleet.ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt_string(zmq.SUBSCRIBE, prefix)
    s.connect(fleet.events)
    time.sleep(0.2)
    return s


def tiny_model(dirpath, name="sdxl-tiny", seed=3):
    """A models root under dirpath holding a tiny random SDXL (sdxl-gen
    make-tiny, no golden data needed). Returns the root."""
    root = os.path.join(dirpath, "models")
    os.makedirs(root, exist_ok=True)
    subprocess.run([os.path.join(BUILD_ROOT, "tools", "sdxl-gen"), "make-tiny",
                    os.path.join(root, name), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    return root
