"""`kt-launch export --to kubernetes`: a 2-host x 2-node fleet becomes 4 Guaranteed replica pods and one router
with service discovery and RBAC, validated against the Kubernetes API schemas (kubernetes-validate), the router's
argv parsed by the real sglang-router 0.3.2, and no secret in plain text anywhere in the output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet.support import dual_socket, kt_launch, write_json, write_profile

SECRET_KEY = "sk-export-test-9f8e7d6c5b4a"
SECRET_TOKEN = "hf_exporttoken_0123456789"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from devtools import synthetic

    root = tmp_path_factory.mktemp("model")
    synthetic.demo(root)
    return root


def _profile(tmp_path: Path, model: Path, fleet: bool = True) -> Path:
    from devtools import synthetic

    doc = synthetic.amx_profile(model, server={"api_key": SECRET_KEY}, runtime={"env": {"HF_TOKEN": SECRET_TOKEN,
                                                                                    "OMP_WAIT_POLICY": "PASSIVE"}})
    doc["kt"].pop("cpuinfer")
    if fleet:
        doc["kt"].pop("threadpool_count")  # one pool per replica: the fleet sets it
        doc["fleet"] = {"hosts": [{"name": "node-b", "address": "10.0.0.12", "host_facts": "node-b.json"}]}
        write_json(tmp_path / "node-b.json", dual_socket())
    return write_profile(tmp_path, doc, "kt-fleet.yaml")


def _export(tmp_path, profile, *extra) -> tuple[subprocess.CompletedProcess, Path]:
    host = write_json(tmp_path / "host.json", dual_socket())
    out = tmp_path / "out"
    done = kt_launch("export", "--profile", str(profile), "--host-facts", str(host), "--to", "kubernetes",
                     "-o", str(out), *extra, timeout=120)
    return done, out


def _docs(out: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all((out / "kubernetes.yaml").read_text()) if d]


def test_two_hosts_two_nodes_export_four_guaranteed_pods_and_a_discovering_router(tmp_path, model):
    done, out = _export(tmp_path, _profile(tmp_path, model))
    assert done.returncode == 0, done.stderr
    docs = _docs(out)
    workers = [d for d in docs if d["kind"] == "Deployment" and "kt-launch/worker" in d["metadata"]["labels"]]
    assert len(workers) == 4
    hosts = sorted(w["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"] for w in workers)
    assert hosts.count("node-b") == 2 and len(set(hosts)) == 2  # this machine's name twice, node-b twice
    assert sorted(w["metadata"]["annotations"]["kt-launch/numa-nodes"] for w in workers) == ["0", "0", "1", "1"]
    for w in workers:
        pod = w["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        res = c["resources"]
        assert res["requests"] == res["limits"]  # Guaranteed
        assert re.fullmatch(r"[1-9][0-9]*", res["requests"]["cpu"]) and int(res["requests"]["cpu"]) == 64
        assert re.fullmatch(r"[0-9]+Mi", res["requests"]["memory"]) and res["requests"]["nvidia.com/gpu"] == "2"
        assert c["args"][:2] == ["--profile", "/etc/kt-launch/profile.yaml"] and c["args"][-1] == "--supervise"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        sp = c["startupProbe"]
        budget = int(w["metadata"]["annotations"]["kt-launch/startup-budget-s"])
        assert sp["periodSeconds"] * sp["failureThreshold"] >= budget >= 1800
        env = {e["name"]: e for e in c["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "hf-token"
        assert env["KT_LAUNCH_SERVER__API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "server-api-key"
    # the router: discovery by the workers' label, with RBAC to watch pods, and a Service
    router = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router"))
    (rc,) = router["spec"]["template"]["spec"]["containers"]
    args = rc["args"]
    label = workers[0]["spec"]["template"]["metadata"]["labels"]
    sel = args[args.index("--selector") + 1]
    k, v = sel.split("=", 1)
    assert label[k] == v and "--service-discovery" in args
    assert args[args.index("--service-discovery-port") + 1] == str(workers[0]["spec"]["template"]["spec"]
                                                                    ["containers"][0]["ports"][0]["containerPort"])
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == router["spec"]["template"]["spec"]["serviceAccountName"]
    assert any(d["kind"] == "Service" for d in docs)
    # the profile in a ConfigMap, without its fleet section and its secrets
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    prof = yaml.safe_load(cm["data"]["profile.yaml"])
    assert "fleet" not in prof and "api_key" not in prof.get("server", {})
    assert prof["runtime"]["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(secret["stringData"]) == {"hf-token", "server-api-key"}
    # no secret in plain text in any file written, nor on the terminal
    for f in out.iterdir():
        text = f.read_text()
        assert SECRET_KEY not in text and SECRET_TOKEN not in text, f
    assert SECRET_KEY not in done.stdout + done.stderr and SECRET_TOKEN not in done.stdout + done.stderr
    # the kubelet prerequisites, in the output
    kubelet = yaml.safe_load((out / "kubelet-config.yaml").read_text())
    assert kubelet["kind"] == "KubeletConfiguration" and kubelet["cpuManagerPolicy"] == "static"
    assert kubelet["memoryManagerPolicy"] == "Static" and kubelet["topologyManagerPolicy"] == "single-numa-node"
    assert "distribute-cpus-across-numa" in (out / "kubernetes.yaml").read_text()


def test_manifests_validate_against_the_kubernetes_schemas(tmp_path, model):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")
    done, out = _export(tmp_path, _profile(tmp_path, model))
    assert done.returncode == 0, done.stderr
    docs = _docs(out)
    for d in docs:
        kv.validate(d, kv.latest_version(), strict=True)  # raises on a schema violation or an unknown field
    bad = json.loads(json.dumps(docs[-1]))
    bad["spec"]["ports"][0]["port"] = "not-a-port"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_kubectl_client_dry_run_accepts_them(tmp_path, model):
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")
    done, out = _export(tmp_path, _profile(tmp_path, model))
    assert done.returncode == 0, done.stderr
    if True:
        done = subprocess.run(["kubectl", "apply", "--dry-run=client", "-f", str(out / "kubernetes.yaml")],
                              capture_output=True, text=True, timeout=60)
        if done.returncode and re.search(r"connection refused|failed to download openapi|no configuration",
                                         done.stderr):
            pytest.skip(f"kubectl has no cluster to fetch the API schema from: {done.stderr.strip()[:120]}")
        assert done.returncode == 0, done.stderr


def test_router_args_parse_with_the_real_sglang_router(tmp_path, model, router_venv):
    done, out = _export(tmp_path, _profile(tmp_path, model))
    assert done.returncode == 0, done.stderr
    router = next(d for d in _docs(out) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router"))
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["-m", "sglang_router.launch_router"]
    code = ("import json, sys\nfrom sglang_router.launch_router import parse_router_args\n"
            "a = parse_router_args(json.loads(sys.argv[1]))\n"
            "print(json.dumps({'sd': a.service_discovery, 'sel': a.selector, 'port': a.service_discovery_port,"
            " 'ns': a.service_discovery_namespace, 'startup': a.worker_startup_timeout_secs,"
            " 'metrics': [a.prometheus_host, a.prometheus_port]}))\n")
    got = subprocess.run([str(router_venv), "-c", code, json.dumps(args[2:])], capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stderr[-2000:]
    a = json.loads(got.stdout)
    assert a["sd"] is True and a["ns"] == "default" and a["startup"] >= 1800
    # metrics on every address of the pod, at the port its container and Service declare (fleet.router.metrics_port
    # unset: sglang-router's 29000)
    (c,) = router["spec"]["template"]["spec"]["containers"]
    assert a["metrics"] == ["0.0.0.0", 29000]
    assert {"name": "metrics", "containerPort": 29000} in c["ports"]
    svc = next(d for d in _docs(out) if d["kind"] == "Service" and d["metadata"]["name"].endswith("-router"))
    assert {"name": "metrics", "port": 29000, "targetPort": "metrics"} in svc["spec"]["ports"]
    assert a["sel"] == {"kt-launch/worker": "kt-fleet"} or a["sel"] == ["kt-launch/worker=kt-fleet"]


def test_a_single_instance_profile_exports_one_replica(tmp_path, model):
    done, out = _export(tmp_path, _profile(tmp_path, model, fleet=False))
    assert done.returncode == 0, done.stderr
    workers = [d for d in _docs(out) if d["kind"] == "Deployment" and "kt-launch/worker" in d["metadata"]["labels"]]
    assert len(workers) == 1
    res = workers[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == res["limits"] and res["requests"]["cpu"] == "64"  # node 0's CPUs (one pool)


def test_a_router_on_port_29000_serves_its_metrics_on_another(tmp_path, model):
    """A single instance's router takes server.port; at 29000, sglang-router's own metrics default, the two would
    collide in the router pod and it would die at its start: the metrics move to the next port."""
    profile = _profile(tmp_path, model, fleet=False)
    doc = yaml.safe_load(profile.read_text())
    doc.setdefault("server", {})["port"] = 29000
    profile.write_text(yaml.safe_dump(doc))
    done, out = _export(tmp_path, profile)
    assert done.returncode == 0, done.stderr
    router = next(d for d in _docs(out) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router"))
    (c,) = router["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 29000, "metrics": 29001}
    assert c["args"][c["args"].index("--prometheus-port") + 1] == "29001"
    assert c["args"][c["args"].index("--port") + 1] == "29000"


def test_unknown_ram_is_a_plan_error_and_writes_nothing(tmp_path, model):
    p = _profile(tmp_path, model)
    doc = yaml.safe_load(p.read_text())
    doc["model"]["path"] = "/nonexistent/model"
    p.write_text(yaml.safe_dump(doc))
    done, out = _export(tmp_path, p, "--no-check")
    assert done.returncode == 3 and "RAM is unknown" in done.stderr and not out.exists()


def _export_to(tmp_path, model, to: str) -> tuple[subprocess.CompletedProcess, Path]:
    profile = _profile(tmp_path, model)
    host = write_json(tmp_path / "host.json", dual_socket())
    out = tmp_path / f"out-{to}"
    done = kt_launch("export", "--profile", str(profile), "--host-facts", str(host), "--to", to, "-o", str(out),
                     timeout=120)
    return done, out


def _no_secret(out: Path, done: subprocess.CompletedProcess) -> None:
    for f in out.rglob("*"):
        if f.is_file():
            text = f.read_text()
            assert SECRET_KEY not in text and SECRET_TOKEN not in text, f
    assert SECRET_KEY not in done.stdout + done.stderr and SECRET_TOKEN not in done.stdout + done.stderr


def test_compose_pins_each_replica_and_reserves_its_gpus(tmp_path, model):
    done, out = _export_to(tmp_path, model, "compose")
    assert done.returncode == 0, done.stderr
    here = yaml.safe_load((out / "compose.yaml").read_text())
    there = yaml.safe_load((out / "compose-node-b.yaml").read_text())
    assert set(here["services"]) == {"numa0", "numa1", "router"} and set(there["services"]) == {"node-b-numa0",
                                                                                                  "node-b-numa1"}
    for svcs in (here["services"], there["services"]):
        for name, svc in svcs.items():
            if name == "router":
                continue
            node = int(name[-1])
            assert svc["cpuset"] == (f"{64 * node}-{64 * node + 63}")  # the node's CPUs (dual_socket: SMT 2)
            assert svc["command"][:3] == ["numactl", f"--membind={node}", "--"]
            assert svc["shm_size"] and svc["env_file"] == [".env"]
            (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert dev["capabilities"] == ["gpu"] and dev["device_ids"] == [str(2 * node), str(2 * node + 1)]
    r = here["services"]["router"]["command"]
    assert r[r.index("--api-key") + 1] == "${ROUTER_API_KEY}"
    assert "http://10.0.0.12:30002" in r
    assert "ROUTER_API_KEY=REPLACE-ME" in (out / ".env").read_text()
    _no_secret(out, done)


def _unit(path: Path) -> dict[str, dict[str, str]]:
    import configparser

    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(path.read_text())
    return {s: dict(cp[s]) for s in cp.sections()}


def test_systemd_units_bind_cpus_and_memory_and_restart(tmp_path, model):
    done, out = _export_to(tmp_path, model, "systemd")
    assert done.returncode == 0, done.stderr
    units = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.service"))
    assert units == ["kt-launch-kt-fleet-numa0.service", "kt-launch-kt-fleet-numa1.service",
                     "kt-launch-kt-fleet-router.service", "node-b/kt-launch-kt-fleet-node-b-numa0.service",
                     "node-b/kt-launch-kt-fleet-node-b-numa1.service"]
    for name in units:
        u = _unit(out / name)
        s = u["Service"]
        assert s["Restart"] == "on-failure" and u["Install"]["WantedBy"] == "multi-user.target"
        assert s["EnvironmentFile"] == "/etc/kt-launch/kt-launch.env"
        if "router" in name:
            assert "--api-key ${ROUTER_API_KEY}" in s["ExecStart"] and "numa0.service" in u["Unit"]["After"]
            continue
        node = int(name[-9])
        assert s["CPUAffinity"] == f"{64 * node}-{64 * node + 63}"
        assert s["NUMAPolicy"] == "bind" and s["NUMAMask"] == str(node)
        assert s["ExecStart"].endswith("--supervise") and int(s["TimeoutStartSec"]) >= 1800
    _no_secret(out, done)
    if shutil.which("systemd-analyze"):
        local = [str(out / n) for n in units if "/" not in n]
        done = subprocess.run(["systemd-analyze", "verify", *local], capture_output=True, text=True, timeout=60,
                              cwd=out)
        problems = [l for l in done.stderr.splitlines() if "kt-launch" in l]
        assert done.returncode == 0 and not problems, done.stderr


def test_the_multi_host_dry_run_names_kt_launch_export(tmp_path, model):
    profile = _profile(tmp_path, model)
    host = write_json(tmp_path / "host.json", dual_socket())
    done = kt_launch("--profile", str(profile), "--host-facts", str(host), "--dry-run", "--set",
                     "kt.max_deferred_experts_per_token=0", timeout=120)
    assert done.returncode in (0, 3), done.stderr
    lines = done.stdout.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("or let an orchestrator run"))
    import shlex

    argv = shlex.split(lines[i + 1])
    assert argv[:2] == ["kt-launch", "export"] and f"--profile={profile}" in argv
    assert "--supervise" not in argv and not any(a.startswith("--fleet-host") for a in argv)
    assert ["--set", "kt.max_deferred_experts_per_token=0"] == argv[argv.index("--set"):argv.index("--set") + 2]
    # the line runs as printed (here with -o in tmp_path and this host's facts)
    out = tmp_path / "k8s"
    done = kt_launch(*argv[1:-1], str(out), "--host-facts", str(host), timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "kubernetes.yaml").is_file()


def test_set_items_travel_to_the_pods_but_secret_ones_never_do(tmp_path, model):
    key = "sk-from-the-command-line-4242"
    done, out = _export(tmp_path, _profile(tmp_path, model), "--set", f"server.api_key={key}",
                        "--set", "model.served_name=dsv2-k8s")
    assert done.returncode == 0, done.stderr
    text = (out / "kubernetes.yaml").read_text()
    assert key not in text and key not in done.stdout + done.stderr
    for w in (d for d in _docs(out) if d["kind"] == "Deployment" and "kt-launch/worker" in d["metadata"]["labels"]):
        args = w["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "model.served_name=dsv2-k8s" in args and not any("api_key" in a for a in args)
    prof = yaml.safe_load(next(d for d in _docs(out) if d["kind"] == "ConfigMap")["data"]["profile.yaml"])
    assert Path(prof["model"]["path"]).is_absolute() and "python" not in prof.get("runtime", {})
