"""The fleet planner through the real CLI (`--dry-run --json`), against recorded host facts: a dual-socket
host gives two pinned replicas with node-local GPUs; RAM is checked per node; errors name the node."""

from __future__ import annotations

import dataclasses
import json
import sys

from devtools import synthetic
from kt_launch.facts.model import read_model_facts
from kt_launch.resolve.memory import kt_pool_buffer_bytes

from fleet.support import dual_socket, fleet_profile, kt_launch, write_json, write_profile


def plan(tmp_path, profile: dict, host: dict | None = None, *extra: str, check: bool = False):
    p = write_profile(tmp_path, profile)
    h = write_json(tmp_path / "host.json", host if host is not None else dual_socket())
    args = ["--profile", str(p), "--host-facts", str(h), "--dry-run", "--json", *extra]
    if not check:
        args.append("--no-check")
    done = kt_launch(*args)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def codes(doc: dict, level: str | None = None) -> list[str]:
    out = [f["code"] for f in doc["findings"] if level in (None, f["level"])]
    for inst in doc["instances"]:
        out += [f["code"] for f in inst["findings"] if level in (None, f["level"])]
    return out


def messages(doc: dict, code: str) -> list[str]:
    out = [f["message"] for f in doc["findings"] if f["code"] == code]
    for inst in doc["instances"]:
        out += [f["message"] for f in inst["findings"] if f["code"] == code]
    return out


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_dual_socket_gives_two_pinned_replicas_with_node_local_gpus(tmp_path):
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"router": {"policy": "round_robin"}}))
    assert rc == 0, doc
    assert list(doc) == ["schema_version", "verdict", "ok", "instances", "router", "findings"]
    assert [i["name"] for i in doc["instances"]] == ["numa0", "numa1"]
    for node, inst in enumerate(doc["instances"]):
        assert list(inst) == ["name", "host", "url", "cpus", "argv", "env", "resolved", "findings"]
        a = inst["argv"]
        assert inst["host"] == "this machine"
        assert flag(a, "--kt-threadpool-count") == "1" and flag(a, "--kt-numa-nodes") == str(node)
        assert flag(a, "--kt-cpuinfer") == "30"  # 32 physical cores per node - 2 reserved
        assert flag(a, "--tp-size") == "2"
        assert inst["env"]["CUDA_VISIBLE_DEVICES"] == ("0,1" if node == 0 else "2,3")
        assert inst["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert flag(a, "--port") == str(30001 + node) and flag(a, "--host") == "127.0.0.1"
        assert inst["url"] == f"http://127.0.0.1:{30001 + node}"
        # the threads step of one instance, on the host as the replica sees it: no second copy of the rule
        assert inst["resolved"]["kt.numa_nodes"]["value"] == [node] and inst["resolved"]["kt.numa_nodes"]["source"] == "host"
        assert f"NUMA node {node}" in inst["resolved"]["kt.threadpool_count"]["reason"]
    r = doc["router"]["argv"]
    assert r[1:3] == ["-m", "sglang_router.launch_router"]
    assert flag(r, "--port") == "30000" and flag(r, "--policy") == "round_robin"
    assert r[r.index("--worker-urls") + 1:] == ["http://127.0.0.1:30001", "http://127.0.0.1:30002"]
    assert doc["router"]["url"] == "http://127.0.0.1:30000"


def test_text_dry_run_shows_every_instance_and_the_router(tmp_path):
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000, {"router": {"port": 8000}}))
    h = write_json(tmp_path / "host.json", dual_socket())
    done = kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "router: http://127.0.0.1:8000" in out and "--worker-urls http://127.0.0.1:30001 http://127.0.0.1:30002" in out
    for name, gpus in (("numa0", "0,1"), ("numa1", "2,3")):
        block = out.split(f"instance {name}", 1)[1].split("\n\n", 1)[0]
        assert f"CUDA_VISIBLE_DEVICES={gpus}" in block and "per-replica values:" in block
        assert "kt.numa_nodes" in block and "kt.cpuinfer" in block and "server.port" in block
    assert "values shared by every instance:" in out


