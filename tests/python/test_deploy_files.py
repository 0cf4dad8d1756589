#!/usr/bin/python3
"""Structure checks of deploy/: the Kubernetes manifests, the Dockerfile and
the systemd units (no cluster, no docker: neither Debian nor PyPI gives a
Kubernetes schema validator that runs offline here, so this test checks what
a schema would and what one would miss):

- every manifest document parses and has apiVersion, kind, metadata.name;
  workloads select their own pod labels, run the image the kustomization
  renames, and every binary they run is one the build installs;
- every flag a worker or broker container passes is one that binary's --help
  lists (for the worker: the domain's --help), and every --domain is a worker
  domain of proto/catalog.json; the broker Service exposes the ports the
  workers and clients connect to;
- kustomization.yaml lists existing files only;
- the Dockerfile has a build stage and a runtime stage on Debian 12, installs
  no -dev package at run time, and runs as a non-root user;
- the systemd units start installed binaries.
Uses /usr/bin/python3 with python3-yaml."""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.environ.get("SDXL_SOURCE_ROOT",
                      os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("SDXL_BUILD_ROOT", os.path.join(ROOT, "build"))
K8S = os.path.join(ROOT, "deploy", "k8s")
INSTALLED = {"sdxl-broker", "sdxl-worker", "sdxl-cli", "sdxl-gen", "sdxl-fleet"}

passed = failed = 0


def check(cond, what, detail=None):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL %s%s" % (what, ": %s" % (detail,) if detail is not None else ""))


def helptext(argv):
    try:
        return subprocess.run(argv + ["--help"], capture_output=True, text=True,
                              timeout=20).stdout
    except OSError:
        return None


def flags_of(args):
    return [a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("--")]


def main():
    cat = json.load(open(os.path.join(ROOT, "proto", "catalog.json")))
    worker_domains = {d for d, v in cat["domains"].items() if v.get("handled_by") == "worker"}
    kust = yaml.safe_load(open(os.path.join(K8S, "kustomization.yaml")))
    res = kust.get("resources", [])
    check(res and all(os.path.exists(os.path.join(K8S, r)) for r in res),
          "kustomization.yaml lists existing files: %s" % res)
    image = [i["name"] for i in kust.get("images", [])]
    docs = []
    for r in res:
        for d in yaml.safe_load_all(open(os.path.join(K8S, r))):
            if d:
                docs.append((r, d))
    check(all(d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")
              for _, d in docs), "every manifest has apiVersion, kind, metadata.name (%d)" %
          len(docs))
    broker_bin = os.path.join(BUILD, "broker", "sdxl-broker")
    worker_bin = os.path.join(BUILD, "workers", "sdxl-worker")
    have_bins = os.access(broker_bin, os.X_OK) and os.access(worker_bin, os.X_OK)
    ports = set()
    for f, d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "Service":
            ports |= {p.get("port") for p in d["spec"].get("ports", [])}
        if kind not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        spec = d["spec"]
        sel = spec["selector"]["matchLabels"]
        labels = spec["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sel.items()),
              "%s/%s selects its own pods" % (kind, name))
        for c in spec["template"]["spec"]["containers"]:
            cmd = c.get("command") or []
            binary = os.path.basename(cmd[0]) if cmd else ""
            check(c.get("image") in image and binary in INSTALLED,
                  "%s/%s runs %s from the image %s" % (kind, name, binary, c.get("image")))
            args = list(cmd[1:]) + list(c.get("args") or [])
            if binary == "sdxl-worker":
                dom = args[args.index("--domain") + 1] if "--domain" in args else None
                check(dom in worker_domains, "%s: --domain %s is a worker domain" % (name, dom))
                if have_bins and dom:
                    h = helptext([worker_bin, "--domain", dom]) or ""
                    bad = [f_ for f_ in flags_of(args) if f_ not in h]
                    check(not bad, "%s: every flag is in sdxl-worker --domain %s --help" %
                          (name, dom), bad)
            if binary == "sdxl-broker" and have_bins:
                h = helptext([broker_bin]) or ""
                bad = [f_ for f_ in flags_of(args) if f_ not in h]
                check(not bad, "%s: every flag is in sdxl-broker --help" % name, bad)
            for probe in ("livenessProbe", "readinessProbe"):
                pc = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
                if pc:
                    check(os.path.basename(pc[0]) in INSTALLED,
                          "%s: %s runs %s" % (name, probe, os.path.basename(pc[0])))
    wants = set()
    for _, d in docs:
        text = json.dumps(d)
        wants |= {int(p) for p in re.findall(r"tcp://sdxl-broker:(\d+)", text)}
    check(wants and wants <= ports,
          "the broker Service exposes the ports the pods connect to: %s" % sorted(wants),
          sorted(ports))

    df = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", df, re.M)
    check(len(stages) >= 2 and all(s[0].startswith("debian:12") for s in stages),
          "Dockerfile: multi-stage on Debian 12: %s" % stages)
    runtime = df[df.rindex("\nFROM "):]
    pkgs = re.findall(r"apt-get install[^\n]*?((?:\\\n|[^\n])*)", runtime)
    runtime_pkgs = " ".join(pkgs).split()
    check(runtime_pkgs and not [p for p in runtime_pkgs if p.endswith("-dev")],
          "Dockerfile: the runtime stage installs no -dev package")
    users = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    check(users and users[-1].split(":")[0] not in ("root", "0"),
          "Dockerfile: runs as a non-root user (%s)" % (users[-1] if users else None))
    check("COPY --from=build" in runtime, "Dockerfile: the runtime copies the build's install")

    for unit in sorted(os.listdir(os.path.join(ROOT, "deploy", "systemd"))):
        text = open(os.path.join(ROOT, "deploy", "systemd", unit)).read()
        bins = set(re.findall(r"/usr/local/bin/([\w-]+)", text))
        if "ExecStart" in text:
            check(bins and bins <= INSTALLED, "%s starts installed binaries: %s" %
                  (unit, sorted(bins)))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
