"""Each GPU's NUMA node in the host facts: nvidia-smi's PCI bus id -> /sys/bus/pci/devices/<addr>/numa_node."""

from __future__ import annotations

import json
import sys

import pytest

from kt_launch.core.host import GpuFacts
from kt_launch.facts.host import gather_host, gpu_numa_node, host_from_json, parse_gpu_csv, sysfs_pci_address

from fleet.support import dual_socket

# Recorded on the lent H200 machine (one NUMA node; its PCI device reports -1):
# nvidia-smi --query-gpu=index,name,memory.total,uuid,pci.bus_id --format=csv,noheader,nounits
H200_LINE = "0, NVIDIA H200, 143771, GPU-450eea73-21b1-6398-9f48-68ac4ddb8439, 00000000:00:06.0"


def sysfs(root, addr: str, node: str) -> None:
    d = root / "sys/bus/pci/devices" / addr
    d.mkdir(parents=True)
    (d / "numa_node").write_text(node + "\n")


def test_bus_ids_map_to_sysfs_names():
    assert sysfs_pci_address("00000000:17:00.0") == "0000:17:00.0"
    assert sysfs_pci_address("00000001:B3:00.0") == "0001:b3:00.0"
    assert sysfs_pci_address("garbage") is None and sysfs_pci_address("zz:00:00.0") is None


def test_numa_node_from_sysfs(tmp_path):
    sysfs(tmp_path, "0000:00:06.0", "-1")
    sysfs(tmp_path, "0000:17:00.0", "0")
    sysfs(tmp_path, "0000:b3:00.0", "1")
    out = "\n".join([H200_LINE, "1, NVIDIA H200, 143771, GPU-b, 00000000:17:00.0",
                     "2, NVIDIA H200, 143771, GPU-c, 00000000:B3:00.0", "3, NVIDIA H200, 143771, GPU-d, 00000000:CA:00.0"])
    gpus = parse_gpu_csv(out, tmp_path)
    assert [g.numa_node for g in gpus] == [None, 0, 1, None]  # -1 and a missing device: unknown
    assert gpus[0] == GpuFacts(0, "NVIDIA H200", 143771 << 20, "GPU-450eea73-21b1-6398-9f48-68ac4ddb8439", None)
    assert gpu_numa_node("00000000:../../x:00.0", tmp_path) is None


def test_gather_host_asks_nvidia_smi_for_the_bus_id(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}\nimport sys\nassert '--query-gpu=index,name,memory.total,uuid,pci.bus_id' "
                   "in sys.argv, sys.argv\nprint('0, NVIDIA H200, 143771, GPU-a, 00000000:B3:00.0')\n")
    smi.chmod(0o755)
    sysfs(tmp_path, "0000:b3:00.0", "1")
    host = gather_host({"PATH": str(bin_dir), "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")}, root=str(tmp_path))
    assert [(g.index, g.numa_node) for g in host.gpus] == [(0, 1)]
    assert host.to_json()["gpus"][0]["numa_node"] == 1


def test_host_facts_files_carry_numa_node_and_older_files_stay_valid():
    doc = dual_socket()
    host = host_from_json(doc)
    assert [g.numa_node for g in host.gpus] == [0, 0, 1, 1]
    again = host_from_json(json.loads(json.dumps(host.to_json())))
    assert again.gpus == host.gpus
    for g in doc["gpus"]:
        del g["numa_node"]  # recorded before kt-launch read it
    assert [g.numa_node for g in host_from_json(doc).gpus] == [None] * 4
    doc["gpus"][0]["numa_node"] = "one"
    with pytest.raises(ValueError):
        host_from_json(doc)