def test_without_fleet_the_single_instance_json_is_unchanged(tmp_path):
    profile = fleet_profile(sys.executable, 30000)
    del profile["fleet"]
    rc, doc = plan(tmp_path, profile)
    assert list(doc) == ["schema_version", "verdict", "ok", "argv", "env", "flavor", "resolved", "findings"]
    assert not any(k.startswith("fleet.") for k in doc["resolved"])


def test_ram_is_checked_per_node_and_per_copy(tmp_path):
    model = synthetic.hf_model(tmp_path / "model", sparse=True)
    # one copy of the CPU experts (MoE layers x experts x projections x BF16 bytes) plus kt-kernel's buffers of one
    # thread pool at SGLang's chunk for a 141 GiB GPU (8192): the memory plan's RAM figure (resolve/memory.py)
    need = 3 * 8 * 3 * 32 * 64 * 2 + kt_pool_buffer_bytes(read_model_facts(str(model)), 8192, 1)
    profile = fleet_profile(sys.executable, 30000, model={"path": str(model)},
                            kt={"weight_path": str(model), "method": "BF16"})
    # each node holds one copy: fine
    rc, doc = plan(tmp_path, profile, dual_socket(node_ram=int(need * 1.5)), check=True)
    assert "KT-E230" not in codes(doc), doc
    # two replicas per node: two copies in one node's RAM do not fit, and the error names the node
    profile["fleet"] = {"replicas": 4}
    rc, doc = plan(tmp_path, profile, dual_socket(node_ram=int(need * 1.5)), check=True)
    assert rc == 3
    msgs = messages(doc, "KT-E230")
    assert len(msgs) == 4 and any("NUMA node 0" in m for m in msgs) and any("NUMA node 1" in m for m in msgs)
    assert "KT-W705" in codes(doc, "warning")
    # one node smaller than a copy: only its replica fails
    host = dual_socket(node_ram=4 * need)
    host["numa"][1]["memory_bytes"] = need // 2
    profile["fleet"] = {}
    rc, doc = plan(tmp_path, profile, host, check=True)
    assert rc == 3
    bad = [i["name"] for i in doc["instances"] if any(f["code"] == "KT-E230" for f in i["findings"])]
    assert bad == ["numa1"] and "NUMA node 1" in messages(doc, "KT-E230")[0]


def test_a_node_without_gpu_is_an_error_naming_it_unless_cpu_only_is_allowed(tmp_path):
    host = dual_socket(gpu_nodes=(0, 0))
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000), host)
    assert rc == 3
    (msg,) = messages(doc, "KT-E704")
    assert "NUMA node 1" in msg and "[0]" in msg
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"allow_cpu_only": True}), host)
    assert rc == 0, codes(doc, "error")
    numa1 = doc["instances"][1]
    assert numa1["env"]["CUDA_VISIBLE_DEVICES"] == "" and flag(numa1["argv"], "--tp-size") == "1"
    # one replica spanning both nodes takes every GPU and both pools
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 1}), host)
    (inst,) = doc["instances"]
    assert rc == 0 and inst["name"] == "numa0-1"
    assert inst["argv"][inst["argv"].index("--kt-numa-nodes") + 1:][:2] == ["0", "1"]
    assert flag(inst["argv"], "--kt-threadpool-count") == "2" and flag(inst["argv"], "--kt-cpuinfer") == "62"


def test_replicas_that_do_not_divide_are_errors_naming_the_nodes(tmp_path):
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 3}))
    assert rc == 3 and "3" in messages(doc, "KT-E701")[0] and "[0, 1]" in messages(doc, "KT-E701")[0]
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 4}), dual_socket(cores_per_node=31))
    msgs = messages(doc, "KT-E702")
    assert rc == 3 and len(msgs) == 2 and "NUMA node 0" in msgs[0] and "NUMA node 1" in msgs[1]
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 4}), dual_socket(gpus_per_node=1))
    assert rc == 3 and "NUMA node 0" in messages(doc, "KT-E703")[0]


