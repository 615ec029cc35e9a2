"""A fleet plan -> Kubernetes manifests (`kt-launch export --to kubernetes`), as plain data (the command dumps
them as YAML and writes the files).

One replica (host x NUMA node, as the fleet's dry-run plans it) becomes one Deployment of one Guaranteed pod:
integer CPU requests = limits and memory requests = limits, which is what the kubelet's static CPU manager and
Static memory manager need to give the pod exclusive CPUs and one node's memory (field-2026-12.md 6.2). The pod
runs `kt-launch --profile ... --supervise`, so the plan is derived again inside from the pod's cgroup (its CPUs
and memory nodes: facts/cgroup.py). The router is sglang-router 0.3.2 with Kubernetes service discovery by
label (`--service-discovery --selector --service-discovery-port --service-discovery-namespace`), which needs
RBAC to get/list/watch pods. Secret values never appear here: the Secret holds placeholders to be replaced
with `kubectl create secret`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kt_launch.core.fleet import ROUTER_METRICS_PORT, ROUTER_MODULE
from kt_launch.render.fleet import cpu_list

GiB = 1 << 30
MiB = 1 << 20
# The memory margin over the plan's RAM need: SGLang's own process (Python, CUDA context, tokenizer) and
# /dev/shm use host RAM the kt-kernel estimate does not count.
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 8 * GiB
# The startup budget: a base for SGLang's start (CUDA graphs, the kt-kernel pools) plus reading the weights at a
# conservative disk rate; never below sglang-router's own --worker-startup-timeout-secs default (1800 s).
STARTUP_BASE_S = 600
LOAD_BYTES_PER_S = 200 * MiB
ROUTER_STARTUP_DEFAULT_S = 1800
PROBE_PERIOD_S = 10
PLACEHOLDER = "REPLACE-ME"  # a Secret's value in the output: never the real one
LABEL_WORKER = "kt-launch/worker"
LABEL_REPLICA = "kt-launch/replica"
PROFILE_DIR = "/etc/kt-launch"


@dataclass(frozen=True)
class ExportReplica:
    name: str  # the fleet's replica name (numa0, node-b/numa1)
    hostname: str  # the Kubernetes node (kubernetes.io/hostname) it is pinned to
    nodes: tuple[int, ...]
    cpus: int  # logical CPUs: its cores with their SMT siblings (the static CPU manager counts logical CPUs)
    gpus: int
    ram_need_bytes: int  # the plan's RAM for its node(s)
    weight_bytes: int  # what it reads at start (the startup budget)
    cpu_ids: tuple[int, ...] = ()  # its CPUs (compose cpuset, systemd CPUAffinity)
    gpu_ids: tuple[int, ...] = ()  # its GPUs in nvidia-smi order
    port: int = 0  # where it listens (compose and systemd keep the fleet's own ports and addresses)
    listen: str = "127.0.0.1"
    host: str = ""  # the fleet's name for its machine (one compose file / unit set per machine)


@dataclass(frozen=True)
class ExportSpec:
    fleet: str  # a label value and name prefix
    namespace: str
    image: str
    port: int  # every worker pod's port (one per pod IP: the router discovers one port)
    router_port: int
    policy: str
    replicas: tuple[ExportReplica, ...]
    profile_yaml: str  # the profile without its fleet section and secrets
    secret_env: tuple[tuple[str, str], ...]  # (env var in the pod, key in the Secret)
    router_api_key: str | None  # the Secret key of the router's API key, or None
    volumes: tuple[str, ...]  # host paths the pods read (model, weights): mounted read-only at the same path
    router_argv: tuple[str, ...] = ()  # the fleet's router command (static --worker-urls), API key as $(ROUTER_API_KEY)
    router_host: str = ""  # the machine the router runs on (the fleet's this machine)
    launcher: tuple[str, ...] = ("kt-launch",)  # how systemd starts kt-launch (an absolute path)
    sets: tuple[str, ...] = ()  # the export's own --set items (secret-named ones are never carried)
    metrics_port: int = ROUTER_METRICS_PORT  # the router's Prometheus port (the fleet's fleet.router.metrics_port)

    @property
    def router_metrics_port(self) -> int:
        """Where the router pod serves Prometheus: the fleet's port, or sglang-router's 29000 unless the router
        itself listens there (a single-instance export, whose router takes server.port), then the next one. Two
        listeners on one port would crash the router pod at its start."""
        return self.metrics_port if self.metrics_port != self.router_port else self.router_port + 1


def dns_name(*parts: str) -> str:
    """A DNS-1123 label from names: lower case, [a-z0-9-], at most 63 characters."""
    s = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return (s[:63].rstrip("-")) or "kt"


def memory_bytes(r: ExportReplica) -> int:
    """requests = limits: the plan's RAM plus the margin, rounded up to a MiB."""
    total = r.ram_need_bytes + math.ceil(r.ram_need_bytes * MARGIN_FRACTION) + MARGIN_BYTES
    return math.ceil(total / MiB) * MiB


