#!/usr/bin/python3
"""End-to-end: schema validation and the C# dialect through a real
sdxl-broker (and device/test/inference workers when built).

- every bad request of bad_requests.json (native and C#), and wire-level
  junk (truncated msgpack, invalid UTF-8, empty frame, a 10 MB frame over the
  configured limit, corrupt LZ4, unknown ext types, deep nesting), each gets
  exactly ONE clear error reply and the broker keeps serving;
- C#-dialect requests as a NetMQ client sends them: RequestSocket (REQ, empty
  delimiter) and DealerSocket (no delimiter); System.Text.Json PascalCase and
  camelCase; MessagePack-CSharp string keys, [Key(n)] arrays with integer
  enums and bin images, LZ4 ext 99 / ext 98, timestamps; and the replies come
  back in the C# shape (RequestId, Success, Data, Error {Code, Message, Field}).

Skips (77) when the broker is not built. Process start-up comes from
tests/integration/fleetlib.py; the C#-dialect client is the foundation's
pyzmq client (tests/python/test_protocol_client.py) when present.
"""
import copy
import json
import os
import struct
import sys
import tempfile
import uuid

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import fleetlib as fl  # noqa: E402

try:  # the foundation's independent client, reused for REQ / JSON / msgpack
    from test_protocol_client import Client  # noqa: E402
except Exception:  # noqa: BLE001 - fall back to the minimal client below
    Client = None

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
PNG = b"\x89PNG\r\n\x1a\n"
MAX_FRAME = 8 * 1024 * 1024
ERROR_CODES_BAD = {"invalid_request", "unsupported_encoding", "payload_too_large"}


def expand(v):
    """bad_requests.json string macros."""
    if isinstance(v, str) and v.startswith("$str:"):
        return "a" * int(v[5:])
    if isinstance(v, str) and v.startswith("$b64big:"):
        import base64
        return base64.b64encode(bytes(int(v[8:]))).decode()
    if isinstance(v, list):
        return [expand(x) for x in v]
    if isinstance(v, dict):
        return {k: expand(x) for k, x in v.items()}
    return v


def lz4_literal_block(data):
    """A valid LZ4 block holding `data` as literals only (no python lz4 here)."""
    n = len(data)
    out = bytearray([min(n, 15) << 4])
    if n >= 15:
        rem = n - 15
        while rem >= 255:
            out.append(255)
            rem -= 255
        out.append(rem)
    out += data
    return bytes(out)


def lz4_block(obj):
    """MessagePack-CSharp Lz4Block: ext 99 {int32 length, LZ4 block}."""
    raw = msgpack.packb(obj, use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(99, b"\xd2" + struct.pack(">i", len(raw)) +
                                         lz4_literal_block(raw)), use_bin_type=True)


def lz4_block_array(obj, chunk=64):
    """MessagePack-CSharp Lz4BlockArray: [ext 98 {int32 per chunk}, bin...]."""
    raw = msgpack.packb(obj, use_bin_type=True)
    parts = [raw[i:i + chunk] for i in range(0, len(raw), chunk)]
    hdr = b"".join(b"\xd2" + struct.pack(">i", len(p)) for p in parts)
    return msgpack.packb([msgpack.ExtType(98, hdr)] + [lz4_literal_block(p) for p in parts],
                         use_bin_type=True)


def x_reply():
    with open(os.path.join(fl.SOURCE_ROOT, "schemas", "csharp_enhanced_request.json")) as f:
        return json.load(f)["x-reply"]


def unkey(v, node, mt="inference.generate"):
    """A [Key(n)] reply (array) back into a map through the schema's x-reply
    order, as an int-keyed MessagePack-CSharp DTO would read it."""
    if node is None:
        return v
    if "x-for" in node:
        node = node["x-for"].get(mt)
        if node is None:
            return v
    if isinstance(v, list) and "x-key-order" in node:
        props = node.get("properties", {})
        return {k: unkey(x, props.get(k)) for k, x in zip(node["x-key-order"], v)
                if x is not None}
    if isinstance(v, list) and "items" in node:
        return [unkey(x, node["items"]) for x in v]
    return v