def test_split_nodes_share_cores_and_gpus(tmp_path):
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 4}))
    assert rc == 0
    assert [i["name"] for i in doc["instances"]] == ["numa0.0", "numa0.1", "numa1.0", "numa1.1"]
    assert [i["env"]["CUDA_VISIBLE_DEVICES"] for i in doc["instances"]] == ["0", "1", "2", "3"]
    assert {flag(i["argv"], "--kt-cpuinfer") for i in doc["instances"]} == {"14"}  # 16 cores each - 2
    assert [flag(i["argv"], "--kt-numa-nodes") for i in doc["instances"]] == ["0", "0", "1", "1"]
    assert "KT-W705" in codes(doc, "warning")


def test_other_hosts_get_a_command_and_their_urls_reach_the_router(tmp_path):
    write_json(tmp_path / "node-b.json", dual_socket())
    fleet = {"replicas": 0, "hosts": [{"name": "node-b", "address": "10.0.0.12", "host_facts": "node-b.json"}]}
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, fleet))
    assert rc == 0, codes(doc, "error")
    assert [(i["name"], i["host"], i["url"]) for i in doc["instances"]] == [
        ("node-b/numa0", "node-b", "http://10.0.0.12:30001"), ("node-b/numa1", "node-b", "http://10.0.0.12:30002")]
    assert flag(doc["instances"][0]["argv"], "--host") == "10.0.0.12"
    r = doc["router"]["argv"]
    assert r[r.index("--worker-urls") + 1:] == ["http://10.0.0.12:30001", "http://10.0.0.12:30002"]
    (h,) = doc["hosts"]
    assert "--fleet-host=node-b" in h["argv"] and "--supervise" in h["argv"]
    # a missing host-facts file is invalid input (exit 2) naming the entry
    fleet["hosts"][0]["host_facts"] = "nope.json"
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000, fleet))
    done = kt_launch("--profile", str(p), "--no-check", "--dry-run")
    assert done.returncode == 2 and "fleet.hosts[0] (node-b).host_facts" in done.stderr


def test_fleet_host_plans_that_hosts_part_without_a_router(tmp_path):
    write_json(tmp_path / "node-b.json", dual_socket())
    fleet = {"hosts": [{"name": "node-b", "address": "10.0.0.12", "host_facts": "node-b.json"}]}
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000, fleet))
    done = kt_launch("--profile", str(p), "--host-facts", str(tmp_path / "node-b.json"), "--fleet-host", "node-b",
                     "--no-check", "--dry-run", "--json")
    doc = json.loads(done.stdout)
    assert doc["router"] is None and [i["url"] for i in doc["instances"]] == ["http://10.0.0.12:30001",
                                                                             "http://10.0.0.12:30002"]
    done = kt_launch("--profile", str(p), "--fleet-host", "node-c", "--no-check", "--dry-run")
    assert done.returncode == 2 and "node-c" in done.stderr and "node-b" in done.stderr


def test_secrets_are_masked_everywhere(tmp_path):
    secret = "sk-fleet-secret-9f8e7d"
    profile = fleet_profile(sys.executable, 30000, server={"api_key": secret})
    p = write_profile(tmp_path, profile)
    h = write_json(tmp_path / "host.json", dual_socket())
    for extra in (["--json"], []):
        done = kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run", *extra)
        assert secret not in done.stdout + done.stderr
    doc = json.loads(kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run", "--json").stdout)
    assert flag(doc["router"]["argv"], "--api-key") == "***"


def test_set_and_env_reach_nested_fleet_keys(tmp_path):
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000))
    h = write_json(tmp_path / "host.json", dual_socket())
    done = kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run", "--json",
                     "--set", "fleet.replicas=4", "--set", "fleet.router.port=8080",
                     env={"KT_LAUNCH_FLEET__ROUTER__POLICY": "power_of_two"})
    doc = json.loads(done.stdout)
    assert len(doc["instances"]) == 4
    assert flag(doc["router"]["argv"], "--port") == "8080" and flag(doc["router"]["argv"], "--policy") == "power_of_two"
    done = kt_launch("--profile", str(p), "--no-check", "--dry-run", "--set", "fleet.replicas=-1")
    assert done.returncode == 2 and "fleet.replicas" in done.stderr


