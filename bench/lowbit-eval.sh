#!/usr/bin/env bash
# Quality of sluice's low-bit types (g2/g3/g4, compute/lowbit.h) against the
# GGUF types: `sluice eval` (KL divergence of the next-token distributions
# against the F32 model, top-1 agreement, perplexity) teacher-forced over
# bench/eval-stories.txt. The README's "Low-bit types" tables are this
# script's output.
#
#  1. stories260K, the real trained model. Its rows are 64 wide (and 172 for
#     ffn_down), so the low-bit types take groups of 64 there, ffn_down fits
#     no block type and stays F16 in every file, and the K-quants (blocks of
#     256) cannot be used at all; the output projection is Q8_0 in every
#     quantized file (`sluice quantize`'s default). Both low-bit encoders are
#     shown: the least-squares search (default) and plain min-max.
#  2. tiny-llama (random weights, rows of 256 and 768): the reference
#     toolchain's own files of every GGUF type, K-quants included, against
#     the low-bit types quantized by sluice from tiny-llama-f32 with every
#     matrix in the type, output and embedding included, as those files
#     have them; groups of 128 (the default), 64 and 32.
#
# Files are written to a temporary directory and removed. Deterministic: the
# same build gives the same tables (up to the kernel variant's float
# rounding).
#
# usage: bench/lowbit-eval.sh
# Environment:
#   SL_BUILD    build directory with bin/sluice (default: build)
#   SL_THREADS  threads (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
threads=${SL_THREADS:-2}
sluice=$build/bin/sluice
models=$root/../shared/testdata/models
prompts=$root/bench/eval-stories.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

q() { "$sluice" quantize -t "$threads" "$@" >/dev/null; }

echo "== stories260K (F32 reference), $(wc -l <"$prompts") lines of bench/eval-stories.txt =="
st=$models/stories260K.gguf
list=()
for t in q8_0 q5_0 q4_1 q4_0 g4 g3 g2; do
  q -m "$st" -o "$tmp/st-$t.gguf" --type "$t"
  list+=(-m "$tmp/st-$t.gguf")
  case $t in g*)
    q -m "$st" -o "$tmp/st-$t-minmax.gguf" --type "$t" --fit minmax
    list+=(-m "$tmp/st-$t-minmax.gguf") ;;
  esac
done
"$sluice" eval --ref "$st" --prompts "$prompts" -t "$threads" "${list[@]}"

echo
echo "== tiny-llama (F32 reference, random weights): the reference toolchain's files and sluice's low-bit types =="
tl=$models/tiny-llama-f32.gguf
list=()
for t in q8_0 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 q3_k q2_k; do
  list+=(-m "$models/tiny-llama-$t.gguf")
done
for g in 128 64 32; do
  for b in 4 3 2; do
    q -m "$tl" -o "$tmp/tl-g$b-$g.gguf" --type "g$b" --group "$g" --output-type "g$b" --embd-type "g$b"
    list+=(-m "$tmp/tl-g$b-$g.gguf")
  done
done
"$sluice" eval --ref "$tl" --prompts "$prompts" -t "$threads" "${list[@]}"