class Conn:
    """A frontend connection as NetMQ makes it: REQ (empty delimiter added by
    the socket) or DEALER without a delimiter (DealerSocket.SendFrame)."""

    def __init__(self, ctx, endpoint, kind):
        self.kind = kind
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def close(self):
        self.sock.close()

    def send_frame(self, frame):
        self.sock.send(frame)

    def recv_all(self, timeout=5.0, settle=0.15):
        """The reply, plus anything else that arrives within `settle` s."""
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply within %.1fs" % timeout)
        msgs = [self.sock.recv_multipart()]
        if self.kind == zmq.DEALER:
            while self.sock.poll(int(settle * 1000)):
                msgs.append(self.sock.recv_multipart())
        out = [fl.decode(m[-1]) for m in msgs]
        # an array-encoded request is answered in the array contract
        self.arrays = [isinstance(x, list) for x in out]
        return [unkey(x, x_reply()) if isinstance(x, list) else x for x in out]


def ping_ok(fleet):
    try:
        return fleet.ping_broker(2.0)
    except Exception:  # noqa: BLE001
        return False


def one_error(t, conn, frame, what, want_code=None, want_field=None, csharp=False, rid=None):
    """Send a bad frame; expect exactly one error reply; the broker still serves."""
    conn.send_frame(frame)
    try:
        replies = conn.recv_all()
    except TimeoutError as e:
        t.check(False, what, e)
        return None
    r = replies[0]
    csharp = csharp or "Error" in r  # a C#-looking frame is answered in kind
    if csharp:
        err = r.get("Error") or {}
        code, field, msg, ok = err.get("Code"), err.get("Field"), err.get("Message"), r.get("Success")
    else:
        err = r.get("error") or {}
        code, field, msg, ok = err.get("code"), err.get("field"), err.get("message"), r.get("success")
    good = (len(replies) == 1 and ok is False and bool(msg) and
            (code == want_code if want_code else code in ERROR_CODES_BAD) and
            (want_field is None or field == want_field) and
            (rid is None or r.get("RequestId" if csharp else "request_id") == rid))
    t.check(good, "%s -> one %s%s" % (what, want_code or "error",
                                       (" on " + want_field) if want_field else ""),
            "%d replies, first %s" % (len(replies), json.dumps(r, default=repr)[:400]))
    return r


def test_native_bad(t, fleet, ctx, cases):
    req = Conn(ctx, fleet.frontend, zmq.REQ)
    dealer = Conn(ctx, fleet.frontend, zmq.DEALER)
    try:
        for i, c in enumerate(cases):
            if c.get("needs") == "image_limit_1m" and not os.environ.get("SDXL_MAX_IMAGE_BYTES"):
                continue
            msg = {"message_type": "inference.generate", "request_id": "bad-%d" % i,
                   "data": expand(c["data"])}
            # alternate transports and encodings so both paths see every kind
            conn, enc = (req, "json") if i % 2 == 0 else (dealer, "msgpack")
            one_error(t, conn, fl.encode(msg, enc), "native bad #%d %s (%s)" % (i, c["name"], enc),
                      "invalid_request", c["field"], rid="bad-%d" % i)
        t.check(ping_ok(fleet), "broker still serves after %d native bad requests" % len(cases))
    finally:
        req.close()
        dealer.close()


def test_csharp_bad(t, fleet, ctx, cases):
    req = Conn(ctx, fleet.frontend, zmq.REQ)
    dealer = Conn(ctx, fleet.frontend, zmq.DEALER)
    try:
        for i, c in enumerate(cases):
            request = expand(c["request"])
            for conn, enc in ((req, "json"), (dealer, "msgpack")):
                one_error(t, conn, fl.encode(request, enc),
                          "C# bad #%d %s (%s)" % (i, c["name"], enc), "invalid_request",
                          c["field"], csharp=True, rid=GUID)
        t.check(ping_ok(fleet), "broker still serves after the C# bad requests")
    finally:
        req.close()
        dealer.close()


