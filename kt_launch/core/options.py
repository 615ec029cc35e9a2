"""The option registry: every profile key, declared once.

Each `Option` says what a user may write (type, default, limits, help), how the resolver fills it
(passed through when set, or derived by the resolver step that declares it), and how it reaches SGLang on every flavour:
a flag, an environment variable, a value some other flag already carries, or a refusal that names
the flavour which can take it. The pydantic profile model (core/profile.py), render's flag table,
`kt-launch schema`, the README's key table and the no-drop property tests all read this table, so
a key cannot be accepted and then silently left out of the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Union

FLAVORS = ("sglang-kt", "sglang", "kt-moe-lora")
from kt_launch.core.methods import MOE_LORA_SFT_METHODS  # noqa: E402  (the method table)
from kt_launch.core.key_checks import distinct, fleet_hosts, gpu_ids  # noqa: E402  (Option.checks)
from kt_launch.core.placement import CHOICES as PLACEMENT_CHOICES  # noqa: E402  (kt.expert_placement)


# -- how a value reaches SGLang ---------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """A command-line flag. `names` may be several (upstream splits --disable-cuda-graph in two).
    Booleans are switches (present when true); lists are `--flag a b`. `omit_derived`: not passed
    when kt-launch derived the value (the flavour then derives it the same way itself). When the installed
    parser lacks the flag, a value kt-launch derived is left out (KT-I305), a user's value is an error."""

    names: tuple[str, ...]
    omit_derived: bool = False
    since: str = ""  # the release that added it, where older installed parsers lack it (named in the finding)

    def __init__(self, *names: str, omit_derived: bool = False, since: str = ""):
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "omit_derived", omit_derived)
        object.__setattr__(self, "since", since)


@dataclass(frozen=True)
class EnvVar:
    """An environment variable of the server process."""

    name: str


@dataclass(frozen=True)
class Carried:
    """No flag of its own: another flag or file carries it on this flavour (`why` says which).
    A user value is then an info finding naming the key, never a silent drop."""

    why: str


@dataclass(frozen=True)
class Refuse:
    """This flavour cannot express it: an error finding naming the key, `why`, and `fix` (the flavour that can;
    empty: remove the key). `user_only`: a value kt-launch derived itself is left to the flavour's own default."""

    why: str
    user_only: bool = False
    fix: str = ""


@dataclass(frozen=True)
class Special:
    """Consumed by the renderer itself (argv[0], the flavour choice, appended or environment items)."""

    why: str


Render = Union[Flag, EnvVar, Carried, Refuse, Special]


# -- how the resolver fills a value ------------------------------------------------------------

PASS = "pass"  # the user's value (or the default) as it is
# Filled by the resolver step that declares it in its `fills` (resolve/steps.py); the plan gives the reason.
DERIVED = "derived"


@dataclass(frozen=True)
class Option:
    key: str  # "section.name"
    type: Any  # the Python type (without None); Literal[...] for choices
    help: str
    render: Mapping[str, Render]  # flavour -> how it reaches SGLang; every flavour answers
    default: Any = None
    nullable: bool = True
    required: bool = False
    limits: Mapping[str, Any] = field(default_factory=dict)  # pydantic Field constraints: ge, le, gt, ...
    resolve: str = PASS
    settable: bool = True  # False: only the resolver sets it (plan-only keys that still render)
    secret: bool = False
    tokens: bool = False  # a token count: text may say 32K, 32k, 1.5k, 1M as vLLM users type it (core/profile.py)
    upper: bool = False  # upper-cased as read: kt-kernel compares the name case-sensitively (core/profile.py)
    checks: tuple[Callable[[Any], Any], ...] = ()  # checks beyond the type, in order (core/key_checks.py)
    replica_scope: str | None = None  # how a fleet replica gets it (REPLICA_SCOPES; resolve/fleet.py); None: as is
    plan_only: bool = False  # no profile key and no flag: a value a step records for the plan's text (not settable)

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


def on_all(spec: Render) -> dict[str, Render]:
    return {f: spec for f in FLAVORS}


def only(flavor: str, spec: Render, why_not: str) -> dict[str, Render]:
    """A value only `flavor` can express; the others refuse a user's value and name `flavor`. A value kt-launch
    derived itself is left to the other flavours' own default (a derived flag never blocks a plan)."""
    return {f: spec if f == flavor else Refuse(why_not, user_only=True, fix=f"use runtime.flavor: {flavor}")
            for f in FLAVORS}