def startup_budget_s(r: ExportReplica) -> int:
    return max(ROUTER_STARTUP_DEFAULT_S, STARTUP_BASE_S + math.ceil(r.weight_bytes / LOAD_BYTES_PER_S))


def _labels(spec: ExportSpec, extra: dict | None = None) -> dict:
    return {"app.kubernetes.io/name": "kt-launch", "app.kubernetes.io/instance": spec.fleet, **(extra or {})}


def _volumes(spec: ExportSpec) -> tuple[list, list]:
    mounts = [{"name": "profile", "mountPath": PROFILE_DIR, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    vols = [{"name": "profile", "configMap": {"name": dns_name(spec.fleet, "profile")}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    for i, path in enumerate(spec.volumes):
        mounts.append({"name": f"data{i}", "mountPath": path, "readOnly": True})
        vols.append({"name": f"data{i}", "hostPath": {"path": path, "type": "Directory"}})
    return mounts, vols


def _secret_env(spec: ExportSpec) -> list:
    secret = dns_name(spec.fleet, "secrets")
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for var, key in spec.secret_env]


def worker(spec: ExportSpec, r: ExportReplica) -> dict:
    name = dns_name(spec.fleet, r.name)
    mem = f"{memory_bytes(r) // MiB}Mi"
    res = {"cpu": str(r.cpus), "memory": mem, **({"nvidia.com/gpu": str(r.gpus)} if r.gpus else {})}
    budget = startup_budget_s(r)
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5}
    mounts, vols = _volumes(spec)
    labels = _labels(spec, {LABEL_WORKER: spec.fleet, LABEL_REPLICA: name})
    container = {
        "name": "kt-launch",
        "image": spec.image,
        "command": ["kt-launch"],
        # $(POD_IP) is expanded by the kubelet: the server listens on the pod's address, where the router dials
        "args": ["--profile", f"{PROFILE_DIR}/profile.yaml", *_sets(spec), "--set", "server.host=$(POD_IP)",
                 "--set", f"server.port={spec.port}", "--supervise"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, *_secret_env(spec)],
        "ports": [{"name": "http", "containerPort": spec.port}],
        "resources": {"requests": dict(res), "limits": dict(res)},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "startupProbe": {**probe, "failureThreshold": math.ceil(budget / PROBE_PERIOD_S)},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels,
                     "annotations": {
                         "kt-launch/numa-nodes": ",".join(map(str, r.nodes)),
                         "kt-launch/memory": f"plan RAM {r.ram_need_bytes} B + {int(MARGIN_FRACTION * 100)}% + "
                                             f"{MARGIN_BYTES // GiB} GiB margin",
                         "kt-launch/startup-budget-s": str(budget)}},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # the CPUs and GPUs of the node are the old pod's until it goes
            "selector": {"matchLabels": {LABEL_REPLICA: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": r.hostname},
                         "containers": [container], "volumes": vols},
            },
        },
    }


