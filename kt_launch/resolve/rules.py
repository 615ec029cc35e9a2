"""The table of check rules run after the values are resolved. Each entry: (inp, values) -> findings."""

from __future__ import annotations

from kt_launch.resolve import preflight as p
from kt_launch.resolve.install import check_install
from kt_launch.resolve.launch import check_local_launch
from kt_launch.resolve import preflight_weights as w
from kt_launch.resolve.flavor_rules import RULES as FLAVOR

PREFLIGHT = (p.check_gathering, p.check_moe_lora_format, p.check_expert_coverage, p.check_lora_dirs, w.check_model_dir,
             w.check_base_weights, w.check_weight_dir, w.check_isa, w.check_kernel_shape, w.check_gpus, w.check_port)

ALL: tuple = (*FLAVOR, *PREFLIGHT, check_local_launch, check_install)