_NO_MOE_LORA = Refuse("upstream sglang has no MoE-expert LoRA",
                      fix="use runtime.flavor: sglang-kt (--kt-expert-lora-path) or kt-moe-lora")


def _moe_lora(kt_moe_lora: Render, sglang_kt: Render) -> dict[str, Render]:
    return {"kt-moe-lora": kt_moe_lora, "sglang-kt": sglang_kt, "sglang": _NO_MOE_LORA}


# How a fleet replica gets a key (Option.replica_scope; resolve/fleet.py reads it). One rule per scope:
REPLICA_SCOPES = {
    # each replica's own steps derive it on the replica's host view; a host-wide user value is cleared for every
    # replica and named (KT-W712): a value for the whole machine has no per-replica meaning
    "derived": "each replica derives its own from its NUMA node(s); a user value is cleared (KT-W712)",
    # the fleet's layout sets it for each replica; a user value is the fleet's input (the base port, the address,
    # the GPUs the fleet may use), never passed to a replica as it is
    "layout": "the fleet's layout sets each replica's; a user value is the fleet's input",
    # a user value holds for each replica as it is; unset, the layout sets it (server.tp_size: the replica's GPUs)
    "per-replica": "a user value holds for each replica; unset, the fleet's layout sets it",
}

# Sections, in profile order; `optional` sections are absent (None) unless written.
SECTIONS: dict[str, dict[str, Any]] = {
    "model": {"help": "The HuggingFace model.", "optional": False},
    "kt": {"help": "kt-kernel: CPU experts, threads, GPU experts.", "optional": False},
    "moe_lora": {"help": "MoE-expert LoRA (SFT mode); absent = off.", "optional": True},
    "lora": {"help": "Ordinary LoRA adapters.", "optional": False},
    "server": {"help": "The SGLang server.", "optional": False},
    "fit": {"help": "The memory plan: what kt.num_gpu_experts: null leaves room for.", "optional": False},
    "runtime": {"help": "Interpreter, flavour and environment of the server process.", "optional": False},
    "fleet": {"help": "Several kt instances (one per NUMA node, or per host) behind the SGLang router; absent = one "
                      "instance.", "optional": True},
}

ROUTER_POLICIES = ("cache_aware", "round_robin", "power_of_two", "random")  # sglang-router 0.3.2 --policy choices
# One instance's command has no flag for these: the fleet plan (render/fleet.py) consumes them. Carried, so a
# single-instance rendering that meets one names it (KT-I303) instead of dropping it silently.
_FLEET = on_all(Carried("the fleet plan uses it (one server per replica and the router in front: kt-launch "
                        "--dry-run with the fleet section); one instance's command has no flag for it"))

# A plan-only value (Option.plan_only): what a step records for the plan's text; nothing reaches SGLang.
_PLAN_ONLY = on_all(Special("the plan's text only: a fact a step records, no flag"))

# Upper bounds of every count (issue 18): far above any real machine or model, low enough that arithmetic on them
# (the memory fit's floats) cannot overflow; a 400-digit count is refused naming its key, not an OverflowError.
MAX_THREADS = 1 << 16  # CPU threads
MAX_NUMA_NODES = 1024  # Linux MAX_NUMNODES
MAX_GPUS = 1024
MAX_EXPERTS = 1 << 16  # routed experts per layer
MAX_TOKENS = (1 << 31) - 1  # SGLang keeps token counts in int32 tensors
MAX_RANK = 1 << 16
MAX_ALPHA = 1e6
MAX_REPLICAS = 4096
MAX_GPU_MIB = 1 << 24  # 16 TiB per GPU

