#!/usr/bin/python3
"""Failure handling with real processes: SIGKILL a worker during a request
(the request finishes on another worker of the domain), SIGKILL a worker
holding several slots (credit: running and waiting on it; each request is
answered exactly once, by the other worker), timeout_ms and system.cancel on
requests in several slots of one worker, timeout_ms on a long request
(timeout error, and the worker got CANCEL), broker restart (workers
re-register), SIGTERM a worker mid-request (it finishes the request and
exits 0). Scenarios alternate between ipc and tcp loopback."""
import os
import signal
import sys

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402


def send(sock, msg):
    sock.send(fl.encode(msg, "msgpack"))  # DEALER: the bare frame


def recv_until(sock, pred, timeout, what):
    end = fl.now() + timeout
    while True:
        left = end - fl.now()
        if left <= 0 or not sock.poll(int(left * 1000)):
            raise TimeoutError("timed out waiting for " + what)
        m = fl.decode(sock.recv_multipart()[-1])
        if pred(m):
            return m


def is_progress(rid):
    return lambda m: m.get("message_type") == "progress" and m.get("request_id") == rid


def is_reply(rid):
    return lambda m: m.get("message_type") != "progress" and m.get("request_id") == rid


def sigkill_retry(fleet, t, kind):
    w1 = fleet.start_worker("test", wid="k1-" + kind)
    fleet.wait_registered([w1.wid])
    s = fleet.client(zmq.DEALER)
    try:
        # long enough for w2 to start and register on a loaded machine (an
        # ASan build, tests in parallel) while kill-me still runs on w1
        send(s, {"message_type": "test.sleep", "request_id": "kill-me", "stream": True,
                 "data": {"ms": 8000, "steps": 80}})
        recv_until(s, is_progress("kill-me"), 5, "progress from w1")  # running on w1
        w2 = fleet.start_worker("test", wid="k2-" + kind)
        fleet.wait_registered([w2.wid])
        t0 = fl.now()
        w1.signal(signal.SIGKILL)
        r = recv_until(s, is_reply("kill-me"), 30, "the retried reply")
        t.check(r.get("success") is True and r["data"].get("worker_id") == w2.wid,
                "%s: SIGKILL during test.sleep: finished on the other worker in %.1fs" %
                (kind, fl.now() - t0), r)
    finally:
        s.close()


def sigkill_slots(fleet, t, kind):
    """A worker holding 6 requests (2 running, 4 waiting on it) is killed:
    all 6 are re-dispatched and each is answered exactly once."""
    w1 = fleet.start_worker("test", ["--concurrency", "2", "--capacity", "8"],
                            wid="slots1-" + kind)
    fleet.wait_registered([w1.wid])
    s = fleet.client(zmq.DEALER)
    ids = ["slot-%d" % i for i in range(6)]
    try:
        for rid in ids:
            send(s, {"message_type": "test.sleep", "request_id": rid,
                     "data": {"ms": 4000, "steps": 8}})
        fl.wait_for(lambda: fl.in_flight(fleet, w1.wid) == 6, 5, "w1 to hold 6 requests")
        t.check(True, "%s: one worker holds 6 requests (capacity 8, 2 job threads)" % kind)
        w2 = fleet.start_worker("test", ["--concurrency", "6"], wid="slots2-" + kind)
        fleet.wait_registered([w2.wid])
        held = fl.in_flight(fleet, w1.wid)
        t0 = fl.now()
        w1.signal(signal.SIGKILL)
        t.check(held == 6, "%s: w1 still held all 6 when killed" % kind, held)
        got = fl.collect(s, ids, 25)
        counts = {i: len(got.get(i, [])) for i in ids}
        t.check(all(c == 1 for c in counts.values()) and len(got) == len(ids),
                "%s: SIGKILL with 6 slots held: each request answered exactly once (%.1fs)" %
                (kind, fl.now() - t0), {k: len(v) for k, v in got.items()})
        oks = [r for i in ids for r in got.get(i, [])
               if r.get("success") is True and r["data"].get("worker_id") == w2.wid]
        t.check(len(oks) == 6, "%s: all 6 succeeded on the other worker" % kind,
                [(r.get("request_id"), r.get("success"), (r.get("data") or r.get("error")))
                 for i in ids for r in got.get(i, [])])
        atts = sorted(r.get("timing", {}).get("attempts", 0) for r in oks)
        t.check(atts == [2] * 6, "%s: each on its second attempt" % kind, atts)
    finally:
        s.close()


def slots_timeout_cancel(fleet, t, kind):
    """Deadlines and system.cancel hold for every slot of a worker: requests
    running and waiting on one worker time out (or are cancelled) each with
    exactly one reply, the worker gets a CANCEL for each, and the slots free."""
    w = fleet.start_worker("test", ["--concurrency", "1", "--capacity", "4"],
                           wid="slotto-" + kind)
    fleet.wait_registered([w.wid])
    s = fleet.client(zmq.DEALER)
    ids = ["to-%d" % i for i in range(3)]
    try:
        send(s, {"message_type": "test.sleep", "request_id": "to-cancel",
                 "data": {"ms": 5000, "steps": 50}})
        for rid in ids:
            send(s, {"message_type": "test.sleep", "request_id": rid, "timeout_ms": 500,
                     "data": {"ms": 5000, "steps": 50}})
        fl.wait_for(lambda: fl.in_flight(fleet, w.wid) == 4, 5, "the worker to hold 4")
        c = fleet.request({"message_type": "system.cancel", "data": {"request_id": "to-cancel"}})
        t.check(c.get("success") is True and c["data"].get("cancelled") is True,
                "%s: system.cancel of a request in a slot" % kind, c)
        got = fl.collect(s, ids + ["to-cancel"], 10)
        codes = {i: [r.get("error", {}).get("code") for r in got.get(i, [])]
                 for i in ids + ["to-cancel"]}
        want = {i: ["timeout"] for i in ids}
        want["to-cancel"] = ["cancelled"]
        t.check(codes == want, "%s: 3 timeouts and 1 cancelled, one reply each" % kind, codes)

        def freed():
            st = fleet.request({"message_type": "test.status"}, timeout=3)
            return st if fl.in_flight(fleet, w.wid) <= 1 and \
                st["data"].get("cancels_received", 0) >= 4 else None
        try:
            st = fl.wait_for(freed, 8, "the worker to count 4 CANCELs", 0.1)
            t.check(True, "%s: the worker got 4 CANCELs (%d) and the slots freed" %
                    (kind, st["data"]["cancels_received"]))
        except TimeoutError as e:
            t.check(False, "%s: the worker got 4 CANCELs and the slots freed" % kind, e)
        r = fleet.request({"message_type": "test.echo", "data": {"after": "slots"}})
        t.check(r.get("success") is True, "%s: the worker serves again" % kind, r)
    finally:
        s.close()


