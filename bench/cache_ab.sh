#!/usr/bin/env bash
# Runs bench/cache.sh for several builds in turn, ROUNDS times, so builds
# are compared within the same minute on a shared machine. Each SPEC is
# BIN or VAR=VALUE:BIN (an environment variable for that build's agents,
# e.g. MYCO_WORKERS=1:target/release/myco). N, C and NICE pass through.
#   bench/cache_ab.sh ROUNDS "STEPS" SPEC...
set -u
R=$1; S=$2; shift 2
cd "$(dirname "$0")/.."
for r in $(seq "$R"); do
  i=0
  for spec in "$@"; do
    i=$((i + 1))
    b=${spec##*:}; envs=(); [[ "$spec" == *:* ]] && envs=("${spec%%:*}")
    echo "== round $r $spec $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    env "${envs[@]}" STEPS="$S" bench/cache.sh "$b" $((28100 + 100 * i)) 2>&1 | grep -v "^$"
  done
done