OPTIONS: tuple[Option, ...] = (
    Option("model.path", str, "HuggingFace model directory (config.json, safetensors).", on_all(Flag("--model-path")),
           nullable=False, required=True),
    Option("model.served_name", str, "Name clients use.", on_all(Flag("--served-model-name"))),

    Option("model.shape", str, "The MoE shape read from config.json (layers, experts, top-k).", _PLAN_ONLY,
           settable=False, plan_only=True, resolve=DERIVED),

    Option("kt.weight_path", str, "CPU expert weights (converted AMX dir, or the HF dir for BF16/FP8/RAWINT4).",
           on_all(Flag("--kt-weight-path")), resolve=DERIVED),
    Option("kt.method", str, "kt-kernel method: AMXINT4, AMXINT8, BF16, FP8, RAWINT4, LLAMAFILE, ... (any case).",
           {"sglang-kt": Flag("--kt-method"), "sglang": Flag("--kt-method"),
            "kt-moe-lora": Flag("--kt-method", omit_derived=True)}, resolve=DERIVED, upper=True),
    Option("kt.cpuinfer", int, "CPU expert threads; null = usable physical cores minus a reserve, or the tuned value.",
           on_all(Flag("--kt-cpuinfer")), limits={"ge": 1, "le": MAX_THREADS}, resolve=DERIVED,
           replica_scope="derived"),
    Option("kt.threadpool_count", int, "Thread pools; null = NUMA nodes that have usable CPUs.",
           on_all(Flag("--kt-threadpool-count")), limits={"ge": 1, "le": MAX_NUMA_NODES}, resolve=DERIVED,
           replica_scope="derived"),
    Option("kt.numa_nodes", list[int], "NUMA node id per thread pool; null = those nodes' ids.",
           {"sglang-kt": Flag("--kt-numa-nodes"),
            "sglang": Refuse("upstream sglang has no --kt-numa-nodes (pool i runs on node i)", user_only=True,
                             fix="use runtime.flavor: sglang-kt"),
            "kt-moe-lora": Refuse("the kt-moe-lora fork has no --kt-numa-nodes", user_only=True,
                                  fix="use runtime.flavor: sglang-kt")},
           limits={"item_ge": 0, "item_le": MAX_NUMA_NODES - 1}, resolve=DERIVED, checks=(distinct,),
           replica_scope="derived"),
    Option("kt.num_gpu_experts", int, "Routed experts per MoE layer kept on the GPU; null = the memory fit "
           "(0 in MoE-LoRA mode or without GPU facts). Always passed: unset, sglang-kt turns kt-kernel off.",
           on_all(Flag("--kt-num-gpu-experts")), limits={"ge": 0, "le": MAX_EXPERTS}, resolve=DERIVED),
    Option("kt.gpu_experts_ratio", float, "Share of all routed experts on the GPU; overrides kt.num_gpu_experts "
           "in sglang-kt (kt_ep_wrapper._init_kt_gpu_experts_masks).",
           only("sglang-kt", Flag("--kt-gpu-experts-ratio"), "only sglang-kt has --kt-gpu-experts-ratio"),
           limits={"ge": 0.0, "le": 1.0}, resolve=DERIVED),
    Option("kt.expert_placement", Literal[PLACEMENT_CHOICES], "Which experts go to the GPU: uniform (sglang-kt's "
           "default, though its help says frequency), frequency (the most-routed experts by recorded counts: needs "
           "kt.expert_stats or a `kt-launch calibrate` of this model), front-loading, random, or auto (frequency "
           "when this model has a calibration or kt.expert_stats is set, else uniform); null = sglang-kt's default.",
           only("sglang-kt", Flag("--kt-expert-placement-strategy"), "only sglang-kt places GPU experts by strategy"),
           resolve=DERIVED),
    Option("kt.expert_stats", str, "Expert activation counts for frequency placement: a .pt the SGLang "
           "expert-distribution recorder wrote ([buffer, layers, experts]), or a workload name of `kt-launch "
           "calibrate` for this model; checked in runtime.python before launch.",
           only("sglang-kt", Flag("--init-expert-location"), "only sglang-kt reads expert stats for placement"),
           resolve=DERIVED),
    Option("kt.max_deferred_experts_per_token", int, "Experts per token deferred to the CPU (all MoE layers but the "
           "last).", on_all(Flag("--kt-max-deferred-experts-per-token")), limits={"ge": 0, "le": MAX_EXPERTS}),
    Option("kt.gpu_prefill_token_threshold", int, "Prompt length above which sglang-kt runs the whole MoE layer on "
           "the GPU (layerwise prefill).",
           only("sglang-kt", Flag("--kt-gpu-prefill-token-threshold"), "only sglang-kt has layerwise GPU prefill"),
           limits={"ge": 0, "le": MAX_TOKENS}, tokens=True),
    Option("kt.enable_dynamic_expert_update", bool, "Re-pick GPU experts from runtime statistics.",
           only("sglang-kt", Flag("--kt-enable-dynamic-expert-update"), "only sglang-kt updates GPU experts at run time"),
           default=False, nullable=False),

    Option("moe_lora.path", str, "MoE-expert LoRA: the converted .pt (kt-moe-lora) or the expert adapter dir "
           "(sglang-kt).", _moe_lora(Flag("--kt-moe-lora-path"), Flag("--kt-expert-lora-path")),
           nullable=False, required=True),
    Option("moe_lora.rank", int, "LoRA rank; null = `r` from adapter_config.json.",
           _moe_lora(Flag("--kt-moe-lora-rank"), Carried("sglang-kt reads the rank from the adapter dir's "
                                                        "adapter_config.json; kt-launch checks that they agree")),
           limits={"ge": 1, "le": MAX_RANK}, resolve=DERIVED),
    Option("moe_lora.alpha", float, "LoRA alpha; null = `lora_alpha` from adapter_config.json.",
           _moe_lora(Flag("--kt-moe-lora-alpha"), Carried("sglang-kt reads lora_alpha from the adapter dir's "
                                                         "adapter_config.json; kt-launch checks that they agree")),
           limits={"gt": 0, "le": MAX_ALPHA, "allow_inf_nan": False}, resolve=DERIVED),
    Option("moe_lora.sft_method", Literal[MOE_LORA_SFT_METHODS], "kt-kernel SFT method of the expert LoRA.",
           _moe_lora(Flag("--kt-moe-sft-method"), Carried("sglang-kt takes the SFT method from --kt-method")),
           default="AMXBF16_SFT", nullable=False, resolve=DERIVED, upper=True),

    Option("moe_lora.base_weights", str, "Where the SFT wrapper reads the base experts in MoE-LoRA mode.",
           _PLAN_ONLY, settable=False, plan_only=True, resolve=DERIVED),
    Option("lora.paths", list[Union[str, "NamedLora"]], "Ordinary LoRA adapters: paths or {name, path}.",
           on_all(Flag("--lora-paths")), default=(), nullable=False, resolve=DERIVED),

    Option("server.host", str, "Address to listen on.", on_all(Flag("--host")), default="127.0.0.1", nullable=False,
           replica_scope="layout"),
    Option("server.port", int, "Port to listen on.", on_all(Flag("--port")), default=30000, nullable=False,
           limits={"ge": 1, "le": 65535}, replica_scope="layout"),
    Option("server.tp_size", int, "Tensor-parallel GPUs; null = 1.", on_all(Flag("--tp-size")),
           limits={"ge": 1, "le": MAX_GPUS},
           resolve=DERIVED, replica_scope="per-replica"),
    Option("server.disable_cuda_graph", bool, "null = off in MoE-LoRA mode, else SGLang's default.",
           {"sglang-kt": Flag("--disable-cuda-graph"), "kt-moe-lora": Flag("--disable-cuda-graph"),
            "sglang": Flag("--disable-decode-cuda-graph", "--disable-prefill-cuda-graph")},
           resolve=DERIVED),
    Option("server.chunked_prefill_size", int, "Tokens per prefill chunk; also sizes kt-kernel's buffers (> 0).",
           on_all(Flag("--chunked-prefill-size")), limits={"le": MAX_TOKENS}, tokens=True),
    Option("server.max_running_requests", int, "Concurrent requests.", on_all(Flag("--max-running-requests")),
           limits={"ge": 1, "le": MAX_TOKENS}),
    Option("server.mem_fraction_static", float, "Share of GPU memory for weights and the KV pool.",
           on_all(Flag("--mem-fraction-static")), limits={"gt": 0, "le": 1}),
    Option("server.max_total_tokens", int, "KV-cache pool size in tokens; null = the KV tokens the memory plan "
           "leaves, passed when the fit chose kt.num_gpu_experts (else SGLang's pool takes what is left).",
           on_all(Flag("--max-total-tokens")), limits={"ge": 1, "le": MAX_TOKENS}, tokens=True, resolve=DERIVED),
    Option("server.api_key", str, "API key clients must send; *** in every output.", on_all(Flag("--api-key")),
           secret=True),
    Option("server.smoke", Literal["off", "warn", "on"], "With --supervise: the smoke test once /health answers "
           "(README: Smoke test): on = stop the server and exit 4 when a request fails, warn = a warning and keep "
           "serving, off = no requests; --smoke beats it.",
           on_all(Carried("kt-launch's --supervise reads it for the smoke test after the start; SGLang has no flag "
                          "for it")), default="on", nullable=False),
    Option("server.extra_args", list[str], "More SGLang flags, passed through verbatim (checked against the "
           "installed parser).", on_all(Special("appended after the generated flags")), default=(), nullable=False),
    Option("server.lora_backend", str, "Derived: the LoRA backend sglang-kt expert LoRA needs.",
           {"sglang-kt": Flag("--lora-backend"), "sglang": Flag("--lora-backend"),
            "kt-moe-lora": Refuse("the kt-moe-lora fork has no --lora-backend")}, settable=False,
           resolve=DERIVED),
    Option("server.disable_custom_all_reduce", bool, "Derived: sglang-kt expert LoRA disables custom all-reduce.",
           {"sglang-kt": Flag("--disable-custom-all-reduce"), "sglang": Flag("--disable-custom-all-reduce"),
            "kt-moe-lora": Refuse("the kt-moe-lora fork has no --disable-custom-all-reduce")}, settable=False,
           resolve=DERIVED),
    Option("server.disable_shared_experts_fusion", bool, "Derived: upstream sglang does not turn shared-expert "
           "fusion off for kt-kernel by itself.", on_all(Flag("--disable-shared-experts-fusion")), settable=False,
           resolve=DERIVED),

    Option("fit.kv_tokens", int, "KV-cache tokens the memory fit keeps room for on every GPU when "
           "server.max_total_tokens is unset (default 32768: one 32k-token request, or several shorter ones).",
           on_all(Special("memory plan only")), default=32768, nullable=False, limits={"ge": 1, "le": MAX_TOKENS},
           tokens=True),
    Option("fit.gpu_margin_mib", int, "MiB the memory fit keeps free on every GPU beyond SGLang's own reserve "
           "(like llama.cpp's --fit-target; default 0: SGLang's reserve already covers activations).",
           on_all(Special("memory plan only")), default=0, nullable=False, limits={"ge": 0, "le": MAX_GPU_MIB}),

    Option("runtime.python", str, "Interpreter that has SGLang; null = the one running kt-launch.",
           on_all(Special("argv[0]")), resolve=DERIVED),
    Option("runtime.flavor", Literal[("auto", *FLAVORS)], "Which SGLang: auto asks the installed one.",
           on_all(Special("chooses the flag table")), default="auto", nullable=False),
    Option("runtime.cuda_visible_devices", str, "GPUs the server sees.", on_all(EnvVar("CUDA_VISIBLE_DEVICES")),
           checks=(gpu_ids,), replica_scope="layout"),
    Option("runtime.env", dict[str, str], "More environment variables for the server (names checked).",
           on_all(Special("added to the server's environment")), default=(), nullable=False),

    Option("fleet.replicas", Union[Literal["per-numa"], int], "Instances on this machine: per-numa = one per NUMA "
           "node with CPUs (null too); N = N instances (N divides the nodes, or each node splits into N/nodes); "
           "0 = none here (router only).", _FLEET, limits={"ge": 0, "le": MAX_REPLICAS}),
    Option("fleet.hosts", list["FleetHost"], "Other machines: {name, address, host_facts, replicas}; their facts "
           "recorded there with `kt-launch doctor --json`. kt-launch runs nothing remotely: it prints the command to "
           "run on each.", _FLEET, default=(), nullable=False, checks=(fleet_hosts,)),
    Option("fleet.router", "FleetRouter", "The SGLang router in front: {port (default server.port), policy "
           "(cache_aware), python (the interpreter with sglang-router; default runtime.python), metrics_port (its "
           "Prometheus port, on server.host; default 29000)}.", _FLEET,
           nullable=False),
    Option("fleet.allow_cpu_only", bool, "Allow replicas on NUMA nodes without a GPU (kt.num_gpu_experts 0 there).",
           _FLEET, default=False, nullable=False),
    Option("fleet.restart", Literal["no", "on-failure"], "With --supervise: on-failure = start a replica that died "
           "on its own again (backoff 1, 2, 4 s; --max-restarts, default 3 in 10 min); --restart beats it.", _FLEET,
           default="no", nullable=False),
)

BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}

# `--kt-*` flags of the real parsers that no profile key renders, and why. A flag a future fork adds
# that is in neither place fails tests/core/test_registry.py until it is placed.
PASS_THROUGH_ONLY: dict[str, str] = {
    "--kt-lora-path": "sglang-kt's experimental static full-KT LoRA for Qwen3.5 non-expert tensors; kt-launch does "
                      "not plan it — pass it after `--` (kt-launch then only checks the flag exists)",
}


def flags_of(flavor: str) -> frozenset[str]:
    """Every flag the registry renders on `flavor` (the static catalogue when SGLang was not inspected)."""
    return frozenset(n for o in OPTIONS for n in getattr(o.render[flavor], "names", ()))


def flavors_with(flag: str) -> list[str]:
    return [f for f in FLAVORS if flag in flags_of(f)]