def router_argv(spec: ExportSpec, budget: int) -> list[str]:
    argv = ["python", "-m", ROUTER_MODULE, "--host", "0.0.0.0", "--port", str(spec.router_port),
            "--policy", spec.policy, "--service-discovery", "--selector", f"{LABEL_WORKER}={spec.fleet}",
            "--service-discovery-port", str(spec.port), "--service-discovery-namespace", spec.namespace,
            "--worker-startup-timeout-secs", str(budget),
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(spec.router_metrics_port)]
    if spec.router_api_key:
        argv += ["--api-key", "$(ROUTER_API_KEY)"]
    return argv


def router(spec: ExportSpec) -> list[dict]:
    name = dns_name(spec.fleet, "router")
    labels = _labels(spec, {"kt-launch/role": "router"})
    budget = max((startup_budget_s(r) for r in spec.replicas), default=ROUTER_STARTUP_DEFAULT_S)
    env = ([{"name": "ROUTER_API_KEY", "valueFrom": {"secretKeyRef": {"name": dns_name(spec.fleet, "secrets"),
                                                                       "key": spec.router_api_key}}}]
           if spec.router_api_key else [])
    meta = {"namespace": spec.namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, **meta},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"kt-launch/role": "router",
                                                              "app.kubernetes.io/instance": spec.fleet}},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"serviceAccountName": name,
                                        "containers": [{"name": "router", "image": spec.image,
                                                        "command": router_argv(spec, budget)[:1],
                                                        "args": router_argv(spec, budget)[1:],
                                                        "env": env,
                                                        "ports": [{"name": "http",
                                                                   "containerPort": spec.router_port},
                                                                  {"name": "metrics",
                                                                   "containerPort": spec.router_metrics_port}],
                                                        "readinessProbe": {"httpGet": {"path": "/health",
                                                                                       "port": "http"},
                                                                           "periodSeconds": PROBE_PERIOD_S}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **meta},
         "spec": {"selector": {"kt-launch/role": "router", "app.kubernetes.io/instance": spec.fleet},
                  "ports": [{"name": "http", "port": spec.router_port, "targetPort": "http"},
                            {"name": "metrics", "port": spec.router_metrics_port, "targetPort": "metrics"}]}},
    ]


def kubernetes(spec: ExportSpec) -> list[dict]:
    """Every manifest: the profile's ConfigMap, the Secret (placeholders), one Deployment per replica, the router
    with its RBAC and Service."""
    meta = {"namespace": spec.namespace, "labels": _labels(spec)}
    docs: list[dict] = [{"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": dns_name(spec.fleet, "profile"), **meta},
                         "data": {"profile.yaml": spec.profile_yaml}}]
    keys = sorted({k for _, k in spec.secret_env} | ({spec.router_api_key} if spec.router_api_key else set()))
    if keys:
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": dns_name(spec.fleet, "secrets"), **meta},
                     "type": "Opaque", "stringData": {k: PLACEHOLDER for k in keys}})
    docs += [worker(spec, r) for r in spec.replicas]
    docs += router(spec)
    return docs


def secret_command(spec: ExportSpec) -> str | None:
    """How to create the Secret with the real values (the output holds placeholders)."""
    keys = sorted({k for _, k in spec.secret_env} | ({spec.router_api_key} if spec.router_api_key else set()))
    if not keys:
        return None
    lits = " ".join(f"--from-literal={k}=..." for k in keys)
    return (f"kubectl -n {spec.namespace} create secret generic {dns_name(spec.fleet, 'secrets')} {lits} "
            "--dry-run=client -o yaml | kubectl apply -f -")


