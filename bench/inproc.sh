#!/usr/bin/env bash
# In-process speed of `sluice generate` (prompt processing and decode) on
# synthesized 7B-shape models, each figure printed beside its memory-bandwidth
# bound measured in the same run (DESIGN.md §6):
#
#   decode bound  = memory read bandwidth / model bytes   (every weight read once a token)
#   prompt bound  = P x that                               (one pass over the weights per batch of P)
#
# Model bytes are the file's size: the embedding table, which a token reads one
# row of, is counted too, so the decode fraction printed is a slight
# underestimate. The bandwidth is sl-membw's (bench/membw.c) with the same
# thread count, measured before and after each run; the larger is used.
#
# usage: bench/inproc.sh [MODEL.gguf ...]
#   With no models: $SL_BENCH_DIR/7b-q4_0.gguf (synthesized with `sluice synth`
#   if missing), then 7b-q8_0.gguf and 7b-q4_k_m.gguf from the same folder when
#   present (bench/README.md shows how to make them).
# Environment:
#   SL_BUILD          build directory with bin/sluice and bin/sl-membw (default: build)
#   SL_BENCH_DIR      where models live (default: /tmp/sluice-bench; never the repository)
#   SL_THREADS        threads (default 2)
#   SL_PROMPT_TOKENS  prompt length in tokens, BOS included (default 256)
#   SL_GEN_TOKENS     tokens to generate (default 64)
#   SL_TG_TOKENS      tokens to generate from an almost empty context (default 128)
#   SL_REPS           runs per model; the best of each figure is reported (default 1)
#   SL_BENCH_PRIO     a command to run sluice and sl-membw under, e.g. "chrt -f 1"
#                     (real-time priority, root only) on a machine shared with
#                     other work; printed with the results
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SL_BUILD:-$root/build}
dir=${SL_BENCH_DIR:-/tmp/sluice-bench}
threads=${SL_THREADS:-2}
n_prompt=${SL_PROMPT_TOKENS:-256}
n_gen=${SL_GEN_TOKENS:-64}
reps=${SL_REPS:-1}
n_tg=${SL_TG_TOKENS:-128}
prio=${SL_BENCH_PRIO:-} # word-split on use: a command and its arguments
sluice=$build/bin/sluice
membw=$build/bin/sl-membw
for b in "$sluice" "$membw"; do
  if [[ ! -x $b ]]; then
    echo "$0: $b is missing: build first (cmake --build $build), or set SL_BUILD" >&2
    exit 1
  fi
done

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  mkdir -p "$dir"
  if [[ ! -f $dir/7b-q4_0.gguf ]]; then
    echo "synthesizing $dir/7b-q4_0.gguf (3.8 GB) ..." >&2
    "$sluice" synth -o "$dir/7b-q4_0.gguf" --shape 7b --type q4_0 >&2
  fi
  models=("$dir/7b-q4_0.gguf")
  for t in q8_0 q4_k_m; do
    [[ -f $dir/7b-$t.gguf ]] && models+=("$dir/7b-$t.gguf")
  done
fi

# The number of tokens TEXT encodes to (BOS included), with the model's vocabulary.
count_tokens() {
  "$sluice" tokenize -m "$1" -f "$2" --json | tr -cd ',[' | wc -c | awk '{ print $1 }'
}

