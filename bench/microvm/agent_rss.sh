#!/bin/sh
# The agent's own resident memory with 0, 1 and 2 microVM instances, and
# each QEMU's: a one-node `myco dev --microvm` (its process demo `hello`
# runs throughout, so only the difference counts), the demo job hello-vm
# scaled to 0 at once (the baseline: spore pushed, job known), then 1,
# then 2 (freed memory stays with the allocator, so 0 comes first). Also
# how long each scale took to ready (boot included).
# Usage: agent_rss.sh [ACCEL]   (tcg by default; MYCO=path/to/myco)
set -eu
accel=${1:-tcg}
myco=$(realpath "${MYCO:-target/release/myco}")
work=$(mktemp -d /tmp/myco-bench-rss.XXXXXX)
export MYCO_DEV_DIR="$work/dev"
"$myco" dev --nodes 1 --microvm "$accel" --dir "$MYCO_DEV_DIR" \
    --mesh-port 27946 --api-port 27070 --edge-port 27080 > "$work/dev.log" 2>&1 &
dev=$!
trap 'kill $dev; wait $dev 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "hello-vm\|microVM demo not deployed" "$work/dev.log" 2>/dev/null; do sleep 1; done
grep -q "microVM demo not deployed" "$work/dev.log" && { cat "$work/dev.log"; exit 1; }
agent=$(for p in /proc/[0-9]*; do
    cat "$p/cmdline" 2>/dev/null | tr '\0' ' ' | grep -q "agent --data-dir $MYCO_DEV_DIR/n1 " && basename "$p"
done | head -1)
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
qemus() {
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/cwd" 2>/dev/null)" in "$MYCO_DEV_DIR"/n1/instances/*)
            grep -q qemu "$p/comm" 2>/dev/null && basename "$p";;
        esac
    done
}
ready() { "$myco" instances --job hello-vm 2>/dev/null | grep -c ' ready' || true; }
measure() {
    want=$1; t0=$(date +%s)
    until [ "$(ready)" -eq "$want" ] && [ "$(qemus | wc -l)" -eq "$want" ]; do sleep 1; done
    sleep 5  # settle: the agent's probes and timers run at steady state
    q=""; for p in $(qemus); do q="$q $(( $(rss "$p") / 1024 ))"; done
    echo "VMs=$want agent VmRSS=$(rss "$agent") KiB; QEMU VmRSS MiB:${q:- none}; waited $(( $(date +%s) - t0 )) s"
}
"$myco" job scale hello-vm 0 > /dev/null
measure 0
"$myco" job scale hello-vm 1 > /dev/null
measure 1
"$myco" job scale hello-vm 2 > /dev/null
measure 2
