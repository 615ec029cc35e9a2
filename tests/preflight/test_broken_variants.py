"""Every broken variant of devtools/synthetic.py ends in its own finding code, exit 3, no traceback, nothing written."""

from __future__ import annotations

import os

import pytest

from devtools import synthetic
from kt_launch.facts import fileid
from preflight.support import check, codes, run_cli, snapshot, write

EXPECTED = {
    "pickle-named-safetensors": "KT-E206",
    "truncated-header": "KT-E207",
    "header-beyond-file": "KT-E208",
    "wrong-numa-count": "KT-E221",
    "missing-layer": "KT-E222",
    "duplicate-basename": "KT-E223",
    "non-utf8-config": "KT-E108",  # the core's config.json finding; its message says "not UTF-8"
    "empty-file": "KT-E204",
    "directory-where-file": "KT-E205",
    "unreadable-file": "KT-E202",
    "symlink-loop": "KT-E203",
}
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def test_every_variant_has_an_expected_code():
    assert set(EXPECTED) == set(synthetic.BROKEN)
    own = [c for c in EXPECTED.values()]
    assert len(own) == len(set(own)), "each broken variant has its own code"


@pytest.mark.parametrize("name", sorted(synthetic.BROKEN))
def test_broken_variant_real_cli(tmp_path, name):
    if name == "unreadable-file" and ROOT:
        pytest.skip("running as root: chmod 000 does not stop root from reading; "
                    "test_unreadable_detected_without_permissions covers the same path")
    root = tmp_path / "t"
    profile = synthetic.BROKEN[name](root)
    p, h = write(tmp_path, profile)
    before = snapshot(tmp_path)
    r = run_cli("check", "--profile", str(p), "--host-facts", str(h), cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert EXPECTED[name] in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert snapshot(tmp_path) == before, "check wrote something"
    if name == "non-utf8-config":
        assert "not UTF-8" in " ".join(r.stdout.split())  # the text wraps to the width


@pytest.mark.parametrize("name", sorted(synthetic.BROKEN))
def test_broken_variant_dry_run_in_process(tmp_path, name, monkeypatch):
    root = tmp_path / "t"
    profile = synthetic.BROKEN[name](root)
    if name == "unreadable-file":  # works as root too: the read itself is refused
        bad = str(root / "moe_lora.pt")
        real = fileid._open

        def refuse(path):
            if os.path.abspath(path) == os.path.abspath(bad):
                raise PermissionError(13, "Permission denied", path)
            return real(path)
        monkeypatch.setattr(fileid, "_open", refuse)
    rc, doc, err = check(tmp_path, profile)
    assert rc == 3
    assert EXPECTED[name] in codes(doc, "error"), doc["findings"]
    assert "Traceback" not in err


def test_unreadable_detected_without_permissions(tmp_path, monkeypatch):
    """As root chmod 000 is readable, so the refusal is simulated at the one place files are opened."""
    p = tmp_path / "x.safetensors"
    synthetic.write_safetensors(p, {"a": ("BF16", (2, 2))})
    monkeypatch.setattr(fileid, "_open", lambda path: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    fid = fileid.identify(p)
    assert fid.kind == "unreadable" and "permission denied" in fid.detail


@pytest.mark.skipif(ROOT, reason="root reads chmod-000 files; covered by the simulated refusal above")
def test_unreadable_chmod_000(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"\x80\x02}q\x00.")
    os.chmod(p, 0)
    try:
        assert fileid.identify(p).kind == "unreadable"
    finally:
        os.chmod(p, 0o644)