KUBELET_CONFIG = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "kind": "KubeletConfiguration",
    "cpuManagerPolicy": "static",
    "cpuManagerPolicyOptions": {"full-pcpus-only": "true"},
    "reservedSystemCPUs": "0,1",
    "memoryManagerPolicy": "Static",
    "reservedMemory": [{"numaNode": 0, "limits": {"memory": "1124Mi"}}],
    "topologyManagerPolicy": "single-numa-node",
    "topologyManagerScope": "pod",
}

KUBELET_CHECKLIST = """\
Kubelet prerequisites on every node that runs a replica (NUMA pinning in Kubernetes is the kubelet's):
[ ] cpuManagerPolicy: static (exclusive CPUs for Guaranteed pods with integer CPU requests = limits)
[ ] memoryManagerPolicy: Static (memory from the pod's NUMA node; reservedMemory must match the kube/system
    reservations: kube-reserved + system-reserved + eviction threshold)
[ ] topologyManagerPolicy: single-numa-node (one NUMA node per replica, GPU on the same node); for a replica on
    two nodes use restricted with cpuManagerPolicyOptions distribute-cpus-across-numa: "true"
[ ] changing the CPU or memory manager policy: drain the node, stop the kubelet, remove
    /var/lib/kubelet/cpu_manager_state and memory_manager_state, start the kubelet
[ ] the NVIDIA device plugin (nvidia.com/gpu) with topology hints
[ ] the model and weight directories (with frequency placement, the expert stats file's too) present on each
    node at the paths of the profile (mounted read-only)
See kubelet-config.yaml for a KubeletConfiguration snippet (reservedSystemCPUs and reservedMemory are examples).
"""


# ---------------------------------------------------------------------------------------------------------
# Without a cluster: docker compose (one file per machine) and systemd units
# ---------------------------------------------------------------------------------------------------------

SHM_SIZE = "16gb"  # SGLang's /dev/shm (NCCL, the tokenizer's shared memory); compose's default 64m is too small
ENV_FILE = "kt-launch.env"  # systemd's EnvironmentFile: the secrets, as placeholders to fill in on each machine
COMPOSE_ENV_FILE = ".env"  # compose reads it for ${...} and the services' env_file: the same placeholders


def replica_args(spec: ExportSpec, r: ExportReplica, profile: str) -> list[str]:
    """kt-launch's arguments for one replica outside Kubernetes: the fleet's own address and port."""
    return ["--profile", profile, *_sets(spec), "--set", f"server.host={r.listen}", "--set",
            f"server.port={r.port}", "--supervise"]


def _sets(spec: ExportSpec) -> list[str]:
    return [a for item in spec.sets for a in ("--set", item)]


def env_file(spec: ExportSpec) -> str:
    lines = ["# kt-launch secrets: replace each REPLACE-ME on the machine; keep this file mode 0600\n"]
    names = [var for var, _ in spec.secret_env] + (["ROUTER_API_KEY"] if spec.router_api_key else [])
    return "".join(lines + [f"{n}={PLACEHOLDER}\n" for n in names])


