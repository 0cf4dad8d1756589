#!/usr/bin/python3
"""GPU paths of the worker on any host, through a stand-in NVML
(fake_nvml.c built as libnvidia-ml.so.1, put first on LD_LIBRARY_PATH):
--gpu N validation (exit 2 for a GPU the host lacks), selection (READY and
status report it, CUDA_VISIBLE_DEVICES is set to its UUID), and the device
domain's GPU list. Argument: the folder holding libnvidia-ml.so.1."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
from test_worker_sdxw import READY, REPLY, FakeBroker  # noqa: E402


def env_with(fake_dir, count=2):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = fake_dir + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
    env["FAKE_NVML_COUNT"] = str(count)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_gpu(t, fake_dir):
    env = env_with(fake_dir)
    r = subprocess.run([fl.WORKER_BIN, "--domain", "inference", "--broker", "tcp://127.0.0.1:1",
                        "--gpu", "2"], capture_output=True, timeout=20, env=env)
    t.check(r.returncode == 2 and b"no such GPU, this host has 2" in r.stderr,
            "--gpu 2 on a 2-GPU host: exit 2 naming the GPUs there", r.stderr)

    fleet = fl.Fleet("ipc", "gpu")
    ep = fleet.endpoint("backend")
    fb = FakeBroker(fleet.ctx, ep)
    try:
        # the inference domain wants an existing models root (its option)
        w = fl.Proc("inference", [fl.WORKER_BIN, "--domain", "inference", "--broker", ep,
                                  "--gpu", "1", "--id", "inf-gpu1", "--models-root", fleet.dir,
                                  "--outputs-root", os.path.join(fleet.dir, "outputs")],
                    os.path.join(fleet.dir, "inf.log"), env=env)
        fleet.procs.append(w)
        m = fb.pump(lambda m: m["cmd"] == READY, 10, "READY")
        t.check(m["body"]["gpu"] == 1 and m["body"].get("gpu_name") == "Fake GPU 1" and
                m["body"].get("device") == "cuda:0",
                "--gpu 1: READY reports gpu 1, its name, device cuda:0", m["body"])
        fb.request("s1", "inference.status")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "s1", 5, "status")
        st = m["body"]["data"]
        t.check(st.get("gpu") == 1 and st.get("cuda_visible_devices", "").endswith("000000000001")
                and (st.get("gpu_memory") or {}).get("total") == 80 << 30,
                "inference.status: gpu, CUDA_VISIBLE_DEVICES = its UUID, GPU memory", st)
        fb.request("g1", "inference.inpaint", {"prompt": "x"})
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "g1", 5, "inpaint")
        t.check(m["body"]["error"]["code"] == "not_available",
                "inference.inpaint (planned): not_available", m["body"])
        w.stop()

        d = fl.Proc("device", [fl.WORKER_BIN, "--domain", "device", "--broker", ep,
                               "--id", "dev-fake"], os.path.join(fleet.dir, "dev.log"), env=env)
        fleet.procs.append(d)
        fb.pump(lambda m: m["cmd"] == READY and m["body"]["worker_id"] == "dev-fake", 10, "READY")
        fb.request("l1", "device.list")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "l1", 5, "device.list")
        data = m["body"]["data"]
        gpus = data.get("gpus", [])
        t.check(data.get("gpu_backend") == "nvml" and data.get("driver_version") == "550.00-fake"
                and len(gpus) == 2 and gpus[1]["name"] == "Fake GPU 1" and
                gpus[0]["memory_total"] == 80 << 30 and gpus[0]["compute_capability"] == "9.0"
                and gpus[0]["temperature_c"] == 40 and gpus[0]["power_w"] == 70.0,
                "device.list through NVML: 2 GPUs with name, memory, cc, temperature, power",
                data)
        fb.request("m1", "device.memory")
        m = fb.pump(lambda m: m["cmd"] == REPLY and m["rid"] == "m1", 5, "device.memory")
        g = m["body"]["data"]["gpus"]
        t.check(len(g) == 2 and g[1]["used"] == 2 << 30 and g[1]["free"] == 78 << 30,
                "device.memory: per-GPU total/free/used", g)
    except Exception:
        fleet.dump_logs()
        raise
    finally:
        fb.sock.close()
        fleet.close()


def main():
    fl.require_binaries(fl.WORKER_BIN)
    fake_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(fl.BUILD_ROOT, "tests",
                                                                  "integration")
    if not os.path.exists(os.path.join(fake_dir, "libnvidia-ml.so.1")):
        print("SKIP: no fake libnvidia-ml.so.1 in %s" % fake_dir)
        return fl.SKIP
    t = fl.Tally("worker_gpu")
    t.run(test_gpu, fake_dir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
