#!/usr/bin/env bash
# Builds gpu-carry/ (git-ignored), everything the GPU check (scripts/gpu/check.sh) needs on a lent
# GPU machine that has no network and no Node, within the device tool's 64 MiB for the working
# tree and carried paths together:
#   node.xz                      this machine's Node binary, xz-compressed
#   node_modules/onnxruntime-node, onnxruntime-common
#                                the linux-x64 files only (dist/, the binding, libonnxruntime.so.1.xz)
#   vulkan/                      the Vulkan loader (libvulkan1 from Debian, `apt-get download`,
#                                unpacked with `dpkg -x`), used only where the GPU machine has none
#   graphs/                      the graphs and meta.json of make-graphs.mjs (weights are generated
#                                on the device)
# The runner (scripts/gpu/runner.cjs) and the PyTorch anchor travel with the working tree.
# Usage: bash scripts/gpu/make-carry.sh   (after npm ci; prints the folder's size)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=gpu-carry
limit_mib=64
rm -rf "$out"
mkdir -p "$out"
[ -f libs/trainer-multigpu/dist/graph/rules.js ] || npm run build

node scripts/gpu/make-graphs.mjs "$out/graphs"

echo "make-carry: compressing node ($(node --version)) and onnxruntime-node" >&2
xz -T2 -6 -c "$(command -v node)" > "$out/node.xz"
ort=node_modules/onnxruntime-node
common=node_modules/onnxruntime-common
bin=bin/napi-v6/linux/x64
mkdir -p "$out/$ort/$bin" "$out/$common/dist"
cp "$ort/package.json" "$out/$ort/"
cp -r "$ort/dist" "$out/$ort/"
cp "$ort/$bin/onnxruntime_binding.node" "$out/$ort/$bin/"
xz -T2 -6 -c "$ort/$bin/libonnxruntime.so.1" > "$out/$ort/$bin/libonnxruntime.so.1.xz"
cp "$common/package.json" "$out/$common/"
cp -r "$common/dist/cjs" "$out/$common/dist/"

echo "make-carry: the Vulkan loader (libvulkan1)" >&2
deb_dir=$(mktemp -d)
if (cd "$deb_dir" && apt-get download libvulkan1 >/dev/null 2>&1); then
  dpkg -x "$deb_dir"/libvulkan1_*.deb "$out/vulkan"
  cp "$deb_dir"/libvulkan1_*.deb "$out/"
else
  echo "make-carry: warning: apt-get download libvulkan1 failed; the check relies on the GPU machine's own libvulkan.so.1" >&2
fi
rm -rf "$deb_dir"

# What the device tool copies: tracked and untracked-but-not-ignored files, plus this folder.
tree_kib=$(git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
carry_kib=$(du -sk "$out" | cut -f1)
total_mib=$(( (tree_kib + carry_kib + 1023) / 1024 ))
echo "make-carry: $out is $(( (carry_kib + 1023) / 1024 )) MiB, the working tree $(( (tree_kib + 1023) / 1024 )) MiB: $total_mib MiB of the $limit_mib MiB the device tool carries" >&2
if [ "$total_mib" -gt "$limit_mib" ]; then
  echo "make-carry: too big for the device tool ($total_mib > $limit_mib MiB)" >&2
  exit 1
fi
