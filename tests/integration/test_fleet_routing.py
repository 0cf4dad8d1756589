#!/usr/bin/python3
"""A real broker and real workers on ipc and on tcp loopback: device
requests, a domain with no worker (no_worker at once), an unknown prefix
(unknown_message_type), not_available from a placeholder domain, 200
concurrent requests from several clients over 3 test workers (every request
answered exactly once), and priority order in a busy domain's queue."""
import os
import sys
import threading
import uuid

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402


def dealer_send(sock, msg, enc="msgpack"):
    """A DEALER sends the bare request frame (no empty delimiter)."""
    sock.send(fl.encode(msg, enc))


def dealer_recv(sock, timeout):
    """Next non-progress reply on a DEALER, or None."""
    end = fl.now() + timeout
    while True:
        left = end - fl.now()
        if left <= 0 or not sock.poll(int(left * 1000)):
            return None
        frames = sock.recv_multipart()
        msg = fl.decode(frames[-1])
        if msg.get("message_type") == "progress":
            continue
        return msg


def basics(t, fleet, kind):
    dev = fleet.start_worker("device", wid="device-" + kind)
    model = fleet.start_worker("model", wid="model-" + kind)
    fleet.wait_registered([dev.wid, model.wid])

    r = fleet.request({"message_type": "device.list", "request_id": "dl-1"})
    d = r.get("data") or {}
    t.check(r.get("success") is True and r.get("request_id") == "dl-1" and
            r.get("message_type") == "device.list",
            "%s: device.list succeeds, echoes request_id and message_type" % kind, r)
    t.check(isinstance(d.get("gpus"), list) and d.get("cpu", {}).get("logical_cores", 0) > 0 and
            d.get("memory", {}).get("total", 0) > 0,
            "%s: device.list reports gpus list, CPU cores and RAM" % kind, d)
    t.check("timing" in r, "%s: reply carries timing" % kind, r.keys())

    r = fleet.request({"message_type": "device.memory"}, enc="msgpack")
    t.check(r.get("success") is True and (r["data"].get("system") or {}).get("total", 0) > 0 and
            r.get("request_id"), "%s: device.memory in msgpack, broker made a request_id" % kind, r)

    r = fleet.request({"message_type": "device.status"})
    t.check(r.get("success") is True and r["data"].get("worker", {}).get("worker_id") == dev.wid,
            "%s: device.status names the worker" % kind, r)

    t0 = fl.now()
    r = fleet.request({"message_type": "inference.generate", "data": {"prompt": "x"}}, timeout=3)
    t.check(r.get("success") is False and r["error"]["code"] == "no_worker" and
            fl.now() - t0 < 2.0, "%s: domain without a worker -> no_worker at once" % kind, r)

    t0 = fl.now()
    r = fleet.request({"message_type": "bogus.thing"}, timeout=3)
    t.check(r.get("success") is False and r["error"]["code"] == "unknown_message_type" and
            fl.now() - t0 < 2.0, "%s: unknown prefix -> unknown_message_type" % kind, r)

    r = fleet.request({"message_type": "model.load", "data": {"model_name": "sdxl-base"}})
    t.check(r.get("success") is False and r["error"]["code"] == "no_worker" and
            "inference or conditioning" in r["error"].get("message", ""),
            "%s: model.load goes to the weight-holding workers (none here: no_worker)" % kind, r)

    r = fleet.request({"message_type": "model.status"})
    t.check(r.get("success") is True and r["data"].get("worker_id") == model.wid and
            "loaded_models" in r["data"] and "uptime_s" in r["data"],
            "%s: model.status (runtime status) works" % kind, r)