def test_pinning_needs_kt_numa_nodes(tmp_path):
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, runtime={"flavor": "sglang"}))
    assert rc == 3
    assert [i["name"] for i in doc["instances"] if any(f["code"] == "KT-E709" for f in i["findings"])] == ["numa1"]


def test_check_plans_the_fleet_as_dry_run_does(tmp_path):
    """`check` and `--dry-run` read the same fleet plan: same exit code, same errors; `check --json` is JSON."""
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 3}))
    h = write_json(tmp_path / "host.json", dual_socket())
    dry = kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run", "--json")
    check = kt_launch("check", "--profile", str(p), "--host-facts", str(h), "--no-check", "--json")
    assert dry.returncode == check.returncode == 3, check.stderr
    assert json.loads(check.stdout) == json.loads(dry.stdout)
    assert "KT-E701" in codes(json.loads(check.stdout), "error")
    text = kt_launch("check", "--profile", str(p), "--host-facts", str(h), "--no-check")
    assert text.returncode == 3 and text.stdout.splitlines()[0].startswith("BLOCKED") and "KT-E701" in text.stdout


def test_the_local_host_is_a_field_not_a_name():
    """A host is the router's own machine by HostInput.local, whatever it is called (issue 18: a fleet.hosts
    entry named `this machine` was started locally); URLs follow the field too."""
    from kt_launch.core.fleet import LOCAL, http_url
    from kt_launch.facts.host import host_from_json
    from kt_launch.resolve.fleet import HostInput, layout

    facts = host_from_json(dual_socket())
    assert not facts.local  # recorded facts are never this machine, whatever their source says
    out: list = []
    remote = layout(HostInput(LOCAL, facts, None, "10.0.0.12", "10.0.0.12"), 30000, False, out)
    local = layout(HostInput(LOCAL, facts, None, "0.0.0.0", "0.0.0.0", local=True), 30000, False, out)
    assert [r.name for r in remote] == [f"{LOCAL}/numa0", f"{LOCAL}/numa1"] and not any(r.local for r in remote)
    assert [r.name for r in local] == ["numa0", "numa1"] and all(r.local for r in local)
    assert local[0].url == "http://127.0.0.1:30001"  # a wildcard of this machine is dialled on loopback
    assert http_url("0.0.0.0", 1, local=False) == "http://0.0.0.0:1"  # another host's wildcard is not ours
    assert http_url("fe80::1%eth0", 8) == "http://[fe80::1%25eth0]:8"
    assert http_url("::", 8) == "http://[::1]:8"


def test_ports_are_checked_with_host_facts_when_the_plan_runs_here(tmp_path):
    """--supervise with --host-facts starts the fleet on this machine: a foreign server on a replica's port is a
    plan error (KT-E708) before anything starts; a dry run for a recorded host does not look at this one."""
    import socket

    from kt_launch.app import Request, plan_fleet

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    busy = s.getsockname()[1]
    try:
        p = write_profile(tmp_path, fleet_profile(sys.executable, busy - 1, {"router": {"port": busy + 10}}))
        h = write_json(tmp_path / "host.json", dual_socket())
        req = Request(profile=str(p), host_facts=str(h), checks=False)
        found = plan_fleet(dataclasses.replace(req, launch=True)).plan.findings
        assert any(f.code == "KT-E708" and str(busy) in f.message for f in found), found
        assert not any(f.code == "KT-E708" for f in plan_fleet(req).plan.findings)
    finally:
        s.close()


def test_the_plan_shows_each_replicas_cpus(tmp_path):
    """The placement --supervise pins is in the plan: a node's usable CPUs, split per SMT run when replicas share
    a node (disjoint, whole cores with their siblings)."""
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000))
    assert rc == 0 and [i["cpus"] for i in doc["instances"]] == [list(range(0, 64)), list(range(64, 128))]
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 4}))
    cpus = [set(i["cpus"]) for i in doc["instances"]]
    assert cpus[0] | cpus[1] == set(range(64)) and not cpus[0] & cpus[1] and len(cpus[0]) == 32
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000))
    text = kt_launch("--profile", str(p), "--host-facts", str(tmp_path / "host.json"), "--no-check", "--dry-run")
    assert "cpus 0-63" in text.stdout and "cpus 64-127" in text.stdout


