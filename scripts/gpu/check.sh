#!/usr/bin/env bash
# The GPU check: one run on a lent GPU machine (docs/gpus.md), from gpu-carry/ (make-carry.sh).
# Prints: nvidia-smi; the Vulkan loader and ICD used; then the runner's lines (listSupportedBackends,
# the exported AlexNet at batch 1/32/128 on webgpu vs the device's CPU, one training step on webgpu
# vs the CPU provider, training img/s at batch 128 and 256 with the state on the GPU, transfers,
# a profile), and the device's own PyTorch (torchvision AlexNet, SGD momentum, fp32 TF32 off/on).
# Everything it unpacks goes to a temporary folder, removed at the end.
# Knobs: CARRY (gpu-carry), RUNNER_TIMEOUT (330 s), TORCH_BATCH (128), TORCH_SECONDS (15), and the runner's own
# (INFER_BATCHES, STEP_BATCH, TRAIN_BATCHES, TRAIN_SECONDS, PROFILE_STEPS: see runner.cjs).
set -uo pipefail
cd "$(dirname "$0")/../.."
carry=$(cd "${CARRY:-gpu-carry}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/alexnet-stream-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

unxz_to() { # xz may be missing: Python's lzma does the same
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}

echo "== machine: $(hostname) $(date -u +%FT%TZ)"
echo "== nvidia-smi"
nvidia-smi 2>&1 || echo "(nvidia-smi not found)"

echo "== unpacking $carry"
unxz_to "$carry/node.xz" "$work/node" && chmod +x "$work/node"
cp -r "$carry/node_modules" "$work/"
lib=$work/node_modules/onnxruntime-node/bin/napi-v6/linux/x64
unxz_to "$lib/libonnxruntime.so.1.xz" "$lib/libonnxruntime.so.1" && rm -f "$lib/libonnxruntime.so.1.xz"
cp -r "$carry/graphs" "$work/graphs" # the runner writes the weights file beside the model
echo "node $("$work/node" --version)"

echo "== Vulkan"
if ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
  found=$(ldconfig -p | grep -m1 'libvulkan\.so\.1 ' | sed 's/.*=> //')
  echo "loader: this machine has one: $found"
elif [ -d "$carry/vulkan" ]; then
  export LD_LIBRARY_PATH="$carry/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "loader: the carried one, from $(cd "$carry" && ls libvulkan1_*.deb 2>/dev/null)"
else
  echo "loader: none found"
fi
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd; break; fi
  done
fi
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  # No ICD file, but the driver's Vulkan library may be mounted (a container without the
  # graphics capability's files): describe it in an ICD file of our own.
  glx=$(ldconfig -p 2>/dev/null | grep -m1 'libGLX_nvidia\.so\.0 ' | sed 's/.*=> //')
  for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -z "$glx" ] && [ -e "$d/libGLX_nvidia.so.0" ] && glx=$d/libGLX_nvidia.so.0
  done
  if [ -n "$glx" ]; then
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$glx" > "$work/nvidia_icd.json"
    export VK_DRIVER_FILES=$work/nvidia_icd.json VK_ICD_FILENAMES=$work/nvidia_icd.json
  fi
fi
echo "ICD: ${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-the default search of the loader}}"
[ -n "${VK_DRIVER_FILES:-}" ] && cat "$VK_DRIVER_FILES" | tr -d '\n' && echo

echo "== runner (onnxruntime-node webgpu)"
ORT_NODE_DIR="$work/node_modules/onnxruntime-node" timeout "${RUNNER_TIMEOUT:-330}" "$work/node" scripts/gpu/runner.cjs "$work/graphs" 2>&1 | grep --line-buffered -v '^Warning: maxDynamic'
echo "runner exit: ${PIPESTATUS[0]}"

echo "== PyTorch anchor (the device's own)"
py=
for candidate in python3 /usr/bin/python3 /opt/conda/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' 2>/dev/null; then py=$candidate; break; fi
done
if [ -n "$py" ]; then
  timeout 150 "$py" scripts/gpu/torch_anchor.py --batch "${TORCH_BATCH:-128}" --seconds "${TORCH_SECONDS:-15}" 2>&1 | tail -n 4
else
  echo "(no PyTorch for python3 on this machine: no anchor in this run)"
fi
echo "== done in $(( $(date +%s) - started )) s"
