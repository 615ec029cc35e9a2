"""The router command kt-launch renders is accepted by the real sglang-router 0.3.2's own parser
(`parse_router_args` in sglang_router/launch_router.py), in a venv with the PyPI wheel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kt_launch.core.fleet import ROUTER_MODULE, RouterSpec
from kt_launch.core.options import ROUTER_POLICIES
from kt_launch.render.fleet import router_command

from fleet.support import dual_socket, fleet_profile, kt_launch, write_json, write_profile

PARSE = """
import json, sys
from sglang_router.launch_router import parse_router_args
a = parse_router_args(json.loads(sys.argv[1]))
print(json.dumps({"host": a.host, "port": a.port, "policy": a.policy, "worker_urls": a.worker_urls,
                  "api_key": a.api_key}))
"""


def parse(python, argv: list[str]) -> dict:
    assert argv[1:3] == ["-m", ROUTER_MODULE]
    done = subprocess.run([str(python), "-c", PARSE, json.dumps(argv[3:])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("policy", ROUTER_POLICIES)
def test_every_policy_and_the_api_key_parse(router_venv, policy):
    spec = RouterSpec(str(router_venv), "0.0.0.0", 8000, policy,
                      ("http://127.0.0.1:30001", "http://[::1]:30002", "http://10.0.0.12:30001"), "sk-test-key")
    got = parse(router_venv, router_command(spec).argv)
    assert got == {"host": "0.0.0.0", "port": 8000, "policy": policy, "worker_urls": list(spec.worker_urls),
                   "api_key": "sk-test-key"}


def test_the_dual_socket_plans_router_argv_parses(router_venv, tmp_path):
    p = write_profile(tmp_path, fleet_profile(sys.executable, 30000, {"router": {"python": str(router_venv)}}))
    h = write_json(tmp_path / "host.json", dual_socket())
    done = kt_launch("--profile", str(p), "--host-facts", str(h), "--no-check", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert not [f for f in doc["findings"] if f["code"] == "KT-W710"]  # the router venv has sglang-router
    got = parse(router_venv, doc["router"]["argv"])
    assert got["worker_urls"] == [i["url"] for i in doc["instances"]] == ["http://127.0.0.1:30001",
                                                                         "http://127.0.0.1:30002"]
    assert (got["host"], got["port"], got["policy"]) == ("127.0.0.1", 30000, "cache_aware")


def test_policies_match_the_real_parser(router_venv):
    """fleet.router.policy offers exactly the real --policy choices kt-launch supports (manual needs routing keys)."""
    code = ("import argparse; from sglang_router.router_args import RouterArgs; p = argparse.ArgumentParser(); "
            "RouterArgs.add_cli_args(p); print(' '.join(next(a for a in p._actions if a.dest == 'policy').choices))")
    done = subprocess.run([str(router_venv), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(ROUTER_POLICIES) == set(done.stdout.split()) - {"manual"}