def test_a_port_clash_in_the_plan_and_a_busy_port_have_a_code_each(tmp_path):
    """Two listeners of the plan on one port is KT-E190 (the plan is wrong, whatever this machine runs); KT-E708
    says only that a port is taken on this machine now (issue 27: KT-E708 had both meanings)."""
    from kt_launch.app import Request, plan_fleet

    p = write_profile(tmp_path, fleet_profile(sys.executable, 31000, {"router": {"port": 31001}}))
    h = write_json(tmp_path / "host.json", dual_socket())
    found = plan_fleet(Request(profile=str(p), host_facts=str(h), checks=False)).plan.findings
    clash = [f for f in found if f.code == "KT-E190"]
    assert clash and "would both listen on port 31001" in clash[0].message, found
    assert not any(f.code == "KT-E708" for f in found)


def test_the_routers_metrics_port_is_rendered_and_checked_like_its_port(tmp_path):
    """sglang-router 0.3.2 always serves Prometheus metrics (default 29000 on 0.0.0.0) and panics when that port is
    taken, after the replicas loaded: the router argv names fleet.router.metrics_port on server.host, a clash with a
    replica's port is KT-E190, and a port taken here is KT-E708 before anything starts."""
    import socket

    from kt_launch.app import Request, plan_fleet
    from kt_launch.render.fleet import router_command

    h = write_json(tmp_path / "host.json", dual_socket())
    p = write_profile(tmp_path, fleet_profile(sys.executable, 31000, {"router": {"port": 31010}}))
    argv = router_command(plan_fleet(Request(profile=str(p), host_facts=str(h), checks=False)).plan.router).argv
    assert argv[argv.index("--prometheus-port") + 1] == "29000"
    assert argv[argv.index("--prometheus-host") + 1] == "127.0.0.1"

    p = write_profile(tmp_path, fleet_profile(sys.executable, 31000, {"router": {"port": 31010, "metrics_port": 31001}}))
    found = plan_fleet(Request(profile=str(p), host_facts=str(h), checks=False)).plan.findings
    assert any(f.code == "KT-E190" and "the router's metrics" in f.message for f in found), found

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    busy = s.getsockname()[1]
    try:
        p = write_profile(tmp_path, fleet_profile(sys.executable, 31000, {"router": {"port": 31010,
                                                                                    "metrics_port": busy}}))
        req = Request(profile=str(p), host_facts=str(h), checks=False, launch=True)
        found = plan_fleet(req).plan.findings
        assert any(f.code == "KT-E708" and "the router's metrics" in f.message and str(busy) in f.message
                   for f in found), found
    finally:
        s.close()


def test_the_fleet_dry_run_shows_each_replicas_expert_placement(tmp_path):
    """The placement table a single instance's plan shows (issue 25), in the fleet's text once when every replica
    places its GPU experts alike, and per instance in the JSON; none where nothing is placed."""
    synthetic.hf_model(tmp_path / "model")
    prof = fleet_profile(sys.executable, 31000, {"router": {"port": 31100}},
                         model={"path": str(tmp_path / "model"), "served_name": "tiny"},
                         kt={"weight_path": str(tmp_path), "method": "AMXINT8", "num_gpu_experts": 3,
                             "expert_placement": "uniform"})
    _, doc = plan(tmp_path, prof, None, check=True)
    places = [inst["placement"] for inst in doc["instances"]]
    assert len(places) == 2 and places[0] == places[1]
    assert places[0]["strategy"] == "uniform" and places[0]["per_layer"] == [3, 3, 3]
    p = write_profile(tmp_path, prof)
    text = kt_launch("--profile", str(p), "--host-facts", str(tmp_path / "host.json"), "--dry-run").stdout
    assert text.count("expert placement: uniform, 9 GPU experts over 3 MoE layers (every instance)") == 1, text
    assert "GPU experts per layer  1-3: 3" in text
    del prof["kt"]["expert_placement"], prof["kt"]["num_gpu_experts"]
    _, doc = plan(tmp_path, prof, None, check=True)
    assert not any("placement" in inst for inst in doc["instances"])