def timeout_cancel(fleet, t, kind):
    w = fleet.start_worker("test", ["--concurrency", "2"], wid="to-" + kind)
    fleet.wait_registered([w.wid])
    t0 = fl.now()
    r = fleet.request({"message_type": "test.sleep", "timeout_ms": 400,
                       "data": {"ms": 10000, "steps": 100}}, timeout=5)
    dt = fl.now() - t0
    t.check(r.get("success") is False and r["error"]["code"] == "timeout" and dt < 3.0,
            "%s: timeout_ms 400 on a 10 s test.sleep -> timeout after %.2fs" % (kind, dt), r)

    def cancelled():
        st = fleet.request({"message_type": "test.status"})["data"]
        return st if st.get("cancels_received", 0) >= 1 and st.get("in_flight", 9) <= 1 else None
    try:
        st = fl.wait_for(cancelled, 5, "the worker to count the CANCEL", 0.1)
        t.check(True, "%s: worker received CANCEL (status cancels_received=%d, cancelled=%d)" %
                (kind, st["cancels_received"], st.get("requests_cancelled", 0)))
    except TimeoutError as e:
        t.check(False, "%s: worker received CANCEL" % kind, e)
    t.check("CANCEL received" in w.log_text(), "%s: worker logged the CANCEL" % kind)


def broker_restart(fleet, t, kind):
    ws = [fleet.start_worker("test", wid="rr%d-%s" % (i, kind)) for i in range(2)]
    fleet.start_worker("device", wid="rrdev-" + kind)
    ids = [w.wid for w in ws] + ["rrdev-" + kind]
    fleet.wait_registered(ids)
    old = fleet.broker
    old.signal(signal.SIGKILL)
    old.wait(5)
    t0 = fl.now()
    fleet.start_broker()
    fleet.wait_registered(ids, timeout=20)
    t.check(True, "%s: after a broker restart all %d workers re-registered in %.1fs" %
            (kind, len(ids), fl.now() - t0))
    r = fleet.request({"message_type": "test.echo", "data": {"after": "restart"}})
    t.check(r.get("success") is True and r["data"] == {"after": "restart"},
            "%s: requests flow through the new broker" % kind, r)


def sigterm_drain(fleet, t, kind):
    w = fleet.start_worker("test", wid="term-" + kind)
    fleet.wait_registered([w.wid])
    s = fleet.client(zmq.DEALER)
    try:
        send(s, {"message_type": "test.sleep", "request_id": "finish-me", "stream": True,
                 "data": {"ms": 1000, "steps": 10}})
        recv_until(s, is_progress("finish-me"), 5, "progress")
        w.signal(signal.SIGTERM)
        r = recv_until(s, is_reply("finish-me"), 10, "the reply")
        t.check(r.get("success") is True and r["data"].get("worker_id") == w.wid,
                "%s: SIGTERM mid-request: the worker finished it" % kind, r)
        rc = w.wait(5)
        t.check(rc == 0, "%s: and exited 0" % kind, rc)

        def gone():
            return w.wid not in fleet.worker_ids()
        try:
            fl.wait_for(gone, 5, "the broker to drop the worker")
            t.check(True, "%s: the broker dropped it after DISCONNECT" % kind)
        except TimeoutError as e:
            t.check(False, "%s: the broker dropped it after DISCONNECT" % kind, e)
    finally:
        s.close()


def test_sigkill_retry(t):
    fl.with_fleet("ipc", "fail", sigkill_retry, t, "ipc")


def test_sigkill_slots_ipc(t):
    fl.with_fleet("ipc", "fail", sigkill_slots, t, "ipc")


def test_sigkill_slots_tcp(t):
    fl.with_fleet("tcp", "fail", sigkill_slots, t, "tcp")


def test_slots_timeout_cancel(t):
    fl.with_fleet("ipc", "fail", slots_timeout_cancel, t, "ipc")


def test_timeout_cancel(t):
    fl.with_fleet("tcp", "fail", timeout_cancel, t, "tcp")


def test_broker_restart_tcp(t):
    fl.with_fleet("tcp", "fail", broker_restart, t, "tcp")


def test_broker_restart_ipc(t):
    fl.with_fleet("ipc", "fail", broker_restart, t, "ipc")


def test_sigterm_drain(t):
    fl.with_fleet("ipc", "fail", sigterm_drain, t, "ipc")


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("fleet_failures")
    for fn in (test_sigkill_retry, test_sigkill_slots_ipc, test_sigkill_slots_tcp,
               test_slots_timeout_cancel, test_timeout_cancel, test_sigterm_drain,
               test_broker_restart_tcp, test_broker_restart_ipc):
        t.run(fn)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