def compose(spec: ExportSpec, host: str) -> dict:
    """The compose project of one machine: its replicas (cpuset-cpus, cpuset-mems, its GPUs, shm) and, on the
    router's machine, the router. Host networking: the fleet's ports and URLs stay as planned."""
    services: dict[str, dict] = {}
    profile = f"{PROFILE_DIR}/profile.yaml"
    for r in (x for x in spec.replicas if x.host == host):
        svc = {
            "image": spec.image,
            # the compose spec has cpuset (docker's --cpuset-cpus) but no --cpuset-mems: memory is bound by
            # numactl in the container (set_mempolicy needs no privilege; the image needs numactl)
            "command": ["numactl", f"--membind={','.join(map(str, r.nodes))}", "--", "kt-launch",
                        *replica_args(spec, r, profile)],
            "network_mode": "host",
            "cpuset": cpu_list(r.cpu_ids),
            "shm_size": SHM_SIZE,
            "restart": "on-failure",
            "volumes": [f"./profile.yaml:{profile}:ro", *(f"{p}:{p}:ro" for p in spec.volumes)],
            "healthcheck": {"test": ["CMD", "curl", "-fsS", f"http://{r.listen}:{r.port}/health"],
                            "interval": "10s", "start_period": f"{startup_budget_s(r)}s"},
        }
        if spec.secret_env:
            svc["env_file"] = [COMPOSE_ENV_FILE]
        if r.gpu_ids:
            svc["deploy"] = {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "device_ids": [str(g) for g in r.gpu_ids], "capabilities": ["gpu"]}]}}}
        services[dns_name(r.name)] = svc
    if host == spec.router_host and spec.router_argv:
        argv = ["python3", *spec.router_argv[1:]]  # the image's interpreter, not this machine's
        svc = {"image": spec.image, "command": argv, "network_mode": "host", "restart": "on-failure"}
        if spec.router_api_key:  # compose fills ${ROUTER_API_KEY} from the .env beside the file when it starts
            svc["command"] = [a.replace("$(ROUTER_API_KEY)", "${ROUTER_API_KEY}") for a in argv]
        services["router"] = svc
    return {"name": dns_name(spec.fleet, host), "services": services}


def _unit(description: str, exec_start: list[str], extra: list[str], env: bool) -> str:
    lines = ["[Unit]", f"Description={description}", "Wants=network-online.target",
             "After=network-online.target", "", "[Service]", "Type=simple",
             "ExecStart=" + " ".join(_quote(a) for a in exec_start), *extra]
    if env:
        lines.append(f"EnvironmentFile=/etc/kt-launch/{ENV_FILE}")
    lines += ["Restart=on-failure", "RestartSec=10", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _quote(arg: str) -> str:
    """systemd's quoting of one ExecStart word: double quotes when it holds a space or a quote; `$$` keeps a
    literal dollar except in ${ROUTER_API_KEY}, which systemd expands from the EnvironmentFile."""
    arg = arg.replace("$", "$$").replace("$${ROUTER_API_KEY}", "${ROUTER_API_KEY}").replace("%", "%%")
    if any(c in arg for c in " \t\"'\\;") or not arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def systemd_units(spec: ExportSpec, host: str) -> dict[str, str]:
    """One unit per replica of this machine (CPUAffinity, NUMAPolicy=bind, NUMAMask, Restart=on-failure) and,
    on the router's machine, the router's unit (after the replicas)."""
    out: dict[str, str] = {}
    profile = f"/etc/kt-launch/{spec.fleet}.yaml"
    names = []
    for r in (x for x in spec.replicas if x.host == host):
        name = f"kt-launch-{dns_name(spec.fleet, r.name)}.service"
        names.append(name)
        extra = [f"CPUAffinity={cpu_list(r.cpu_ids)}" if r.cpu_ids else "",
                 "NUMAPolicy=bind", f"NUMAMask={','.join(map(str, r.nodes))}",
                 f"TimeoutStartSec={startup_budget_s(r)}", "TimeoutStopSec=60"]
        out[name] = _unit(f"kt-launch replica {r.name} of {spec.fleet} (NUMA node(s) "
                          f"{','.join(map(str, r.nodes))})",
                          [*spec.launcher, *replica_args(spec, r, profile)], [e for e in extra if e],
                          bool(spec.secret_env))
    if host == spec.router_host and spec.router_argv:
        argv = [a.replace("$(ROUTER_API_KEY)", "${ROUTER_API_KEY}") for a in spec.router_argv]
        text = _unit(f"sglang-router in front of the {spec.fleet} kt-launch fleet", argv, [],
                     bool(spec.router_api_key))
        if names:
            text = text.replace("After=network-online.target", "After=network-online.target " + " ".join(names))
        out[f"kt-launch-{dns_name(spec.fleet, 'router')}.service"] = text
    return out