def concurrent_200(t, fleet, kind):
    ws = [fleet.start_worker("test", ["--concurrency", "2"], wid="t%d-%s" % (i, kind))
          for i in range(3)]
    fleet.wait_registered([w.wid for w in ws])
    nclients, per = 5, 40
    results = {}
    lock = threading.Lock()
    errors = []

    def client(ci):
        s = fleet.client(zmq.DEALER)
        try:
            sent = []
            for i in range(per):
                rid = "c%d-%d-%s" % (ci, i, uuid.uuid4().hex[:6])
                if i % 4 == 0:
                    msg = {"message_type": "test.sleep", "request_id": rid,
                           "data": {"ms": 20, "steps": 2, "tag": rid}}
                else:
                    msg = {"message_type": "test.echo", "request_id": rid, "data": {"tag": rid}}
                dealer_send(s, msg, "json" if ci % 2 else "msgpack")
                sent.append(rid)
            got = 0
            end = fl.now() + 30
            while got < per and fl.now() < end:
                r = dealer_recv(s, end - fl.now())
                if r is None:
                    break
                got += 1
                with lock:
                    results.setdefault(r.get("request_id"), []).append(r)
            # a duplicate would come right behind: a short look for extras
            extra = dealer_recv(s, 0.3)
            if extra is not None:
                with lock:
                    results.setdefault(extra.get("request_id"), []).append(extra)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            s.close()

    th = [threading.Thread(target=client, args=(i,)) for i in range(nclients)]
    t0 = fl.now()
    for x in th:
        x.start()
    for x in th:
        x.join()
    dt = fl.now() - t0
    total = nclients * per
    once = sum(1 for v in results.values() if len(v) == 1)
    dup = [k for k, v in results.items() if len(v) > 1]
    ok = sum(1 for v in results.values() for r in v if r.get("success") is True and
             (r.get("data") or {}).get("tag") == r.get("request_id"))
    t.check(not errors, "%s: clients ran without errors" % kind, errors)
    t.check(len(results) == total and once == total and not dup,
            "%s: %d concurrent requests from %d clients answered exactly once (%.2fs)" %
            (kind, total, nclients, dt), "answered %d, duplicates %d" % (len(results), len(dup)))
    t.check(ok == total, "%s: all %d succeeded with their own data" % (kind, total), ok)
    for w in ws:
        w.stop()


def priority_order(t, fleet, kind):
    # prefetch 0: requests held by a worker are outside the priority order
    w = fleet.start_worker("test", ["--prefetch", "0"], wid="prio-" + kind)
    fleet.wait_registered([w.wid])
    s = fleet.client(zmq.DEALER)
    try:
        dealer_send(s, {"message_type": "test.sleep", "request_id": "blocker", "stream": True,
                        "data": {"ms": 1500, "steps": 30}})
        # the blocker runs once its first progress arrives
        fl.wait_for(lambda: s.poll(100) and
                    fl.decode(s.recv_multipart()[-1]).get("message_type") == "progress", 5,
                    "the blocker's first progress")
        order = ["low", "normal", "high", "critical", "low", "critical"]
        for i, p in enumerate(order):
            dealer_send(s, {"message_type": "test.sleep", "request_id": "p%d-%s" % (i, p),
                            "priority": p, "data": {"ms": 5, "steps": 1}})
        done = []
        end = fl.now() + 10
        while len(done) < len(order) + 1 and fl.now() < end:
            r = dealer_recv(s, end - fl.now())
            if r is None:
                break
            done.append(r.get("request_id"))
        want = ["blocker", "p3-critical", "p5-critical", "p2-high", "p1-normal", "p0-low",
                "p4-low"]
        t.check(done == want, "%s: queued requests complete by priority, FIFO within one" %
                kind, done)
    finally:
        s.close()
        w.stop()


def run_kind(fleet, t, kind):
    basics(t, fleet, kind)
    concurrent_200(t, fleet, kind)
    priority_order(t, fleet, kind)


def test_ipc(t):
    fl.with_fleet("ipc", "route", run_kind, t, "ipc")


def test_tcp(t):
    fl.with_fleet("tcp", "route", run_kind, t, "tcp")


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("fleet_routing")
    t.run(test_ipc)
    t.run(test_tcp)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
