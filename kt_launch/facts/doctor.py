"""What `kt-launch doctor` reads about this machine beyond HostFacts: where sglang and kt_kernel would be
imported from (without importing them), their distributions, NUMA balancing and the CPU-variant override."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Mapping

from kt_launch.core.local import OVERRIDE_ENV, LocalFacts


def _origin(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)  # never imports the package itself
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    return spec.origin or (list(spec.submodule_search_locations or [""])[0]) or "(namespace package)"


def _dists() -> tuple[tuple[str, str], ...]:
    out = []
    for name in ("sglang-kt", "sglang"):
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            pass
        except Exception:  # broken metadata must not break doctor
            pass
    return tuple(out)


def gather_doctor_facts(environ: Mapping[str, str] | None = None, root: str = "/") -> LocalFacts:
    environ = os.environ if environ is None else environ
    try:
        nb = (Path(root) / "proc/sys/kernel/numa_balancing").read_text().strip()
    except OSError:
        nb = None
    return LocalFacts(
        python=sys.executable,
        sglang_origin=_origin("sglang"),
        sglang_dists=_dists(),
        kt_kernel_origin=_origin("kt_kernel"),
        numa_balancing=nb,
        cpu_variant_override=environ.get(OVERRIDE_ENV),
    )
