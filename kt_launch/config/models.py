"""The profile schema: what a user may write in a YAML profile, env var or `--set`.

Keys are a contract (see README). Unknown keys are errors (extra="forbid"). Nothing here is
resolved: `None` means "let the resolver decide" and the plan says how it decided.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SFT_METHODS = ("AMXBF16_SFT", "AMXINT8_SFT", "AMXINT4_SFT")
FLAVORS = ("auto", "sglang-kt", "sglang", "kt-moe-lora")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSection(Section):
    path: str = Field(description="HuggingFace model directory (--model-path).")
    served_name: str | None = Field(None, description="Name clients use (--served-model-name).")


class KtSection(Section):
    weight_path: str | None = Field(None, description="CPU expert weights (--kt-weight-path).")
    method: str | None = Field(None, description="kt-kernel method, e.g. AMXINT4, AMXINT8, BF16, FP8, RAWINT4, LLAMAFILE.")
    cpuinfer: int | None = Field(None, ge=1, description="CPU expert threads; null = from the host's usable physical cores.")
    threadpool_count: int | None = Field(None, ge=1, description="Thread pools; null = NUMA nodes that have CPUs.")
    numa_nodes: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="NUMA node id per thread pool.")
    num_gpu_experts: int | None = Field(None, ge=0, description="Experts per MoE layer kept on the GPU; null = 0 in MoE-LoRA mode.")
    gpu_experts_ratio: float | None = Field(None, ge=0.0, le=1.0, description="sglang-kt only: share of all experts on the GPU.")
    max_deferred_experts_per_token: int | None = Field(None, ge=0)
    gpu_prefill_token_threshold: int | None = Field(None, ge=0, description="sglang-kt only.")
    enable_dynamic_expert_update: bool = Field(False, description="sglang-kt only.")

    @field_validator("method")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return v.strip().upper() if isinstance(v, str) else v


class MoeLoraSection(Section):
    path: str = Field(description="MoE-expert LoRA: the converted .pt (kt-moe-lora) or expert adapter dir (sglang-kt).")
    rank: int | None = Field(None, ge=1, description="null = `r` from adapter_config.json.")
    alpha: float | None = Field(None, gt=0, allow_inf_nan=False, description="null = `lora_alpha` from adapter_config.json.")
    sft_method: Literal["AMXBF16_SFT", "AMXINT8_SFT", "AMXINT4_SFT"] = "AMXBF16_SFT"

    @field_validator("sft_method", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.strip().upper() if isinstance(v, str) else v


class NamedLora(Section):
    name: str
    path: str


class LoraSection(Section):
    paths: list[Union[str, NamedLora]] = Field(default_factory=list, description="Ordinary LoRA adapters (--lora-paths).")


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(30000, ge=1, le=65535)
    tp_size: int | None = Field(None, ge=1, description="null = 1.")
    disable_cuda_graph: bool | None = Field(None, description="null = on in MoE-LoRA mode, else SGLang's default.")
    chunked_prefill_size: int | None = Field(None, description="Also sizes kt-kernel's buffers; must be > 0.")
    max_running_requests: int | None = Field(None, ge=1)
    mem_fraction_static: float | None = Field(None, gt=0, le=1)
    api_key: str | None = Field(None, description="Shown as *** in every output.")
    extra_args: list[str] = Field(default_factory=list, description="More SGLang flags, passed through verbatim.")


class RuntimeSection(Section):
    python: str | None = Field(None, description="Interpreter that has sglang; null = the current one.")
    flavor: Literal["auto", "sglang-kt", "sglang", "kt-moe-lora"] = "auto"
    cuda_visible_devices: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


class UserConfig(BaseSettings):
    """A whole profile. Sources and their precedence live in `kt_launch.config.sources`."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="KT_LAUNCH_", env_nested_delimiter="__",
                                      validate_default=True)

    model: ModelSection
    kt: KtSection = Field(default_factory=KtSection)
    moe_lora: MoeLoraSection | None = Field(None, description="MoE-expert LoRA (SFT mode); absent = off.")
    lora: LoraSection = Field(default_factory=LoraSection)
    server: ServerSection = Field(default_factory=ServerSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
