#!/usr/bin/python3
"""An independent client of the sdxl-fleet frontend protocol, written from
proto/PROTOCOL.md (client <-> broker section) with nothing but pyzmq and
msgpack, checked against a real broker and real workers.

It speaks JSON and msgpack over a REQ and a DEALER socket, including
streaming progress on the DEALER. Only process start-up comes from
tests/integration/fleetlib.py; the client below shares no code with it.
"""
import json
import os
import sys
import uuid

import msgpack
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import fleetlib as fl  # noqa: E402  (process management only)


class Client:
    """One frontend connection. kind: zmq.REQ or zmq.DEALER; enc: json|msgpack.

    Framing (PROTOCOL.md): a request is ONE frame holding a msgpack map or a
    JSON object. A REQ socket adds its empty delimiter itself; a DEALER sends
    the bare frame, which is also what lets the broker stream progress to it.
    Replies are read as the last frame of what comes back."""

    def __init__(self, ctx, endpoint, kind=zmq.REQ, enc="json"):
        self.kind = kind
        self.enc = enc
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def close(self):
        self.sock.close()

    def pack(self, obj):
        if self.enc == "json":
            return json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return msgpack.packb(obj, use_bin_type=True)

    def send_frame(self, frame):
        self.sock.send(frame)

    def send(self, obj):
        self.send_frame(self.pack(obj))

    def recv_raw(self, timeout=5.0):
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no message within %.1fs" % timeout)
        if self.kind == zmq.DEALER:
            return self.sock.recv_multipart()[-1]
        return self.sock.recv()

    @staticmethod
    def unpack(frame):
        if frame[:1] in (b"{", b"["):
            return "json", json.loads(frame.decode("utf-8"))
        return "msgpack", msgpack.unpackb(frame, raw=False)

    def recv(self, timeout=5.0):
        return self.unpack(self.recv_raw(timeout))[1]

    def call(self, message_type, data=None, timeout=5.0, **fields):
        msg = {"message_type": message_type, "request_id": "py-" + uuid.uuid4().hex[:10],
               "data": data or {}}
        msg.update(fields)
        self.send(msg)
        return msg["request_id"], self.recv(timeout)


def loose(m, key, dflt=None):
    """A reply field in the native (snake_case) or the C# (PascalCase) shape."""
    if not isinstance(m, dict):
        return dflt
    want = key.replace("_", "").lower()
    for k, v in m.items():
        if k.replace("_", "").lower() == want:
            return v
    return dflt


def check_envelope(t, what, rid, mtype, reply, success=True):
    # rejections made by the broker before routing carry no timing
    t.check(reply.get("request_id") == rid and reply.get("message_type") == mtype and
            reply.get("success") is success and (not success or "timing" in reply),
            what + ": request_id, message_type, success%s" % (", timing" if success else ""),
            reply)
    if success:
        t.check(isinstance(reply.get("data"), dict), what + ": data is a map", reply)
    else:
        e = reply.get("error") or {}
        t.check(isinstance(e.get("code"), str) and isinstance(e.get("message"), str),
                what + ": error {code, message}", reply)


def test_req(t, fleet, ctx):
    for enc in ("json", "msgpack"):
        c = Client(ctx, fleet.frontend, zmq.REQ, enc)
        try:
            rid, r = c.call("system.ping")
            check_envelope(t, "REQ %s system.ping" % enc, rid, "system.ping", r)
            c.send({"message_type": "device.list", "request_id": "enc-" + enc})
            got_enc, r = Client.unpack(c.recv_raw())
            t.check(got_enc == enc and r.get("success") is True,
                    "REQ %s: the reply comes back in %s" % (enc, enc), (got_enc, r))
            t.check(isinstance(r["data"].get("gpus"), list) and r["data"].get("cpu"),
                    "REQ %s: device.list data has gpus and cpu" % enc, r["data"])
            text = "Leuchtturm im Morgengrauen - 灯台 - 🚀"
            rid, r = c.call("test.echo", {"text": text, "n": [1, 2.5, None, True]})
            check_envelope(t, "REQ %s test.echo" % enc, rid, "test.echo", r)
            t.check(r["data"] == {"text": text, "n": [1, 2.5, None, True]},
                    "REQ %s: unicode, floats, null, bool round-trip" % enc, r["data"])
            rid, r = c.call("bogus.nothing")
            check_envelope(t, "REQ %s unknown type" % enc, rid, "bogus.nothing", r, False)
            t.check(r["error"]["code"] == "unknown_message_type",
                    "REQ %s: unknown_message_type" % enc, r)
            # no request_id: the broker makes one
            c.send({"message_type": "system.ping"})
            r = c.recv()
            t.check(isinstance(r.get("request_id"), str) and r["request_id"] != "",
                    "REQ %s: the broker makes a request_id when absent" % enc, r)
        finally:
            c.close()


def test_binary_msgpack(t, fleet, ctx):
    c = Client(ctx, fleet.frontend, zmq.DEALER, "msgpack")
    try:
        blob = bytes(range(256)) * 4
        rid, r = c.call("test.echo", {"tensor": {"dtype": "f32", "shape": [2, 2],
                                                 "data": blob[:16]}, "image": blob})
        t.check(r.get("success") is True and r["data"]["image"] == blob and
                r["data"]["tensor"]["data"] == blob[:16],
                "DEALER msgpack: binary payloads come back as bin, byte-exact", r.get("error"))
    finally:
        c.close()


