#!/bin/sh
# MicroVM start-to-ready against a process running the same server
# (busybox httpd), and QEMU's resident memory per instance.
# Boots the guest of guest.sh with the command line the agent uses
# (exec/microvm.rs: qemu_argv) and polls http://127.0.0.1:PORT/health
# until it answers; then the same with `busybox httpd` as a plain process.
# Usage: bench.sh [RUNS] ; ACCEL=kvm (default) or tcg; KERNEL=/boot/vmlinuz-...
set -eu
runs=${1:-5}
accel=${ACCEL:-kvm}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/myco-bench-microvm.XXXXXX)
trap 'rm -rf "$work"' EXIT
kernel=$(sh "$here/guest.sh" "$work" ${KERNEL:-})
cp "$work/init" "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null) > "$work/initrd.cpio"
if [ "$accel" = kvm ]; then
    machine="microvm,x-option-roms=off,rtc=on"; nic="virtio-net-device,netdev=n0"; cpu="-cpu host"
else
    machine=q35; nic="virtio-net-pci,netdev=n0,romfile="; cpu=""; accel="tcg,tb-size=16"
fi
port=25900
now_ms() { date +%s%3N; }
wait_ready() { until curl -sf -m 1 "http://127.0.0.1:$1/health" >/dev/null; do sleep 0.02; done; }
p50() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$work/vm.ms"; : > "$work/proc.ms"; : > "$work/rss.kb"
i=0
while [ $i -lt "$runs" ]; do
    i=$((i+1))
    t0=$(now_ms)
    # shellcheck disable=SC2086
    qemu-system-x86_64 -M "$machine" -accel "$accel" $cpu -nodefaults -no-user-config \
        -nographic -no-reboot -m 96 -smp 1 -kernel "$kernel" -initrd "$work/initrd.cpio" \
        -append "console=ttyS0 reboot=t panic=-1 quiet PORT=$port -- /bin/busybox httpd -f -p $port -h /www" \
        -serial file:"$work/console.log" -netdev "user,id=n0,hostfwd=tcp::$port-:$port" -device "$nic" &
    pid=$!
    wait_ready $port
    echo $(( $(now_ms) - t0 )) >> "$work/vm.ms"
    awk '/VmRSS/ {print $2}' /proc/$pid/status >> "$work/rss.kb"
    kill $pid; wait $pid 2>/dev/null || true
    t0=$(now_ms)
    busybox httpd -f -p $port -h "$work/root/www" &
    pid=$!
    wait_ready $port
    echo $(( $(now_ms) - t0 )) >> "$work/proc.ms"
    kill $pid; wait $pid 2>/dev/null || true
done
vm=$(p50 < "$work/vm.ms"); proc=$(p50 < "$work/proc.ms"); rss=$(p50 < "$work/rss.kb")
echo "accel=$accel runs=$runs kernel=$kernel"
echo "microVM start-to-ready p50: ${vm} ms (all: $(tr '\n' ' ' < "$work/vm.ms"))"
echo "process start-to-ready p50: ${proc} ms (all: $(tr '\n' ' ' < "$work/proc.ms"))"
echo "ratio: $(awk -v a="$vm" -v b="$proc" 'BEGIN {printf "%.0f", a / (b > 0 ? b : 1)}')x"
echo "QEMU VmRSS per instance (guest -m 96) p50: $((rss / 1024)) MiB"
