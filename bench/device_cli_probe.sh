#!/usr/bin/env bash
# `kt-launch probe` through the real CLI on the AMX device machine, DeepSeek-V2-Lite layer shape.
# Carried: .device/site (kt_kernel + kt_kernel.libs + gguf of the cp312 wheel) and .whl (pydantic & co).
# Usage there: bash bench/device_cli_probe.sh   (PY=python to use another interpreter)
set -u
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD/.device/site:/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
W=$(mktemp -d)
mkdir -p "$W/v2lite"
cat > "$W/v2lite/config.json" <<'JSON'
{"model_type": "deepseek_v2", "hidden_size": 2048, "moe_intermediate_size": 1408, "n_routed_experts": 64,
 "num_experts_per_tok": 6, "num_hidden_layers": 27, "first_k_dense_replace": 1, "moe_layer_freq": 1,
 "torch_dtype": "bfloat16"}
JSON
cat > "$W/plain.yaml" <<YAML
model: {path: $W/v2lite}
kt: {weight_path: $W/v2lite, method: AMXINT8}
server: {chunked_prefill_size: 4096}
runtime: {flavor: sglang-kt}
YAML
cat > "$W/lora.yaml" <<YAML
model: {path: $W/v2lite}
moe_lora: {path: $W/moe_lora.pt, rank: 8, alpha: 16.0, sft_method: AMXBF16_SFT}
server: {chunked_prefill_size: 4096}
runtime: {flavor: kt-moe-lora}
YAML
$PY -m kt_launch doctor | grep -E "cpu:|KT-I501|verdict"
probe() { echo "== kt-launch probe $*"; $PY -m kt_launch probe --python "$PY" --prefill-qlen 1024 "$@"; echo "exit $?"; }
probe --profile "$W/plain.yaml"
probe --profile "$W/plain.yaml" --set kt.method=AMXINT4
probe --profile "$W/lora.yaml"
probe --profile "$W/lora.yaml" --set moe_lora.sft_method=AMXINT8_SFT --set kt.weight_path=$W/v2lite
echo "== runtime.env forces the avx2 variant (no AMX INT8 kernel): expect KT-E402, exit 3"
cat >> "$W/avx2.yaml" <<YAML
model: {path: $W/v2lite}
kt: {weight_path: $W/v2lite, method: AMXINT8}
runtime: {flavor: sglang-kt, env: {KT_KERNEL_CPU_VARIANT: avx2}}
YAML
probe --profile "$W/avx2.yaml"
