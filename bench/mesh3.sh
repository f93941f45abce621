# A 3-node mesh on loopback for the bench scripts; source it after setting
# BIN, BASE, W (a scratch directory), PIDS=() and optionally RUN (a command
# prefix, e.g. `nice -n -10`). Node i listens on BASE+10i (mesh), +1 (API),
# +2 (edge), +3 (RESP). `mesh3_up` starts the three and returns once
# node 1 sees all three alive; the caller's EXIT trap kills PIDS.
# mesh3_scratch [NAME]: a fresh scratch directory W, an empty PIDS, and
# an EXIT trap that kills PIDS and removes W (for scripts with no trap of
# their own).
mesh3_scratch() {
  W=$(mktemp -d -t "${1:-mesh3}.XXXXXX"); PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
}
start() { # i [agent args]
  local i=$1; shift
  ${RUN[@]+"${RUN[@]}"} "$BIN" agent --data-dir "$W/n$i" --name "n$i" --bind "127.0.0.1:$((BASE + 10 * i))" \
    --api "127.0.0.1:$((BASE + 10 * i + 1))" --edge "127.0.0.1:$((BASE + 10 * i + 2))" \
    --resp "127.0.0.1:$((BASE + 10 * i + 3))" "$@" >"$W/n$i.log" 2>&1 &
  PIDS+=($!)
}
api() { echo "http://127.0.0.1:$((BASE + 10 * $1 + 1))"; }
wait_up() { for _ in $(seq 100); do curl -sf "$(api "$1")/health" >/dev/null && return; sleep 0.1; done; echo "n$1 not up"; exit 1; }
mesh3_up() {
  start 1; wait_up 1
  "$BIN" cluster key --data-dir "$W/n1" >"$W/key"
  start 2 --join "127.0.0.1:$((BASE + 10))" --cluster-key-file "$W/key"
  start 3 --join "127.0.0.1:$((BASE + 10))" --cluster-key-file "$W/key"
  wait_up 2; wait_up 3
  for _ in $(seq 100); do
    [ "$(curl -sf "$(api 1)/v1/nodes" | python3 -c 'import json,sys;print(sum(1 for n in json.load(sys.stdin) if n.get("state")=="alive"))' 2>/dev/null)" = 3 ] && return
    sleep 0.2
  done
  echo "the mesh did not form"; exit 1
}
