"""doctor: verdicts from literal facts (pure), exit 0/3, --json keeps the host-facts format plus findings."""

import copy
import json

import pytest

from kt_launch.cli import main
from kt_launch.core.local import LocalFacts
from kt_launch.resolve.doctor_verdicts import doctor_findings
from kt_launch.facts.host import HostFacts, load_host_facts, host_from_json
from kt_launch.resolve.isa import choose_variant, detect_variant
from operate.support import HOST, write_host

AMX = ["amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "avx2"]



def host_with(flags=None, gpus=None, total=64 << 30, avail=60 << 30) -> HostFacts:
    doc = copy.deepcopy(HOST)
    if flags is not None:
        doc["cpu"]["flags"] = flags
    if gpus is not None:
        doc["gpus"] = gpus
    doc["memory"] = {"total_bytes": total, "available_bytes": avail}
    return host_from_json(doc)


LOCAL_OK = LocalFacts(python="/py", sglang_origin="/site/sglang/__init__.py", sglang_dists=(("sglang-kt", "0.7.2"),),
                      kt_kernel_origin="/site/kt_kernel/__init__.py", numa_balancing="0")


def codes(findings, level=None):
    return {f.code for f in findings if level is None or f.level == level}


# -- kt-kernel variant rules (reference §5) --------------------------------------------------------

@pytest.mark.parametrize("flags,variant", [
    (AMX, "amx"),
    (["avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "avx2"], "avx512_bf16"),
    (["avx512f", "avx512bw", "avx512vnni", "avx512vbmi", "avx2"], "avx512_vbmi"),  # underscores optional
    (["avx512f", "avx512bw", "avx512_vnni", "avx2"], "avx512_vnni"),
    (["avx512f", "avx512bw", "avx2"], "avx512_base"),
    (["avx512f", "avx2"], "avx2"),
    (["AVX2"], "avx2"),
    ([], "avx2"),  # also the fallback
    (["amx_tile", "amx_int8", "amx_bf16", "avx2"], "avx2"),  # AMX without AVX-512 is not the amx variant
])
def test_variant_detection(flags, variant):
    assert detect_variant(flags) == variant


def test_override_rules():
    c = choose_variant(["avx2"], "avx512")  # the documented value kt-kernel ignores
    assert c.variant == "avx2" and c.override_ignored == "avx512" and c.override is None
    c = choose_variant(["avx2"], "AMX")  # valid name, bypasses the hardware check
    assert c.variant == "amx" and c.override == "amx" and "amx_tile" in c.missing
    c = choose_variant(AMX, "avx2")
    assert c.variant == "avx2" and not c.missing and c.detected == "amx"


# -- verdicts ----------------------------------------------------------------------------------------

def test_good_host_has_no_warnings_or_errors():
    f = doctor_findings(host_with(AMX), LOCAL_OK)
    assert codes(f, "error") == set() and codes(f, "warning") == set()
    assert any(x.code == "KT-I501" and "amx" in x.message for x in f)
    assert any(x.code == "KT-I502" and "sglang-kt 0.7.2" in x.message for x in f)


def test_no_avx2_is_an_error():
    assert "KT-E501" in codes(doctor_findings(host_with(["sse4_2"]), LOCAL_OK), "error")


def test_avx2_only_is_a_warning():
    assert "KT-W503" in codes(doctor_findings(host_with(["avx2", "fma"]), LOCAL_OK), "warning")


def test_override_the_cpu_cannot_run_is_an_error_and_an_ignored_one_a_warning():
    bad = LocalFacts(**{**LOCAL_OK.__dict__, "cpu_variant_override": "amx"})
    assert "KT-E241" in codes(doctor_findings(host_with(["avx2"]), bad), "error")
    ignored = LocalFacts(**{**LOCAL_OK.__dict__, "cpu_variant_override": "avx512"})
    assert "KT-W241" in codes(doctor_findings(host_with(AMX), ignored), "warning")


def test_numa_balancing_on_is_a_warning_with_the_sysctl_fix():
    local = LocalFacts(**{**LOCAL_OK.__dict__, "numa_balancing": "1"})
    f = [x for x in doctor_findings(host_with(AMX), local) if x.code == "KT-W506"]
    assert f and f[0].level == "warning" and f[0].fix == "sysctl kernel.numa_balancing=0"


def test_no_sglang_no_gpu_little_memory_are_warnings():
    local = LocalFacts(python="/py", sglang_origin="", kt_kernel_origin="", numa_balancing="0")
    f = doctor_findings(host_with(AMX, gpus=[], total=16 << 30, avail=15 << 30), local)
    assert {"KT-W504", "KT-W505", "KT-W509", "KT-W507"} <= codes(f, "warning")
    assert codes(f, "error") == set()


def test_recorded_host_skips_this_machine_checks():
    f = doctor_findings(host_with(AMX), None)
    assert not codes(f) & {"KT-W504", "KT-I502", "KT-W506", "KT-I504"}


def test_errors_come_first():
    f = doctor_findings(host_with(["sse"], gpus=[]), LOCAL_OK)
    assert [x.level for x in f] == sorted((x.level for x in f), key=["error", "warning", "info"].index)


# -- CLI ---------------------------------------------------------------------------------------------

def test_doctor_json_is_host_facts_plus_findings_and_round_trips(tmp_path, capsys):
    rc = main(["doctor", "--json", "--host-facts", str(write_host(tmp_path))])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert rc == 0
    assert {"cpu", "numa", "memory", "gpus", "findings"} <= set(doc)
    assert all({"level", "code", "message", "fix"} == set(f) for f in doc["findings"])
    assert all(f["code"][:4] in ("KT-E", "KT-W", "KT-I") and f["code"][4] == "5" for f in doc["findings"])
    again = tmp_path / "again.json"
    again.write_text(out)
    assert load_host_facts(again).to_json() == load_host_facts(tmp_path / "host.json").to_json()  # a --host-facts file


def test_doctor_exits_3_on_errors(tmp_path, capsys):
    doc = copy.deepcopy(HOST)
    doc["cpu"]["flags"] = ["sse4_2"]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc))
    assert main(["doctor", "--host-facts", str(p)]) == 3
    out = capsys.readouterr().out
    assert "KT-E501" in out and "verdict: FAIL" in out
    assert main(["doctor", "--json", "--host-facts", str(p)]) == 3


def test_doctor_on_this_machine_never_crashes(capsys):
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert rc in (0, 3)
    assert "verdict:" in out and any(c in out for c in ("KT-I501", "KT-W501", "KT-W503", "KT-E501", "KT-E241"))
    assert main(["doctor", "--json"]) in (0, 3)
    assert "findings" in json.loads(capsys.readouterr().out)


def test_doctor_bad_host_facts_file_is_exit_2(tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    assert main(["doctor", "--host-facts", str(p)]) == 2
    assert str(p) in capsys.readouterr().err