def test_wire_junk(t, fleet, ctx):
    good = msgpack.packb({"message_type": "inference.generate",
                          "data": {"prompt": "a cat" * 20}}, use_bin_type=True)
    nested = "1"
    for _ in range(200):
        nested = "[" + nested + "]"
    junk = [
        ("truncated msgpack", good[:len(good) // 2]),
        ("truncated msgpack header", b"\xdf\x00\x00"),
        ("invalid UTF-8 in JSON", b'{"message_type":"inference.generate","data":{"prompt":"\xff\xfe"}}'),
        ("invalid UTF-8 in msgpack str", b"\x81\xacmessage_type\xa3\xff\xfe\xfd"),
        ("empty frame", b""),
        ("10 MB frame over the limit", b"{" + b" " * (10 * 1024 * 1024) + b"}"),
        ("random bytes", bytes(range(256)) * 4),
        ("JSON with trailing junk", b'{"message_type":"system.ping"} xyz'),
        ("deeply nested JSON", ('{"message_type":"inference.generate","data":{"prompt":%s}}'
                                % nested).encode()),
        ("a bare JSON string", b'"hello"'),
        ("unknown msgpack ext type", msgpack.packb(
            {"Action": "generate", "Data": {"Prompt": "x", "When": msgpack.ExtType(7, b"abc")}},
            use_bin_type=True)),
        ("corrupt LZ4 ext 99", msgpack.packb(msgpack.ExtType(99, b"\xd2\x00\x00\x01\x00\xff\xff"),
                                             use_bin_type=True)),
        ("LZ4 ext 99 declaring 2 GB", msgpack.packb(msgpack.ExtType(99, b"\xd2\x7f\xff\xff\xff\x00"),
                                                    use_bin_type=True)),
        ("LZ4 ext 98 with a string chunk", msgpack.packb(
            [msgpack.ExtType(98, b"\xd2\x00\x00\x00\x04"), "nope"], use_bin_type=True)),
        ("array-encoded envelope too long", msgpack.packb(list(range(20)), use_bin_type=True)),
        ("data is a list", b'{"message_type":"inference.generate","data":[1,2,3]}'),
    ]
    req = Conn(ctx, fleet.frontend, zmq.REQ)
    dealer = Conn(ctx, fleet.frontend, zmq.DEALER)
    try:
        for name, frame in junk:
            for conn, how in ((req, "REQ"), (dealer, "DEALER")):
                r = one_error(t, conn, frame, "wire: %s (%s)" % (name, how))
                if r is not None and name.startswith("10 MB"):
                    code = (r.get("error") or r.get("Error") or {})
                    code = code.get("code") or code.get("Code")
                    t.check(code == "payload_too_large", "10 MB frame -> payload_too_large", code)
            t.check(ping_ok(fleet), "broker still serves after: %s" % name)
    finally:
        req.close()
        dealer.close()


def csharp_example():
    with open(os.path.join(fl.SOURCE_ROOT, "schemas", "csharp_enhanced_request.json")) as f:
        return json.load(f)["examples"][0]


def camel(v):
    if isinstance(v, dict):
        return {k[:1].lower() + k[1:]: camel(x) for k, x in v.items()}
    if isinstance(v, list):
        return [camel(x) for x in v]
    return v


def check_routed(t, what, r, rid=GUID):
    """A valid C# generation request: C#-shaped reply, and not refused by
    validation (without the engine the worker answers not_available; without
    an inference worker the broker answers no_worker)."""
    err = r.get("Error") or {}
    shaped = ("RequestId" in r and "Success" in r and "request_id" not in r and
              "success" not in r and r.get("RequestId") == rid)
    t.check(shaped, "%s: reply in the C# shape" % what, json.dumps(r, default=repr)[:300])
    t.check(r.get("Success") is True or err.get("Code") not in ERROR_CODES_BAD,
            "%s: passed validation and was routed" % what, json.dumps(r, default=repr)[:300])
    if not r.get("Success"):
        t.check(isinstance(err.get("Message"), str) and "Code" in err,
                "%s: Error {Code, Message}" % what)


def test_csharp_good(t, fleet, ctx):
    ex = csharp_example()
    env = {"RequestId": GUID, "Action": "generate_sdxl", "Data": ex}
    arr = [GUID, "generate_sdxl", [
        ["cyberrealisticPony_v125", "stabilityai/sdxl-refiner", "custom/vae-model"],
        [9, 25], [7.5, 1024, 1024, 42],
        ["A majestic dragon soaring over a medieval castle", "blurry, low quality",
         [["dragon_detail_lora", 0.8]], [["canny_controlnet", PNG, 1.0]]],
        [0, 95, "outputs/"], [[0, 2.0, "ESRGAN"]],
        None, [None, None, None, msgpack.Timestamp(1795410000, 500000000)]]]
    variants = [
        ("PascalCase JSON over REQ", zmq.REQ, json.dumps(env).encode()),
        ("camelCase JSON (web defaults) over DEALER", zmq.DEALER,
         json.dumps({"requestId": GUID, "action": "generate_sdxl", "data": camel(ex)}).encode()),
        ("string-keyed msgpack over DEALER", zmq.DEALER, msgpack.packb(env, use_bin_type=True)),
        ("[Key(n)] msgpack, int enums, bin image, timestamp over REQ", zmq.REQ,
         msgpack.packb(arr, use_bin_type=True)),
        ("LZ4 ext 99 over DEALER", zmq.DEALER, lz4_block(arr)),
        ("LZ4 ext 98 over REQ", zmq.REQ, lz4_block_array(env)),
        ("WorkerType INFERENCE + Action generate", zmq.REQ,
         json.dumps({"RequestId": GUID, "WorkerType": "INFERENCE", "Action": "generate",
                     "Data": ex}).encode()),
    ]
    for what, kind, frame in variants:
        c = Conn(ctx, fleet.frontend, kind)
        try:
            c.send_frame(frame)
            replies = c.recv_all(timeout=15.0)
            if "[Key(n)]" in what or "ext 99" in what:
                t.check(all(c.arrays), "%s: answered in the array contract" % what, c.arrays)
            err = replies[-1].get("Error") or {}
            if err.get("Field"):
                # whoever raised it (here the inference worker: refiner_model
                # is not available), the field is in the C# names
                t.check(err["Field"][:1].isupper() and "_" not in err["Field"],
                        "%s: error field in C# names (%s)" % (what, err["Field"]), err)
            t.check(len(replies) == 1 or all("Progress" in json.dumps(x, default=repr)
                                               for x in replies[:-1]),
                    "%s: one reply" % what, len(replies))
            check_routed(t, what, replies[-1])
        finally:
            c.close()


def test_csharp_success(t, fleet, ctx, have_workers):
    if not have_workers:
        print("note: no workers built, C# success replies not checked")
        return
    c = Conn(ctx, fleet.frontend, zmq.REQ)
    try:
        c.send_frame(json.dumps({"RequestId": GUID, "Action": "get_device_status"}).encode())
        r = c.recv_all()[0]
        t.check(r.get("Success") is True and r.get("RequestId") == GUID and
                isinstance(r.get("Data"), dict) and
                all(k[:1].isupper() for k in r["Data"]),
                "get_device_status: Success, RequestId, PascalCase Data",
                json.dumps(r, default=repr)[:300])
        c.send_frame(msgpack.packb({"RequestId": GUID, "WorkerType": 0,
                                    "Action": "get_device_status"}, use_bin_type=True))
        r = c.recv_all()[0]
        t.check(r.get("Success") is True and r.get("Action") == "get_device_status",
                "WorkerType 0 (DEVICE) as an integer, msgpack", json.dumps(r, default=repr)[:300])
    finally:
        c.close()
    # images: bin in msgpack, base64 text in JSON (test.echo answers its data)
    for enc in ("json", "msgpack"):
        d = Conn(ctx, fleet.frontend, zmq.DEALER)
        try:
            if enc == "json":
                frame = json.dumps({"RequestId": GUID, "Action": "test.echo",
                                    "Data": {"image": "iVBORw0KGgo="}}).encode()
            else:
                frame = msgpack.packb({"RequestId": GUID, "Action": "test.echo",
                                       "Data": {"image": PNG}}, use_bin_type=True)
            d.send_frame(frame)
            r = d.recv_all()[-1]
            img = (r.get("Data") or {}).get("Image")
            want = "iVBORw0KGgo=" if enc == "json" else PNG
            t.check(r.get("Success") is True and img == want,
                    "test.echo image in %s comes back as %s" % (enc, type(want).__name__),
                    json.dumps(r, default=repr)[:300])
        finally:
            d.close()


def dealer_all(ctx, fleet, frame, timeout=10.0):
    """Send one frame on a fresh DEALER, collect everything until the final
    reply (the message with Success) or the timeout."""
    c = Conn(ctx, fleet.frontend, zmq.DEALER)
    try:
        c.send_frame(frame)
        out, arrays = [], []
        end = fl.now() + timeout
        while fl.now() < end:
            got = c.recv_all(timeout=max(0.1, end - fl.now()), settle=0.3)
            out += got
            arrays += c.arrays
            if any("Success" in x for x in got):
                break
        return out, arrays
    finally:
        c.close()


def test_csharp_streaming(t, fleet, ctx, have_workers):
    """C# streaming over DEALER: progress frames have Type "progress" and a
    Progress {Step, Total, Elapsed}, never Success, so a NetMQ client that
    completes its call by RequestId waits for the real reply."""
    if not have_workers:
        print("note: no workers built, C# streaming not checked")
        return
    for enc in ("json", "msgpack"):
        env = {"RequestId": "cs-stream-" + enc, "MessageType": "test.sleep", "Stream": True,
               "Data": {"ms": 300, "steps": 3}}
        msgs, _ = dealer_all(ctx, fleet, fl.encode(env, enc))
        prog = [m for m in msgs if m.get("Type") == "progress"]
        final = [m for m in msgs if "Success" in m]
        t.check(len(prog) >= 2 and len(final) == 1 and msgs[-1] is final[0],
                "C# stream (%s): %d progress frames, then one final reply" % (enc, len(prog)),
                json.dumps(msgs, default=repr)[:400])
        t.check(all("Success" not in m and "Data" not in m and
                    m.get("RequestId") == env["RequestId"] and
                    set(("Step", "Total", "Elapsed")) <= set(m.get("Progress") or {})
                    for m in prog),
                "C# stream (%s): progress has RequestId, Progress {Step, Total, Elapsed}, "
                "no Success/Data" % enc, json.dumps(prog, default=repr)[:400])
        t.check(final and final[0].get("Success") is True,
                "C# stream (%s): the final reply has Success" % enc)
    # the same in the [Key(n)] contract: arrays throughout
    arr = ["cs-stream-arr", None, {"ms": 300, "steps": 3}, None, None, None, None, None, True,
           None, "test.sleep"]
    msgs, arrays = dealer_all(ctx, fleet, msgpack.packb(arr, use_bin_type=True))
    prog = [m for m in msgs if m.get("Type") == "progress"]
    t.check(len(prog) >= 2 and all(arrays) and msgs[-1].get("Success") is True and
            all("Success" not in m for m in prog),
            "C# stream ([Key(n)]): progress and reply as arrays, progress without Success",
            json.dumps(msgs, default=repr)[:400])


def test_csharp_wire_forms(t, fleet, ctx, have_workers):
    """Envelope keys under one loose rule, unknown properties as Warnings,
    Guid bytes echoed, a BOM accepted, undecodable C# answered in kind."""
    c = Conn(ctx, fleet.frontend, zmq.REQ)
    try:
        for key in ("Type", "TYPE", "type"):
            c.send_frame(json.dumps({key: "system.ping", "RequestId": "k-" + key,
                                     "Data": {}}).encode())
            r = c.recv_all()[0]
            t.check(r.get("Success") is True and r.get("RequestId") == "k-" + key,
                    "envelope key %r names the message type" % key,
                    json.dumps(r, default=repr)[:300])
        c.send_frame(json.dumps({"RequestId": "w-1", "MessageType": "system.ping", "Data": {},
                                 "Colour": "blue", "TraceParent": "00-ab"}).encode())
        r = c.recv_all()[0]
        w = r.get("Warnings") or []
        t.check(r.get("Success") is True and len(w) == 2 and "Colour" in w[0],
                "unknown C# envelope properties: accepted, listed in Warnings",
                json.dumps(r, default=repr)[:300])
        gb = uuid.UUID(GUID).bytes_le
        c.send_frame(msgpack.packb({"RequestId": gb, "MessageType": "system.ping"},
                                   use_bin_type=True))
        r = c.recv_all()[0]
        t.check(r.get("Success") is True and r.get("RequestId") == gb,
                "a Guid RequestId sent as 16 bytes comes back as those bytes", r.get("RequestId"))
        c.send_frame(b"\xef\xbb\xbf" + json.dumps({"RequestId": "bom-1",
                                                   "MessageType": "system.ping"}).encode())
        r = c.recv_all()[0]
        t.check(r.get("Success") is True and r.get("RequestId") == "bom-1",
                "JSON with a UTF-8 BOM is accepted", json.dumps(r, default=repr)[:300])
        c.send_frame(b'\xef\xbb\xbf{"RequestId": "bad-1", "Action": "generate", "Data": {')
        r = c.recv_all()[0]
        err = r.get("Error") or {}
        t.check(r.get("Success") is False and r.get("RequestId") == "bad-1" and
                err.get("Code") == "invalid_request" and "decode" in (err.get("Message") or ""),
                "undecodable C# JSON is answered in the C# shape with its RequestId",
                json.dumps(r, default=repr)[:300])
        c.send_frame(msgpack.packb(["bad-2", "generate_sdxl", {"Prompt": "x"}],
                                   use_bin_type=True)[:-3])
        r = c.recv_all()[0]
        t.check(c.arrays[0] and r.get("Success") is False and r.get("RequestId") == "bad-2",
                "truncated [Key(n)] msgpack is answered as an array with its RequestId",
                json.dumps(r, default=repr)[:300])
        c.send_frame(msgpack.packb(["arr-err", "generate_sdxl", [["m"], [9, 25], [45.0], ["p"]]],
                                   use_bin_type=True))
        r = c.recv_all()[0]
        err = r.get("Error") or {}
        t.check(c.arrays[0] and r.get("RequestId") == "arr-err" and
                err.get("Field") == "Hyperparameters.GuidanceScale",
                "array envelope refused by validation: array reply with RequestId and C# field",
                json.dumps(r, default=repr)[:300])
        if have_workers:
            ts = msgpack.Timestamp(1795410000)  # local clock time of the DateTimeOffset
            c.send_frame(msgpack.packb({"RequestId": "dto-1", "MessageType": "test.echo",
                                        "Timestamp": [ts, 60], "Data": {"When": [ts, -300]}},
                                       use_bin_type=True, datetime=False))
            r = c.recv_all()[0]
            when = (r.get("Data") or {}).get("When") or ""
            t.check(r.get("Success") is True and when.endswith("-05:00") and
                    when.startswith("2026-"),
                    "DateTimeOffset [timestamp, -300] arrives as RFC 3339 text with -05:00",
                    json.dumps(r, default=repr)[:300])
            c.send_frame(json.dumps({"RequestId": "ts-1", "MessageType": "test.sleep",
                                     "Timeout": "00:00:00.3", "Data": {"ms": 5000,
                                                                       "steps": 50}}).encode())
            r = c.recv_all(timeout=5.0)[0]
            t.check((r.get("Error") or {}).get("Code") == "timeout" and
                    (r.get("Timing") or {}).get("TotalMs", 1e9) < 3000,
                    "Timeout as a TimeSpan \"00:00:00.3\" is the request's deadline",
                    json.dumps(r, default=repr)[:300])
            c.send_frame(json.dumps({"RequestId": "f-1", "Action": "generate_sdxl", "Data": {
                "Model": {"Base": "m", "Refiner": "r"}, "Conditioning": {"Prompt": "x"},
                "Scheduler": {"Type": 11}}}).encode())
            r = c.recv_all()[0]
            err = r.get("Error") or {}
            t.check(err.get("Field") == "Scheduler.Type" and "not supported" in
                    (err.get("Message") or ""),
                    "Scheduler.Type 11 (DPMSolverSDEScheduler): a clear not-supported error",
                    json.dumps(r, default=repr)[:300])
    finally:
        c.close()


def test_foundation_client(t, fleet, ctx):
    """The foundation's pyzmq client, sending C#-dialect requests."""
    if Client is None:
        print("note: tests/python/test_protocol_client.py not importable; skipped")
        return
    for kind in (zmq.REQ, zmq.DEALER):
        for enc in ("json", "msgpack"):
            c = Client(ctx, fleet.frontend, kind, enc)
            try:
                c.send({"RequestId": GUID, "Action": "generate_sdxl",
                        "Data": {"Model": {"Base": "cyberrealisticPony_v125"},
                                 "Hyperparameters": {"GuidanceScale": 45},
                                 "Conditioning": {"Prompt": "x"}}})
                r = c.recv(10.0)
                err = r.get("Error") or {}
                t.check(r.get("Success") is False and err.get("Code") == "invalid_request" and
                        err.get("Field") == "Hyperparameters.GuidanceScale" and
                        err.get("Message") == "must be <= 30, got 45" and
                        r.get("RequestId") == GUID,
                        "foundation client (%s, %s): C# error reply" %
                        ("REQ" if kind == zmq.REQ else "DEALER", enc),
                        json.dumps(r, default=repr)[:300])
                c.send({"message_type": "inference.generate", "request_id": "n-1",
                        "data": {"prompt": "x", "hyperparameters": {"guidance_scale": 45}}})
                r = c.recv(10.0)
                t.check(r.get("success") is False and
                        (r.get("error") or {}).get("field") == "hyperparameters.guidance_scale" and
                        r.get("request_id") == "n-1",
                        "foundation client (%s): native request keeps the native reply" % enc,
                        json.dumps(r, default=repr)[:300])
            finally:
                c.close()


def test_alias_sets(t, fleet, ctx):
    """Every scheduler alias that implies sibling fields, at every fill level
    of the request map, native and C#, through the broker. The validator once
    wrote through a stale pointer here (heap corruption, workers receiving
    maps with non-string keys): each must pass validation (no
    invalid_request), get exactly one reply, and the broker stays up. The
    ASan build runs this against an instrumented broker."""
    with open(os.path.join(HERE, "..", "..", "schemas", "prompt_submission_schema.json")) as f:
        sched = json.load(f)["properties"]["scheduler"]
    fillers = [("negative_prompt", "n"), ("refiner_model", None), ("hyperparameters", {}),
               ("dimensions", {}), ("lora", {}), ("controlnet", []), ("textual_inversions", []),
               ("clip_skip", 0), ("precision", {}), ("init_image", None), ("output", {}),
               ("batch", {}), ("metadata", {})]
    d = Conn(ctx, fleet.frontend, zmq.DEALER)
    sent = {}
    try:
        for name in sched["x-alias-sets"]:
            for k in range(len(fillers) + 1):
                data = {"prompt": "x", "model_name": "no-such-model"}
                data.update(fillers[:k])
                data["scheduler"] = name
                rid = "as-%d" % len(sent)
                sent[rid] = (name, k, "native")
                d.send_frame(msgpack.packb({"message_type": "inference.generate",
                                            "request_id": rid, "timeout_ms": 30000,
                                            "data": data}, use_bin_type=True))
            for k in range(4):
                ex = {"Conditioning": {"Prompt": "x"}, "Scheduler": {"Type": name, "Steps": 2},
                      "Model": {"Base": "no-such-model"}}
                for sec in [("Hyperparameters", {"Width": 64}), ("Output", {"Format": "PNG"}),
                            ("Precision", {"Dtype": "fp32"})][:k]:
                    ex[sec[0]] = sec[1]
                rid = "as-%d" % len(sent)
                sent[rid] = (name, k, "csharp")
                d.send_frame(json.dumps({"RequestId": rid, "Action": "generate_sdxl",
                                         "TimeoutMs": 30000, "Data": ex}).encode())
        got = {}
        end = fl.now() + 60
        while len(got) < len(sent) and fl.now() < end:
            if not d.sock.poll(1000):
                continue
            r = fl.decode(d.sock.recv_multipart()[-1])
            rid = r.get("request_id", r.get("RequestId"))
            if "Progress" in r or r.get("type") == "progress" or r.get("Type") == "progress":
                continue
            got.setdefault(rid, []).append(r)
        bad = [(sent.get(rid), rs[0]) for rid, rs in got.items()
               if len(rs) != 1 or (rs[0].get("error") or rs[0].get("Error") or {}).get(
                   "code", (rs[0].get("Error") or {}).get("Code")) == "invalid_request"]
        t.check(len(got) == len(sent) and not bad,
                "%d alias-set requests at every fill level: one reply each, none refused "
                "(%d replies)" % (len(sent), len(got)), bad[:3])
        t.check(fleet.broker.alive() and ping_ok(fleet), "broker alive after the alias sets")
    finally:
        d.close()


def make_roots(base):
    """Roots for the semantic checks, with a symlink that escapes."""
    roots = {}
    for kind in ("models", "loras", "vaes", "controlnets", "outputs"):
        p = os.path.join(base, kind)
        os.makedirs(p)
        roots[kind] = p
    os.symlink("/etc", os.path.join(roots["loras"], "evil"))
    return roots


def main():
    fl.require_binaries(fl.BROKER_BIN)
    with open(os.path.join(HERE, "bad_requests.json")) as f:
        bad = json.load(f)
    t = fl.Tally("broker_schema")
    have_workers = os.access(fl.WORKER_BIN, os.X_OK)
    rootdir = tempfile.mkdtemp(prefix="sdxl-roots-")
    roots = make_roots(rootdir)
    for kind, p in roots.items():
        os.environ["SDXL_%s_ROOT" % kind.upper()] = p
    os.environ["SDXL_MAX_IMAGE_BYTES"] = str(1024 * 1024)
    fleet = fl.Fleet("ipc", "schema")
    ctx = zmq.Context()
    try:
        fleet.start_broker(["--max-frame-bytes", str(MAX_FRAME)])
        if have_workers:
            ws = [fleet.start_worker("device", wid="sch-dev"),
                  fleet.start_worker("test", wid="sch-test"),
                  fleet.start_worker("inference", wid="sch-inf")]
            try:
                fleet.wait_registered([w.wid for w in ws], timeout=15.0)
            except TimeoutError as e:
                print("note: %s" % e)
        t.run(test_native_bad, fleet, ctx, bad["native"])
        t.run(test_csharp_bad, fleet, ctx, bad["csharp"])
        t.run(test_wire_junk, fleet, ctx)
        t.run(test_csharp_good, fleet, ctx)
        t.run(test_csharp_success, fleet, ctx, have_workers)
        t.run(test_foundation_client, fleet, ctx)
        t.run(test_alias_sets, fleet, ctx)
        t.run(test_csharp_streaming, fleet, ctx, have_workers)
        t.run(test_csharp_wire_forms, fleet, ctx, have_workers)
        # symlink escape through the broker's configured roots
        one = Conn(ctx, fleet.frontend, zmq.REQ)
        one_error(t, one, json.dumps({"message_type": "inference.generate", "data": {
            "prompt": "x", "lora": {"models": [{"name": "evil/passwd"}]}}}).encode(),
            "LoRA through a symlink out of the loras root", "invalid_request",
            "lora.models[0].name")
        one.close()
        t.check(fleet.broker.alive(), "broker alive at the end")
    except Exception as e:  # noqa: BLE001
        t.check(False, "fleet", e)
        fleet.dump_logs()
    finally:
        ctx.destroy(0)
        if t.failed:
            fleet.dump_logs()
        fleet.close()
        import shutil
        shutil.rmtree(rootdir, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
