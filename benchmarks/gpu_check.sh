#!/usr/bin/env bash
# GPU verification in one command: versions, the whole test suite with the GPU cases
# enabled (and required), `portgd train` on cupy and torch cuda, and the GPU benchmarks.
# Every log goes to OUTDIR. Needs the project installed and a CUDA GPU; no network.
# Budget: under 8 minutes on one modern GPU.
#
#   benchmarks/gpu_check.sh OUTDIR
set -u -o pipefail
mkdir -p "${1:?usage: benchmarks/gpu_check.sh OUTDIR}"
out="$(cd "$1" && pwd)"          # absolute: the script moves to the repository root next
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export NVIDIA_TF32_OVERRIDE=0          # no TF32 in cuBLAS, for CuPy and PyTorch alike
export PORTGD_REQUIRE_GPU=1            # a GPU case that cannot run fails instead of skipping
status=0

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    | sed 's/^/gpu: /'
  python - <<'PY'
import platform
print("python:", platform.python_version())
for name in ("numpy", "array_api_compat", "array_api_strict", "cupy", "torch", "portgd"):
    try:
        module = __import__(name)
        print(f"{name}:", getattr(module, "__version__", "?"))
    except ImportError as exc:
        print(f"{name}: not importable ({exc})")
try:
    import cupy
    print("cuda runtime (cupy):", cupy.cuda.runtime.runtimeGetVersion())
    print("cuda driver (cupy):", cupy.cuda.runtime.driverGetVersion())
except Exception as exc:
    print("cupy cuda:", type(exc).__name__, exc)
try:
    import torch
    print("cuda (torch):", torch.version.cuda, "| tf32 matmul allowed:",
          torch.backends.cuda.matmul.allow_tf32)
except Exception as exc:
    print("torch cuda:", type(exc).__name__, exc)
PY
  portgd backends
} 2>&1 | tee "$out/versions.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember failures
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 5 "$out/$name.log"
  echo "== $name: exit $rc"
  [ "$rc" -eq 0 ] || status=1
}

# Time limits add up to 450 s, under the 8-minute budget with the version block.
step pytest 240 python -m pytest -q -rfEs -p no:cacheprovider
step train 60 sh -c 'portgd train --backend cupy --quiet && portgd train --backend torch --device cuda:0 --quiet && portgd train --backend cupy --dataset digits --epochs 30 --quiet'
step bench 60 portgd bench --backend cupy --backend torch --device cuda:0 --steps 30 --repeats 5
step compare 90 python benchmarks/compare.py --backend cupy --backend torch@cuda:0 \
  --steps 30 --repeats 5 --json "$out/compare.json" --markdown

echo "gpu_check: $([ $status -eq 0 ] && echo clean || echo FAILURES) (logs in $out)"
exit $status
