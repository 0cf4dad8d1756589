"""test_worker_options - domain options in the worker runtime (sdx_domain_t
.options): a domain's flags and --config keys, flag > config > environment >
default, --help listing them, unknown flags and bad values exiting 2 with one
clear line each.

Uses the `test` domain (--label, --fail-init) for the precedence rules and the
inference domain (--models-root, --outputs-root, --config-dir, --max-models,
--threads) for its checks; both declare their options in every build, with or
without the engine, so this test always runs.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402

INFERENCE_OPTS = ("--models-root", "--outputs-root", "--config-dir", "--max-models", "--threads")
INFERENCE_KEYS = ("models_root", "outputs_root", "config_dir", "max_models", "threads")
DEAD_BROKER = "tcp://127.0.0.1:1"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SDXL_") or k in ("SDXL_BUILD_ROOT", "SDXL_SOURCE_ROOT")}
    env.update(extra)
    return env


def worker(args, env=None, cwd=None, timeout=20):
    """Run sdxl-worker to its exit; (rc, stdout, stderr)."""
    r = subprocess.run([fl.WORKER_BIN] + list(args), capture_output=True, timeout=timeout,
                       env=env or clean_env(), cwd=cwd)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_help(t):
    rc, out, err = worker(["--domain", "inference", "--help"])
    t.check(rc == 0 and all(o in out for o in INFERENCE_OPTS) and
            all(k in out for k in INFERENCE_KEYS) and "SDXL_MODELS_ROOT" in out and
            "--label" not in out,
            "--domain inference --help lists the inference options, keys and env", out)
    rc, out, err = worker(["--help"])
    t.check(rc == 0 and "--models-root" in out and "--label" in out and "--broker" in out,
            "--help without a domain lists every domain's options", out)


def test_bad_flags(t, tmp):
    rc, out, err = worker(["--domain", "test", "--broker", DEAD_BROKER, "--bogus", "1"])
    t.check(rc == 2 and "unknown option '--bogus'" in err, "an unknown flag exits 2 naming it",
            (rc, err))
    rc, out, err = worker(["--domain", "device", "--broker", DEAD_BROKER, "--label", "x"])
    t.check(rc == 2 and "--label is not an option of the device domain" in err,
            "another domain's option exits 2 naming the domain", (rc, err))
    rc, out, err = worker(["--domain", "test", "--broker", DEAD_BROKER, "--label"])
    t.check(rc == 2 and "'--label' needs a value" in err, "a flag without its value exits 2",
            (rc, err))
    rc, out, err = worker(["--domain", "test", "--broker", DEAD_BROKER, "--fail-init"])
    t.check(rc == 2 and "sdxl-worker: --fail-init: refusing to start, as asked" in err,
            "a domain hook refusing its option exits 2 (switch on the command line)", (rc, err))


def test_inference_values(t, tmp):
    models = os.path.join(tmp, "models")
    os.makedirs(models, exist_ok=True)
    base = ["--domain", "inference", "--broker", DEAD_BROKER, "--models-root", models]
    rc, out, err = worker(base + ["--max-models", "0"])
    lines = [ln for ln in err.splitlines() if ln.startswith("sdxl-worker:")]
    t.check(rc == 2 and lines == ["sdxl-worker: --max-models 0: must be an integer in 1..64"],
            "--max-models 0 exits 2 with one clear line", (rc, err))
    rc, out, err = worker(base + ["--threads", "-1"])
    t.check(rc == 2 and "--threads -1: must be an integer in 0..1024" in err,
            "--threads -1 exits 2", (rc, err))
    rc, out, err = worker(base + ["--max-models", "two"])
    t.check(rc == 2 and "--max-models two: must be an integer" in err,
            "--max-models two exits 2", (rc, err))
    rc, out, err = worker(["--domain", "inference", "--broker", DEAD_BROKER,
                           "--models-root", os.path.join(tmp, "nope")])
    t.check(rc == 2 and "--models-root %s: not a folder" % os.path.join(tmp, "nope") in err,
            "a missing models root exits 2", (rc, err))
    afile = write(os.path.join(tmp, "a-file"), "x")
    rc, out, err = worker(base + ["--outputs-root", afile])
    t.check(rc == 2 and "--outputs-root %s: not a folder" % afile in err,
            "an outputs root that is a file exits 2", (rc, err))
    rc, out, err = worker(base + ["--config-dir", os.path.join(tmp, "nope")])
    t.check(rc == 2 and "--config-dir" in err and "not a folder" in err,
            "a missing config dir exits 2", (rc, err))
    # the default models root (./models) does not exist in an empty folder:
    # the error says how to set it; every bad option is listed at once
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty, exist_ok=True)
    rc, out, err = worker(["--domain", "inference", "--broker", DEAD_BROKER,
                           "--max-models", "0"], cwd=empty)
    t.check(rc == 2 and "--models-root ./models (the default; set --models-root, config key "
            "models_root or SDXL_MODELS_ROOT): not a folder" in err and
            "--max-models 0" in err, "a missing default root says how to set it; all errors "
            "at once", (rc, err))
    rc, out, err = worker(base, env=clean_env(SDXL_MAX_MODELS="0"))
    t.check(rc == 2 and "SDXL_MAX_MODELS=0: must be an integer in 1..64" in err,
            "a bad environment fallback exits 2 naming the variable", (rc, err))
    cfg = write(os.path.join(tmp, "inf.yaml"),
                "domain: inference\nmax_models: 0\nmax_modles: 3\n")
    rc, out, err = worker(["--config", cfg, "--broker", DEAD_BROKER, "--models-root", models])
    t.check(rc == 2 and "max_models: 0 in %s: must be an integer in 1..64" % cfg in err,
            "a bad config key exits 2 naming the key and the file", (rc, err))
    t.check("unknown key 'max_modles'" in err, "a misspelt config key is warned about", err)
    rc, out, err = worker(["--config", cfg, "--broker", DEAD_BROKER, "--models-root", models,
                           "--fail-init"])
    t.check(rc == 2 and "--fail-init is not an option of the inference domain" in err,
            "the test domain's switch is refused for inference", (rc, err))


def status(fleet, domain, wid):
    fleet.wait_registered([wid], 15)
    r = fleet.request({"message_type": domain + ".status"}, timeout=5)
    d = r.get("data") or {}
    if d.get("worker_id") != wid:
        raise AssertionError("status from %s, wanted %s" % (d.get("worker_id"), wid))
    return d.get("options") or {}


def run_worker(fleet, domain, wid, args, env):
    argv = [fl.WORKER_BIN, "--domain", domain, "--broker", fleet.backend, "--id", wid] + args
    p = fl.Proc("worker " + wid, argv, os.path.join(fleet.dir, wid + ".log"), env=env)
    fleet.procs.append(p)
    return p


def test_precedence(t, fleet):
    tmp = fleet.dir
    flat = write(os.path.join(tmp, "flat.yaml"), "label: from-config\n")
    fleet_file = write(os.path.join(tmp, "fleet.yaml"),
                       "broker: {backend: '%s'}\n"
                       "worker: {label: from-defaults}\n"
                       "workers:\n"
                       "  - domain: device\n"
                       "    label: not-ours\n"
                       "  - domain: test\n"
                       "    label: from-section\n"
                       "    fail_init: 'no'\n" % fleet.backend)
    env = clean_env(SDXL_TEST_LABEL="from-env")
    cases = [
        ("flag", ["--config", flat, "--label", "from-flag"], env, "from-flag", "flag"),
        ("config", ["--config", flat], env, "from-config", "config"),
        ("env", [], env, "from-env", "env"),
        ("fleet section", ["--config", fleet_file], env, "from-section", "config"),
    ]
    for i, (what, args, e, value, src) in enumerate(cases):
        wid = "opt-test-%d" % i
        p = run_worker(fleet, "test", wid, args, e)
        opts = status(fleet, "test", wid)
        t.check(opts.get("label") == {"value": value, "from": src},
                "%s: test.status options.label is %s from %s" % (what, value, src), opts)
        if i == 0:
            t.check(opts.get("fail_init") == {"value": "false", "from": "default"},
                    "a switch's default is reported", opts)
        if i == 3:
            t.check(opts.get("fail_init") == {"value": "false", "from": "config"},
                    "a switch's config text 'no' is false", opts)
        t.check(p.stop() == 0, "%s: the worker stops cleanly" % what)
    p = run_worker(fleet, "test", "opt-test-none", [], clean_env())
    opts = status(fleet, "test", "opt-test-none")
    t.check("label" not in opts, "an option with no value and no default is absent", opts)
    p.stop()


def test_capacity(t, fleet):
    """Credit: each domain's default capacity reaches the broker in READY;
    --capacity and the config key override it (flag over config), never below
    --concurrency; --prefetch keeps its older meaning; bad values exit 2."""
    tmp = fleet.dir
    cfg = write(os.path.join(tmp, "cap.yaml"), "capacity: 5\n")
    cases = [
        ("device default", "device", [], 32),
        ("scheduler default", "scheduler", [], 32),
        ("model default", "model", [], 8),
        ("inference default", "inference", ["--models-root", tmp], 1),
        ("flag", "device", ["--capacity", "3"], 3),
        ("config key", "scheduler", ["--config", cfg], 5),
        ("flag over config", "scheduler", ["--config", cfg, "--capacity", "7"], 7),
        ("never below --concurrency", "inference", ["--models-root", tmp, "--concurrency", "2"],
         2),
        ("--prefetch: concurrency + prefetch", "test", ["--concurrency", "2", "--prefetch", "1"],
         3),
    ]
    for i, (what, dom, args, want) in enumerate(cases):
        wid = "cap-%d" % i
        p = run_worker(fleet, dom, wid, args, clean_env())
        fleet.wait_registered([wid], 15)
        w = [x for x in fleet.workers() if x.get("worker_id") == wid]
        got = w[0].get("capacity") if w else None
        t.check(got == want, "%s: broker sees capacity %s" % (what, want), w)
        p.stop()
        fl.wait_for(lambda: wid not in fleet.worker_ids(), 5, "the broker to drop " + wid)
    for args, text in ((["--capacity", "0"], "--capacity wants 1..1024"),
                       (["--capacity", "x"], "--capacity wants 1..1024"),
                       (["--config", write(os.path.join(tmp, "bad.yaml"), "capacity: 2000\n")],
                        "capacity wants an integer 1..1024")):
        rc, out, err = worker(["--domain", "device", "--broker", DEAD_BROKER] + args)
        t.check(rc == 2 and text in err, "%s exits 2: %s" % (" ".join(args[:2]), text),
                (rc, err))


def test_inference_status(t, fleet):
    """The inference worker (engine or not) starts with its options as flags
    and config keys; inference.status reports each and where it came from."""
    models = os.path.join(fleet.dir, "inf-models")
    outputs = os.path.join(fleet.dir, "inf-outputs", "deep")
    os.makedirs(models)
    cfg = write(os.path.join(fleet.dir, "inf.yaml"), "max_models: 2\nthreads: 1\n")
    env = clean_env(SDXL_MAX_MODELS="5", SDXL_CONFIG_DIR=models)
    p = run_worker(fleet, "inference", "opt-inf", ["--config", cfg, "--models-root", models,
                                                   "--outputs-root", outputs], env)
    opts = status(fleet, "inference", "opt-inf")
    t.check(opts.get("models_root") == {"value": models, "from": "flag"} and
            opts.get("outputs_root") == {"value": outputs, "from": "flag"} and
            opts.get("max_models") == {"value": "2", "from": "config"} and
            opts.get("threads") == {"value": "1", "from": "config"} and
            opts.get("config_dir") == {"value": models, "from": "env"},
            "inference.status options: flag > config > env", opts)
    t.check(os.path.isdir(outputs), "a missing outputs root is created at start", outputs)
    t.check(p.stop() == 0, "the inference worker stops cleanly")


def test_deploy_fleet_yaml(t, fleet):
    """deploy/fleet.yaml as shipped: its inference entry's keys are options
    the worker knows (no warning), flags override its roots."""
    path = os.path.join(fl.SOURCE_ROOT, "deploy", "fleet.yaml")
    models = os.path.join(fleet.dir, "deploy-models")
    os.makedirs(models)
    p = run_worker(fleet, "inference", "opt-deploy",
                   ["--config", path, "--broker", fleet.backend, "--models-root", models,
                    "--outputs-root", os.path.join(fleet.dir, "deploy-outputs")], clean_env())
    opts = status(fleet, "inference", "opt-deploy")
    t.check(opts.get("models_root", {}).get("from") == "flag" and
            opts.get("max_models") == {"value": "1", "from": "config"} and
            opts.get("threads") == {"value": "0", "from": "config"} and
            opts.get("config_dir") == {"value": "", "from": "config"},
            "deploy/fleet.yaml: the inference entry's keys reach the domain", opts)
    p.stop()
    t.check("warning" not in p.log_text(), "deploy/fleet.yaml: no unknown key",
            p.tail(5))


def main():
    fl.require_binaries(fl.BROKER_BIN, fl.WORKER_BIN)
    t = fl.Tally("worker_options")
    fleet = fl.Fleet("ipc", "wopt")
    try:
        t.run(test_help)
        t.run(test_bad_flags, fleet.dir)
        t.run(test_inference_values, fleet.dir)
        fleet.start_broker()
        t.run(test_precedence, fleet)
        t.run(test_inference_status, fleet)
        t.run(test_capacity, fleet)
        t.run(test_deploy_fleet_yaml, fleet)
        if t.failed:
            fleet.dump_logs(20)
    finally:
        fleet.close()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
