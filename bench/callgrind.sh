# Counting a running process's user-space instructions with callgrind;
# source it. The process runs under `valgrind --tool=callgrind
# --instr-atstart=no --callgrind-out-file=F` (F may hold %p, its pid):
# nothing is counted until `cg_instr on`, and each dump holds what was
# counted since the one before, in F.1, F.2, ... Used by bench/edge.sh
# --callgrind and bench/cache_instructions.sh.

cg_instr() { # on|off PID...: start or stop counting in each
  local what=$1
  shift
  for p in "$@"; do callgrind_control -i "$what" "$p" >/dev/null 2>&1; done
}

cg_counted() { # PID DUMP: asks PID for a dump, which callgrind writes to
  # DUMP (the next F.N); prints its instruction total once it is written
  callgrind_control -d "$1" >/dev/null 2>&1
  for _ in $(seq 300); do grep -qs '^totals:' "$2" && break; sleep 0.1; done
  awk '/^totals:/ {print $2}' "$2"
}