# Writes a prompt of exactly n_prompt tokens for MODEL into FILE: ordinary
# words (which encode to a token or two each), then single characters.
make_prompt() {
  local model=$1 file=$2
  local words=(the river ran past an old mill where seven quiet wizards judged boxing matches on
               sunday while a lazy dog slept under the bridge and children watched from the hill)
  local k=0 text="" n
  # A quarter as many words as tokens cannot overshoot: start there.
  while (( k < n_prompt / 4 )); do
    text="$text${text:+ }${words[k % ${#words[@]}]}"
    k=$((k + 1))
  done
  while :; do
    local next="$text${text:+ }${words[k % ${#words[@]}]}"
    printf '%s' "$next" > "$file"
    n=$(count_tokens "$model" "$file")
    (( n > n_prompt )) && break
    text=$next
    k=$((k + 1))
  done
  while :; do
    printf '%s' "$text" > "$file"
    n=$(count_tokens "$model" "$file")
    (( n >= n_prompt )) && break
    text="$text."
  done
  if (( n != n_prompt )); then
    echo "$0: could not make a prompt of exactly $n_prompt tokens (got $n)" >&2
  fi
  echo "$n"
}

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
ram=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $ram RAM, kernel $(uname -r)"
echo "load:    $(uptime | sed 's/.*load average: //') (1, 5, 15 min)${prio:+; sluice runs under: $prio}"
echo "prompt:  sluice generate -m MODEL -f PROMPT($n_prompt tokens) -n $n_gen -t $threads -c $((n_prompt + n_gen)) --temp 0 --ignore-eos"
echo "decode:  sluice generate -m MODEL -p The -n $n_tg -t $threads -c $((n_tg + 8)) --temp 0 --ignore-eos"
echo "         (as llama-bench's tg$n_tg: tokens generated from an almost empty context)"
echo
printf '%-14s %6s %9s %11s %11s %13s %10s %8s\n' model GB "GB/s mem" "prompt t/s" "decode t/s" "after prompt" "bound t/s" "of bound"

# One `sluice generate` run: prints "P PS G GS" (prompt tokens, seconds,
# generated tokens, seconds).
gen() {
  local line
  line=$($prio "$sluice" generate "$@" -t "$threads" --temp 0 --ignore-eos 2>&1 >/dev/null | grep '^sluice: prompt')
  # "sluice: prompt P tokens in X s (R tokens/s); generated M tokens in Y s (S tokens/s)"
  echo "$line" | sed -E 's/.*prompt ([0-9]+) tokens in ([0-9.]+) s.*generated ([0-9]+) tokens in ([0-9.]+) s.*/\1 \2 \3 \4/'
}
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in "${models[@]}"; do
  if [[ ! -f $model ]]; then
    echo "$0: $model is not a file" >&2
    exit 1
  fi
  bytes=$(stat -c %s "$model")
  got=$(make_prompt "$model" "$tmp/prompt.txt")
  # Warm the page cache: the figures are for weights in memory.
  cat "$model" > /dev/null
  best_pp=0 best_tg=0 best_after=0 best_bw=0
  for ((r = 0; r < reps; r++)); do
    bw0=$($prio "$membw" --threads "$threads" -q)
    read -r p_tok p_s g_tok g_s < <(gen -m "$model" -f "$tmp/prompt.txt" -n "$n_gen" -c $((n_prompt + n_gen)))
    read -r _ _ t_tok t_s < <(gen -m "$model" -p The -n "$n_tg" -c $((n_tg + 8)))
    bw1=$($prio "$membw" --threads "$threads" -q)
    # The first generated token comes from the prompt's logits, so M tokens
    # take M - 1 forward passes: decode speed is (M - 1) / Y.
    best_pp=$(max "$best_pp" "$(awk -v n="$p_tok" -v s="$p_s" 'BEGIN { printf "%.2f", n / s }')")
    best_after=$(max "$best_after" "$(awk -v n="$g_tok" -v s="$g_s" 'BEGIN { printf "%.2f", (n - 1) / s }')")
    best_tg=$(max "$best_tg" "$(awk -v n="$t_tok" -v s="$t_s" 'BEGIN { printf "%.2f", (n - 1) / s }')")
    best_bw=$(max "$best_bw" "$(max "$bw0" "$bw1")")
  done
  bound=$(awk -v bw="$best_bw" -v b="$bytes" 'BEGIN { printf "%.2f", bw * 1e9 / b }')
  frac=$(awk -v d="$best_tg" -v m="$bound" 'BEGIN { printf "%.0f%%", 100 * d / m }')
  printf '%-14s %6.2f %9s %11s %11s %13s %10s %8s\n' "$(basename "$model" .gguf)" \
    "$(awk -v b="$bytes" 'BEGIN { print b / 1e9 }')" "$best_bw" "$best_pp" "$best_tg" "$best_after" "$bound" "$frac"
done
echo
echo "decode t/s: from an almost empty context; after prompt: the $n_gen tokens that follow the $n_prompt-token prompt"
echo "(attention then reads the prompt's keys and values too). bound: memory bandwidth / model bytes, every"
echo "weight read once a token. A prompt reads the weights once per batch, so its bound is $n_prompt times higher:"
echo "prompt speed is compute-bound. Each figure is the best of $reps run(s)."
