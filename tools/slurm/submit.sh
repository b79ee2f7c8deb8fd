#!/usr/bin/env bash
# A sweep on a Slurm cluster: a job array with one shard per task and a merge
# job that runs when all of them have succeeded.
#   tools/slurm/submit.sh -N SHARDS -o PREFIX [--gpus] [--exe PATH] [-- sbatch options] -- SWEEP ARGS...
# writes PREFIX.shard0.h5 ... and then PREFIX.h5; prints the two job ids.
#   --gpus   one GPU per task (--gres=gpu:1); give the sweep --device cuda
# Example:
#   tools/slurm/submit.sh -N 8 -o /scratch/val/resnet --gpus -- --model r.onnx --split layer2 \
#     --image-folder /data/val --grid 4x4 --device cuda
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shards="" prefix="" gres=() exe="${IPNA_FAST:-$(command -v ipna-fast || true)}" sbatch_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    -N) shards="$2"; shift 2 ;;
    -o) prefix="$2"; shift 2 ;;
    --gpus) gres=(--gres=gpu:1); shift ;;
    --exe) exe="$2"; shift 2 ;;
    --sbatch) sbatch_opts+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "submit.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: -N SHARDS must be a positive count" >&2; exit 2; }
[ -n "$prefix" ] || { echo "submit.sh: -o PREFIX is required" >&2; exit 2; }
[ -x "$exe" ] || { echo "submit.sh: ipna-fast not found: give --exe PATH or put it on PATH" >&2; exit 2; }
[ $# -gt 0 ] || { echo "submit.sh: give the sweep's arguments after --" >&2; exit 2; }
prefix="$(cd "$(dirname "$prefix")" && pwd)/$(basename "$prefix")"
exe="$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")"
# The arguments travel in a file, NUL-separated, so no quoting is lost on the way.
printf '%s\0' "$@" > "$prefix.args"
export IPNA_FAST="$exe" IPNA_PREFIX="$prefix" IPNA_SHARDS="$shards"
array=$(sbatch --parsable --export=ALL --array="0-$((shards - 1))" "${gres[@]}" "${sbatch_opts[@]}" \
  --output="$prefix.shard%a.log" "$here/sweep_array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$array" --kill-on-invalid-dep=yes \
  "${sbatch_opts[@]}" --output="$prefix.merge.log" "$here/merge.sbatch")
merge=${merge%%;*}
echo "array $array merge $merge"