def test_aliases(t, fleet, ctx):
    c = Client(ctx, fleet.frontend, zmq.REQ, "json")
    try:
        c.send({"type": "system.ping", "request_id": "alias-type"})
        r = c.recv()
        t.check(r.get("success") is True and r.get("message_type") == "system.ping",
                "alias: `type` for message_type", r)
        # C# dialect (issue #3): `action` requests get the C# reply shape back
        c.send({"action": "get_device_status", "request_id": "alias-action"})
        r = c.recv()
        t.check(loose(r, "success") is True and loose(r, "request_id") == "alias-action" and
                isinstance(loose(loose(r, "data"), "gpus"), list),
                "alias: C# `action` get_device_status -> device.status (C# reply shape)", r)
        c.send({"worker_type": "DEVICE", "action": "get_status", "request_id": "alias-wt"})
        r = c.recv()
        t.check(loose(r, "success") is True and
                loose(loose(loose(r, "data"), "worker"), "domain") == "device",
                "alias: worker_type DEVICE + action get_status -> device.status", r)
    finally:
        c.close()


def test_bad_frames(t, fleet, ctx):
    c = Client(ctx, fleet.frontend, zmq.DEALER, "json")
    try:
        for name, frame in (("not JSON", b"{nope"), ("JSON array", b"[1, 2]"),
                            ("msgpack int", msgpack.packb(7)),
                            ("no message_type", json.dumps({"data": {}}).encode())):
            c.send_frame(frame)
            try:
                r = c.recv(3)
                e = loose(r, "error") or {}
                t.check(loose(r, "success") is False and loose(e, "code") in (
                        "invalid_request", "unsupported_encoding"),
                        "bad frame (%s) -> an error reply, not silence" % name, r)
            except TimeoutError as ex:
                t.check(False, "bad frame (%s) -> an error reply" % name, ex)
        rid, r = c.call("system.ping")
        t.check(r.get("success") is True, "the connection still works after bad frames", r)
    finally:
        c.close()


def test_stream(t, fleet, ctx):
    for enc in ("json", "msgpack"):
        c = Client(ctx, fleet.frontend, zmq.DEALER, enc)
        try:
            rid = "stream-%s-%s" % (enc, uuid.uuid4().hex[:6])
            c.send({"message_type": "test.sleep", "request_id": rid, "stream": True,
                    "data": {"ms": 200, "steps": 4}})
            progress, final = [], None
            end = fl.now() + 10
            while final is None and fl.now() < end:
                m = c.recv(end - fl.now())
                if m.get("message_type") == "progress":
                    progress.append(m)
                else:
                    final = m
            check_envelope(t, "DEALER %s stream final reply" % enc, rid, "test.sleep", final)
            steps = [(p.get("data") or p).get("step") for p in progress]
            t.check(len(progress) == 4 and all(p.get("request_id") == rid for p in progress) and
                    steps == [1, 2, 3, 4],
                    "DEALER %s stream:true: 4 progress messages (step 1..4) before the reply" %
                    enc, progress)
            tot = [(p.get("data") or p).get("total") for p in progress]
            t.check(tot == [4] * 4, "DEALER %s progress carries total" % enc, tot)
            # without stream: only the reply
            rid2 = "nostream-" + enc
            c.send({"message_type": "test.sleep", "request_id": rid2,
                    "data": {"ms": 50, "steps": 3}})
            m = c.recv(5)
            t.check(m.get("message_type") == "test.sleep" and m.get("request_id") == rid2,
                    "DEALER %s without stream: no progress, just the reply" % enc, m)
        finally:
            c.close()


def test_dealer_pipelining(t, fleet, ctx):
    c = Client(ctx, fleet.frontend, zmq.DEALER, "msgpack")
    try:
        ids = ["pipe-%d" % i for i in range(20)]
        for i, rid in enumerate(ids):
            c.send({"message_type": "test.echo", "request_id": rid, "data": {"i": i},
                    "priority": ("low", "normal", "high", "critical")[i % 4]})
        got = {}
        for _ in ids:
            r = c.recv(5)
            got[r["request_id"]] = r["data"]["i"]
        t.check(got == {rid: i for i, rid in enumerate(ids)},
                "DEALER: 20 pipelined requests with priorities, each answered with its data", got)
        rid, r = c.call("test.sleep", {"ms": 5000}, timeout=5, timeout_ms=300)
        t.check(r.get("success") is False and r["error"]["code"] == "timeout",
                "DEALER: timeout_ms -> error timeout", r)
    finally:
        c.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("python_client")
    for kind in ("ipc", "tcp"):
        print("=== %s loopback" % kind, flush=True)
        fleet = fl.Fleet(kind, "py")
        ctx = zmq.Context()
        try:
            fleet.start_broker()
            ws = [fleet.start_worker("device", wid="py-dev-" + kind),
                  fleet.start_worker("test", ["--concurrency", "4"], wid="py-test-" + kind)]
            fleet.wait_registered([w.wid for w in ws])
            for fn in (test_req, test_binary_msgpack, test_aliases, test_bad_frames, test_stream,
                       test_dealer_pipelining):
                t.run(fn, fleet, ctx)
        except Exception as e:  # noqa: BLE001
            t.check(False, "%s fleet" % kind, e)
            fleet.dump_logs()
        finally:
            ctx.destroy(0)
            fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
