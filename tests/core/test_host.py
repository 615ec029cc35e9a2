"""Host facts from a fake /proc and /sys tree, the JSON round trip, and CUDA_VISIBLE_DEVICES."""

import json

from kt_launch.facts.host import GpuFacts, filter_visible, gather_host, parse_cpulist, host_from_json


def _tree(root, nodes):
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 AVX512F\n\n"
        "processor\t: 1\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_tile\n")
    for n, cpus in nodes.items():
        d = root / f"sys/devices/system/node/node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
        (d / "meminfo").write_text(f"Node {n} MemTotal:       1024 kB\n")


def test_gather_from_fake_root(tmp_path):
    _tree(tmp_path, {0: "0-1", 1: ""})
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    assert h.cpu.model == "Test CPU"
    assert {"avx2", "avx512f", "amx_tile"} <= h.cpu.flags  # every flags line, lower-cased
    assert [n.id for n in h.numa] == [0, 1] and h.numa[0].memory_bytes == 1024 * 1024
    assert [n.id for n in h.cpu_numa_nodes] == [0]  # node 1 is memory-only
    assert h.gpus == () and any("nvidia-smi" in n for n in h.notes)
    assert any("topology" in n for n in h.notes)  # no /sys/devices/system/cpu in the fake tree: degraded


def test_missing_sources_degrade_to_notes(tmp_path):
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    assert h.cpu.flags == frozenset() and len(h.cpu_numa_nodes) == 1
    assert any("cpuinfo" in n for n in h.notes) and any("NUMA" in n for n in h.notes)


def test_json_round_trip():
    h = gather_host()
    again = host_from_json(json.loads(json.dumps(h.to_json())))
    assert again == h


def test_cpulist():
    assert parse_cpulist("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("") == ()


def test_cuda_visible_devices_order_uuid_and_invalid():
    gpus = [GpuFacts(0, "A", 1, "GPU-aaa"), GpuFacts(1, "B", 1, "GPU-bbb"), GpuFacts(2, "C", 1, "GPU-ccc")]
    notes = []
    assert [g.name for g in filter_visible(gpus, "2,0", notes)] == ["C", "A"]
    assert [g.index for g in filter_visible(gpus, "2,0", notes)] == [0, 1]
    assert [g.name for g in filter_visible(gpus, "GPU-bbb", notes)] == ["B"]
    assert [g.name for g in filter_visible(gpus, "1,7,2", notes)] == ["B"] and notes
    assert filter_visible(gpus, "", []) == ()
    assert len(filter_visible(gpus, None, [])) == 3


def test_nvidia_smi_output_cached_per_boot(tmp_path):
    """A real executable named nvidia-smi; the second gather reads the cache, not the program."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    count = tmp_path / "count"
    smi = bindir / "nvidia-smi"
    used = tmp_path / "used"
    smi.write_text(f"#!/bin/sh\ncase \"$1\" in *memory.used*) echo x >> {used}; echo '0, 0'; echo '1, 512'; exit;; esac\n"
                   f"echo x >> {count}\necho '0, NVIDIA H200, 143771, GPU-abc'\necho '1, NVIDIA H200, 143771, GPU-def'\n")
    smi.chmod(0o755)
    root = tmp_path / "root"
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text("boot-1\n")
    env = {"PATH": str(bindir), "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "GPU-def"}
    for _ in range(2):
        h = gather_host(env=env, root=str(root))
        assert [(g.index, g.uuid, g.memory_bytes, g.used_bytes) for g in h.gpus] == [(0, "GPU-def", 143771 << 20,
                                                                                     512 << 20)]
    assert count.read_text().count("x") == 1
    assert used.read_text().count("x") == 2  # memory.used changes while the host is up: read every time
    (root / "proc/sys/kernel/random/boot_id").write_text("boot-2\n")
    gather_host(env=env, root=str(root))
    assert count.read_text().count("x") == 2


def test_a_gpu_of_zero_mib_from_nvidia_smi_is_left_out():
    """0 MiB sizes nothing (the memory fit divided by it: a TypeError downstream); the line is named."""
    from kt_launch.facts.host import parse_smi

    gpus, bad = parse_smi("0, NVIDIA H200, 0, GPU-a\n1, NVIDIA H200, 143771, GPU-b\n")
    assert [g.index for g in gpus] == [1] and "has memory size 0" in bad
