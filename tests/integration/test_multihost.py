#!/usr/bin/python3
"""Workers on another host, with real processes: two network namespaces
joined by a veth pair stand for two machines on a LAN.

- the broker and the clients run on "host A" (this namespace); a test worker
  and an inference worker (the project's own tiny random-weight model, made by
  `sdxl-gen make-tiny`) run on "host B" (a new namespace, `ip netns exec`) and
  reach the broker's backend over tcp on the veth address only;
- they register, test.echo and a real inference.generate come back, and
  system.workers shows them;
- the link goes down for longer than the heartbeat timeout: the broker drops
  both workers (lost_workers counts them); the link comes back: the workers
  reconnect by themselves and serve again;
- every packet on the veth is captured (an AF_PACKET socket, no tcpdump
  needed). Without CURVE the prompt is seen in the capture: that proves the
  capture sees the traffic. With CURVE (keys from `sdxl-cli keygen`, the
  broker's allow-lists) the same requests cross it and no packet holds the
  prompt or the echoed text.

Needs root and `ip` (iproute2); skips (77) otherwise, or when the kernel
refuses a namespace (an unprivileged container)."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

import zmq  # noqa: E402
import zmq.auth  # noqa: E402

GEN_BIN = os.path.join(fl.BUILD_ROOT, "tools", "sdxl-gen")
ETH_P_ALL = 0x0003


def sh(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


class Hosts:
    """Host B: a network namespace with one end of a veth pair; host A keeps
    the other end. Addresses 10.213.N.1 (A) and 10.213.N.2 (B)."""

    def __init__(self):
        tag = "%04x" % (os.getpid() & 0xffff)
        self.ns = "sdxl-hostb-" + tag
        self.a_if, self.b_if = "sxa" + tag, "sxb" + tag
        n = 1 + os.getpid() % 250
        self.a_ip, self.b_ip = "10.213.%d.1" % n, "10.213.%d.2" % n
        self.made = []

    def up(self):
        sh("ip", "netns", "add", self.ns)
        self.made.append("ns")
        sh("ip", "link", "add", self.a_if, "type", "veth", "peer", "name", self.b_if)
        self.made.append("link")
        sh("ip", "link", "set", self.b_if, "netns", self.ns)
        sh("ip", "addr", "add", self.a_ip + "/24", "dev", self.a_if)
        sh("ip", "link", "set", self.a_if, "up")
        for cmd in (["ip", "addr", "add", self.b_ip + "/24", "dev", self.b_if],
                    ["ip", "link", "set", self.b_if, "up"], ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", self.ns, *cmd)

    def link(self, up):
        sh("ip", "link", "set", self.a_if, "up" if up else "down")

    def on_b(self, argv):
        return ["ip", "netns", "exec", self.ns] + list(argv)

    def down(self):
        if "link" in self.made:
            sh("ip", "link", "del", self.a_if, check=False)  # takes its peer along
        if "ns" in self.made:
            sh("ip", "netns", "del", self.ns, check=False)


class Capture:
    """Every frame seen on one interface, both directions."""

    def __init__(self, ifname):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.bind((ifname, 0))
        self.s.settimeout(0.2)
        self.frames = []
        self.lock = threading.Lock()
        self.stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop:
            try:
                f = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.frames.append(f)

    def tcp_payload_bytes(self):
        """Sum of the TCP payloads (IPv4) captured so far."""
        n = 0
        with self.lock:
            for f in self.frames:
                if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
                    continue
                ihl = (f[14] & 0x0f) * 4
                total = struct.unpack("!H", f[16:18])[0]
                doff = (f[14 + ihl + 12] >> 4) * 4
                n += max(0, total - ihl - doff)
        return n

    def holds(self, needle):
        with self.lock:
            return any(needle in f for f in self.frames)

    def close(self):
        self.stop = True
        self.th.join(1)
        self.s.close()


def keygen(path, name):
    subprocess.run([fl.CLI_BIN, "-q", "keygen", path, name], check=True)


def client(fleet, cert=None, bkey=None):
    s = fleet.ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    if cert:
        pub, sec = zmq.auth.load_certificate(cert + "_secret")
        srv, _ = zmq.auth.load_certificate(bkey)
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, srv
    s.connect(fleet.frontend)
    return s


def ask(sock, msg, timeout=5.0):
    sock.send(fl.encode(msg, "msgpack"))
    if not sock.poll(int(timeout * 1000)):
        raise TimeoutError("no reply to %s within %.0fs" % (msg["message_type"], timeout))
    return fl.decode(sock.recv())


def registered(sock):
    r = ask(sock, {"message_type": "system.workers"}, 2)
    return {w["worker_id"] for w in (r.get("data") or {}).get("workers", [])}


def run(t, hosts, models, curve):
    mode = "CURVE" if curve else "plaintext"
    fleet = fl.Fleet("tcp", "multihost")
    cap = None
    socks = []
    try:
        fleet.backend = "tcp://%s:%d" % (hosts.a_ip, fl.free_port())
        argv = [fl.BROKER_BIN, "--frontend", fleet.frontend, "--backend", fleet.backend,
                "--events", fleet.events, "--workflows-dir", "none", "--models-root", models,
                "--heartbeat-ms", "250", "--liveness", "4"]
        wcurve = {}
        cert = bkey = None
        if curve:
            keys = os.path.join(fleet.dir, "keys")
            cdir, wdir = os.path.join(fleet.dir, "clients"), os.path.join(fleet.dir, "workers")
            for d in (keys, cdir, wdir):
                os.makedirs(d)
            for n in ("broker", "client", "wtest", "winf"):
                keygen(os.path.join(keys, n), n)
            shutil.copy(os.path.join(keys, "client"), cdir)
            for n in ("wtest", "winf"):
                shutil.copy(os.path.join(keys, n), wdir)
            bkey, cert = os.path.join(keys, "broker"), os.path.join(keys, "client")
            argv += ["--curve-cert", bkey, "--curve-clients", cdir, "--curve-workers", wdir]
            wcurve = {n: ["--curve-cert", os.path.join(keys, n), "--curve-broker-key", bkey]
                      for n in ("wtest", "winf")}
        fleet.broker = fl.Proc("broker", argv, os.path.join(fleet.dir, "broker.log"))
        fleet.procs.append(fleet.broker)
        c = client(fleet, cert, bkey)
        socks.append(c)
        fl.wait_for(lambda: ask(c, {"message_type": "system.ping"}, 0.5), 10, "the broker")
        cap = Capture(hosts.a_if)

        def worker(domain, wid, extra):
            argv = [fl.WORKER_BIN, "--domain", domain, "--broker", fleet.backend, "--id", wid]
            p = fl.Proc("worker " + wid, hosts.on_b(argv + extra),
                        os.path.join(fleet.dir, wid + ".log"))
            fleet.procs.append(p)
            return p

        worker("test", "b-test", wcurve.get("wtest", []))
        worker("inference", "b-inf", ["--models-root", models, "--threads", "1"] +
               wcurve.get("winf", []))
        want = {"b-test", "b-inf"}
        fl.wait_for(lambda: want <= registered(c), 30, "the host-B workers to register")
        t.check(True, "%s: two workers on host B (%s) registered over tcp to %s" %
                (mode, hosts.b_ip, fleet.backend))

        secret = "a-lighthouse-%s" % uuid.uuid4().hex[:12]
        r = ask(c, {"message_type": "test.echo", "data": {"text": secret}})
        t.check(r.get("success") and r["data"]["text"] == secret,
                "%s: test.echo served on host B" % mode, r.get("error"))
        gen = {"message_type": "inference.generate", "timeout_ms": 120000,
               "data": {"prompt": secret + " at dusk", "model_name": "sdxl-tiny",
                        "hyperparameters": {"num_inference_steps": 2, "seed": 5},
                        "dimensions": {"width": 64, "height": 64}}}
        r = ask(c, gen, 120)
        img = ((r.get("data") or {}).get("images") or [{}])[0].get("image", b"")
        t.check(r.get("success") and img[:8] == b"\x89PNG\r\n\x1a\n",
                "%s: a real inference.generate on host B gives a PNG (%d bytes)" %
                (mode, len(img)), r.get("error"))
        time.sleep(0.3)  # the last frames reach the capture
        nbytes = cap.tcp_payload_bytes()
        leaked = cap.holds(secret.encode())
        if curve:
            t.check(nbytes > len(img) and not leaked,
                    "CURVE: %d TCP payload bytes crossed the link, none holds the prompt" %
                    nbytes)
        else:
            t.check(leaked, "plaintext: the capture sees the prompt on the link (%d TCP "
                    "payload bytes): the capture works" % nbytes)

        # the link goes down for longer than the heartbeat timeout (250 ms x 4)
        hosts.link(False)
        try:
            fl.wait_for(lambda: not (want & registered(c)), 10,
                        "the broker to drop the unreachable workers", 0.1)
            st = ask(c, {"message_type": "system.status"})["data"]
            lost = {w["worker_id"]: w["reason"] for w in st.get("lost_workers") or []}
            t.check(set(lost) >= want,
                    "%s: link down: the broker drops both host-B workers (%s)" % (mode, lost))
            time.sleep(1.0)
        finally:
            hosts.link(True)
        t0 = time.monotonic()
        fl.wait_for(lambda: want <= registered(c), 30, "the host-B workers to come back", 0.1)
        back = time.monotonic() - t0
        r = ask(c, {"message_type": "test.echo", "data": {"text": secret}})
        t.check(r.get("success") and r["data"]["text"] == secret,
                "%s: link up: both workers re-registered by themselves in %.1fs and serve" %
                (mode, back))
        for p in fleet.procs[1:]:
            t.check(p.alive(), "%s: %s is still running" % (mode, p.name))
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        if cap:
            cap.close()
        for s in socks:
            s.close()
        fleet.close()


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN, fl.CLI_BIN, GEN_BIN)
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("SKIP: needs root and iproute2 (ip netns)")
        return fl.SKIP
    hosts = Hosts()
    try:
        try:
            hosts.up()
        except subprocess.CalledProcessError as e:
            print("SKIP: cannot make a network namespace here: %s" % (e.stderr or "").strip())
            return fl.SKIP
        t = fl.Tally("multihost")
        models = os.path.join(fl.tempfile.mkdtemp(prefix="sdxl-multihost-models-"))
        try:
            subprocess.run([GEN_BIN, "make-tiny", os.path.join(models, "sdxl-tiny"), "--seed",
                            "3"], check=True, stdout=subprocess.DEVNULL, timeout=120)
            t.run(run, hosts, models, False)
            t.run(run, hosts, models, True)
        finally:
            shutil.rmtree(models, ignore_errors=True)
        return t.finish()
    finally:
        hosts.down()


if __name__ == "__main__":
    sys.exit(main())
