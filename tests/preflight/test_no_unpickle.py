"""kt-launch never unpickles a user file: a pickle that would write a file when loaded stays inert."""

from __future__ import annotations

import pickle
import zipfile

from devtools import synthetic
from preflight.support import check, codes, run_cli, write


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # loading this pickle calls open(marker, "w"): the file appears
        return (open, (self.marker, "w"))


def _payload(marker) -> bytes:
    return pickle.dumps(_Evil(str(marker)), protocol=2)


def test_payload_is_live(tmp_path):
    """Control: the payload really writes its marker when someone loads it."""
    marker = tmp_path / "control-marker"
    pickle.loads(_payload(marker)).close()
    assert marker.exists()


def _evil_tree(tmp_path, marker):
    t = tmp_path / "t"
    synthetic.demo(t)
    (t / "moe_lora.pt").unlink()
    with zipfile.ZipFile(t / "moe_lora.pt", "w") as z:  # torch.save layout, malicious data.pkl
        z.writestr("archive/data.pkl", _payload(marker))
        z.writestr("archive/version", "3\n")
    (t / "lora" / "adapter_model_converted.safetensors").write_bytes(_payload(marker))  # raw pickle
    (t / "raw.pt").write_bytes(_payload(marker))
    return t


def test_check_never_loads_the_pickles(tmp_path):
    marker = tmp_path / "PWNED"
    t = _evil_tree(tmp_path, marker)
    for moe in (t / "moe_lora.pt", t / "raw.pt"):
        for flavor in ("kt-moe-lora", "sglang-kt"):
            p, h = write(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"path": str(moe)},
                                                              runtime={"flavor": flavor}))
            for args in (["check", "--profile", str(p), "--host-facts", str(h)],
                         ["--profile", str(p), "--host-facts", str(h), "--dry-run", "--json"]):
                r = run_cli(*args, cwd=tmp_path)
                assert r.returncode == 3, r.stdout + r.stderr
                assert "Traceback" not in r.stderr
                assert not marker.exists(), f"a pickle was loaded by: kt-launch {' '.join(args)}"
    rc, doc, _ = check(tmp_path, synthetic.moe_lora_profile(t))
    assert "KT-E206" in codes(doc, "error")  # the pickle in the LoRA dir is named, not loaded
    assert not marker.exists()
