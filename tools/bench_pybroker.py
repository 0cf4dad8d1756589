#!/usr/bin/python3
"""bench_pybroker.py - the seeds' Python design, for tools/bench-broker: an
asyncio pyzmq broker (frontend ROUTER for clients, backend ROUTER for
workers) with N Python worker processes (asyncio DEALER), measured by
bench-broker-bin in the same run and under the same load as sdxl-broker.

    bench_pybroker.py --frontend EP --backend EP [--workers 2] [--type device.ping]

Prints "READY <frontend endpoint>" on stdout once every worker registered,
then serves until SIGTERM/SIGINT (its workers stop with it).

What it does per request, as the seed did: the broker decodes the msgpack
request to route it by message_type, hands it to the next worker in round
robin (no limit on what a worker holds: its best case), the worker decodes
it, answers {request_id, message_type, success, data, timing} in msgpack,
and the broker forwards that reply to the client as it is. Not a product;
a reference point. Needs python3-zmq and python3-msgpack.
"""
import argparse
import asyncio
import os
import signal
import socket
import sys
import time

import msgpack
import zmq
import zmq.asyncio


async def worker_main(backend, wid, mtype):
    ctx = zmq.asyncio.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IDENTITY, wid.encode())
    s.connect(backend)
    await s.send_multipart([b"READY", mtype.split(".")[0].encode()])
    host = socket.gethostname()
    while True:
        frames = await s.recv_multipart()
        route, body = frames[:-1], frames[-1]  # the client's envelope frames, then the body
        t0 = time.perf_counter()
        req = msgpack.unpackb(body, raw=False)
        data = req.get("data") or {}
        reply = {"request_id": req.get("request_id"), "message_type": req.get("message_type"),
                 "success": True,
                 "data": {"pong": True, "worker_id": wid, "host": host,
                          "time_ms": int(time.time() * 1000), "echo": data.get("echo")},
                 "timing": {"worker_ms": (time.perf_counter() - t0) * 1000.0}}
        await s.send_multipart(route + [msgpack.packb(reply, use_bin_type=True)])


def run_worker(backend, wid, mtype):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    try:
        asyncio.run(worker_main(backend, wid, mtype))
    except KeyboardInterrupt:
        pass
    os._exit(0)


async def broker_main(args):
    ctx = zmq.asyncio.Context()
    front = ctx.socket(zmq.ROUTER)
    back = ctx.socket(zmq.ROUTER)
    for s in (front, back):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100000)
        s.setsockopt(zmq.RCVHWM, 100000)
    front.bind(args.frontend)
    back.bind(args.backend)
    fe = front.getsockopt(zmq.LAST_ENDPOINT).decode()
    be = back.getsockopt(zmq.LAST_ENDPOINT).decode()

    pids = []
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:
            front.close(0)
            back.close(0)
            run_worker(be, "py-%d-%d" % (os.getpid(), i), args.type)
        pids.append(pid)

    workers = []  # identities, round robin
    rr = [0]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def backend_loop():
        while True:
            frames = await back.recv_multipart()
            wid = frames[0]
            if len(frames) >= 2 and frames[1] == b"READY":
                workers.append(wid)
                if len(workers) == args.workers:
                    print("READY " + fe, flush=True)
                continue
            # [worker][client envelope...][reply] -> [client envelope...][reply]
            await front.send_multipart(frames[1:])

    async def frontend_loop():
        while True:
            frames = await front.recv_multipart()
            route, body = frames[:-1], frames[-1]  # routing id (+ REQ delimiter/id frames)
            try:
                req = msgpack.unpackb(body, raw=False)
                mtype = req.get("message_type", "")
            except Exception as e:  # noqa: BLE001 - answer, never crash
                err = {"request_id": None, "success": False,
                       "error": {"code": "invalid_request", "message": str(e)}}
                await front.send_multipart(route + [msgpack.packb(err)])
                continue
            if not workers or "." not in mtype:
                err = {"request_id": req.get("request_id"), "success": False,
                       "error": {"code": "no_worker", "message": "no worker"}}
                await front.send_multipart(route + [msgpack.packb(err)])
                continue
            w = workers[rr[0] % len(workers)]
            rr[0] += 1
            await back.send_multipart([w] + route + [body])

    tasks = [asyncio.create_task(backend_loop()), asyncio.create_task(frontend_loop())]
    await stop.wait()
    for t in tasks:
        t.cancel()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    front.close(0)
    back.close(0)
    ctx.term()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--type", default="device.ping")
    args = ap.parse_args()
    if args.workers < 1 or args.workers > 64:
        ap.error("--workers wants 1..64")
    asyncio.run(broker_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
