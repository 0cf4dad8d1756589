#!/usr/bin/python3
"""CurveZMQ between clients, broker and workers, with real processes:

- key pairs from `sdxl-cli keygen`; the broker with --curve-cert and one
  allow-list folder for clients, one for workers;
- an allowed worker registers and serves; a worker with an unknown key, and
  a worker presenting a key that is allowed only as a client, never register
  (so they are never sent a request), and the broker logs the refusal;
- an allowed client (pyzmq, and sdxl-cli --curve-cert) gets replies; a client
  with an unknown key and a plaintext client get nothing (the handshake is
  refused) and are logged;
- a client key removed from its folder, then SIGHUP: a new connection with
  it is refused;
- the bytes on both tcp connections (relayed through a recording proxy) never
  hold the prompt text that travels in the request and the reply.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

import zmq  # noqa: E402
import zmq.auth  # noqa: E402


class Relay:
    """A TCP relay that records every byte in both directions."""

    def __init__(self, target_port):
        self.target = target_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self.lock:
                    self.seen += d
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def close(self):
        self.stop = True
        self.srv.close()


def keygen(cli, path, name):
    subprocess.run([cli, "-q", "keygen", path, name], check=True)


def curve_client(fleet, endpoint, cert, broker_cert, kind=zmq.REQ):
    s = fleet.ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if cert:
        pub, sec = zmq.auth.load_certificate(cert + "_secret")
        srv, _ = zmq.auth.load_certificate(broker_cert)
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, srv
    s.connect(endpoint)
    return s


def ask(sock, msg, timeout=3.0):
    sock.send(fl.encode(msg))
    if not sock.poll(int(timeout * 1000)):
        return None
    return fl.decode(sock.recv())


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, fl.CLI_BIN)
    t = fl.Tally("curve")
    fleet = fl.Fleet("tcp", "curve")
    relays = []
    try:
        keys = os.path.join(fleet.dir, "keys")
        cdir, wdir = os.path.join(fleet.dir, "clients"), os.path.join(fleet.dir, "workers")
        for d in (keys, cdir, wdir):
            os.makedirs(d)
        for n in ("broker", "client1", "client2", "worker1", "worker2"):
            keygen(fl.CLI_BIN, os.path.join(keys, n), n)
        t.check(oct(os.stat(os.path.join(keys, "broker_secret")).st_mode & 0o777) == "0o600",
                "sdxl-cli keygen writes FILE and FILE_secret (mode 600)")
        shutil.copy(os.path.join(keys, "client1"), cdir)
        shutil.copy(os.path.join(keys, "worker1"), wdir)
        bkey = os.path.join(keys, "broker")
        fleet.start_broker_args = None
        # the broker, with its backend reached through a recording relay
        argv = [fl.BROKER_BIN, "--frontend", fleet.frontend, "--backend", fleet.backend,
                "--events", fleet.events, "--curve-cert", bkey, "--curve-clients", cdir,
                "--curve-workers", wdir, "--workflows-dir", "none"]
        fleet.broker = fl.Proc("broker", argv, os.path.join(fleet.dir, "broker.log"))
        fleet.procs.append(fleet.broker)
        c1 = os.path.join(keys, "client1")
        admin = curve_client(fleet, fleet.frontend, c1, bkey)
        fl.wait_for(lambda: ask(admin, {"message_type": "system.ping"}, 0.5), 10,
                    "the broker to answer an allowed CURVE client")
        back_port = int(fleet.backend.rsplit(":", 1)[1])
        front_port = int(fleet.frontend.rsplit(":", 1)[1])
        brelay, frelay = Relay(back_port), Relay(front_port)
        relays += [brelay, frelay]
        via = "tcp://127.0.0.1:%d" % brelay.port

        def worker(wid, cert):
            p = fl.Proc("worker " + wid, [fl.WORKER_BIN, "--domain", "test", "--broker", via,
                                          "--id", wid, "--curve-cert", cert,
                                          "--curve-broker-key", bkey],
                        os.path.join(fleet.dir, wid + ".log"))
            fleet.procs.append(p)
            return p

        def ids():
            r = ask(admin, {"message_type": "system.workers"})
            return {w["worker_id"] for w in (r or {}).get("data", {}).get("workers", [])}

        worker("w-good", os.path.join(keys, "worker1"))
        worker("w-unknown", os.path.join(keys, "worker2"))
        worker("w-clientkey", c1)  # allowed as a client, not as a worker
        fl.wait_for(lambda: "w-good" in ids(), 10, "the allowed worker to register")
        time.sleep(1.5)  # the others retry their handshakes meanwhile
        got = ids()
        t.check(got == {"w-good"}, "only the allowed worker registers: %s" % sorted(got))
        log = fleet.broker.log_text()
        t.check(log.count("refused a worker") >= 2, "the refused workers are logged",
                fleet.broker.tail(5))

        # clients
        secret = "a-very-secret-prompt-%s" % uuid.uuid4().hex
        good = curve_client(fleet, "tcp://127.0.0.1:%d" % frelay.port, c1, bkey)
        r = ask(good, {"message_type": "test.echo", "data": {"prompt": secret}})
        t.check(r and r.get("success") and r["data"]["prompt"] == secret,
                "an allowed client's request is served by the allowed worker")
        with frelay.lock, brelay.lock:
            leaked = secret.encode() in frelay.seen or secret.encode() in brelay.seen
            nbytes = len(frelay.seen) + len(brelay.seen)
        t.check(not leaked and nbytes > 0,
                "the prompt crosses both tcp connections encrypted (%d bytes seen, no "
                "plaintext)" % nbytes)
        out = subprocess.run([fl.CLI_BIN, "--endpoint", fleet.frontend, "--curve-cert", c1,
                              "--curve-broker-key", bkey, "--timeout", "5000", "ping"],
                             capture_output=True, text=True)
        t.check(out.returncode == 0 and "pong" in out.stdout,
                "sdxl-cli --curve-cert/--curve-broker-key talks to the broker", out.stderr)
        bad = curve_client(fleet, fleet.frontend, os.path.join(keys, "client2"), bkey)
        t.check(ask(bad, {"message_type": "system.ping"}, 1.5) is None,
                "a client with an unknown key gets nothing")
        plain = curve_client(fleet, fleet.frontend, None, None)
        t.check(ask(plain, {"message_type": "system.ping"}, 1.5) is None,
                "a plaintext client gets nothing")
        log = fleet.broker.log_text()
        t.check("refused a client" in log, "refused clients are logged")
        st = ask(admin, {"message_type": "system.status"})["data"]["curve"]
        t.check(st["enabled"] and st["handshakes_refused"] >= 3 and st["handshakes_allowed"] >= 3,
                "system.status counts the handshakes: %s" % st)

        # a key removed, then SIGHUP
        os.unlink(os.path.join(cdir, "client1"))
        fleet.broker.signal(signal.SIGHUP)
        time.sleep(0.5)
        again = curve_client(fleet, fleet.frontend, c1, bkey)
        t.check(ask(again, {"message_type": "system.ping"}, 1.5) is None,
                "after its key is removed and SIGHUP, a new connection with it is refused")
        r = ask(good, {"message_type": "system.ping"})
        t.check(r and r.get("success"),
                "a connection made before the removal stays up (CURVE checks at handshake)")
        for s in (admin, good, bad, plain, again):
            s.close()
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        for r in relays:
            r.close()
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
