#!/bin/sh
# Builds the smallest microVM guest from Debian packages only
# (busybox-static, linux-image-cloud-amd64): OUT/root (busybox, the virtio
# network and ACPI power button modules of KERNEL's version, a web root)
# and OUT/init (mounts, loads the modules, brings up slirp's network, runs
# the spore's command, given after `--` on the kernel command line, and
# stops it cleanly on the power button: SIGTERM, wait, power off).
# Usage: guest.sh OUT [KERNEL]   (KERNEL defaults to the newest /boot/vmlinuz-*)
set -eu
out=$1
kernel=${2:-$(ls /boot/vmlinuz-* | sort -V | tail -1)}
kver=${kernel##*/vmlinuz-}
mods=/lib/modules/$kver/kernel
busybox=$(command -v busybox)
rm -rf "$out/root"
mkdir -p "$out/root/bin" "$out/root/lib/modules" "$out/root/www" "$out/root/etc/acpi/PWRF"
cp "$busybox" "$out/root/bin/busybox"
# Load order = dependency order (modinfo -F depends).
order="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio
drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci
net/core/failover drivers/net/net_failover drivers/net/virtio_net
drivers/acpi/button drivers/input/evdev"
names=""
for m in $order; do
    # Built into the kernel when the module file is absent: nothing to load.
    if [ -f "$mods/$m.ko" ]; then
        cp "$mods/$m.ko" "$out/root/lib/modules/"
        names="$names ${m##*/}"
    fi
done
echo "hello from a myco microVM" > "$out/root/www/index.html"
echo ok > "$out/root/www/health"
# The agent stops a microVM with an ACPI power button press (QMP
# system_powerdown). acpid (busybox) runs etc/acpi/PWRF/00000080 for it,
# which sends the workload SIGTERM; /init then sees it exit and powers off.
cat > "$out/root/etc/acpi/PWRF/00000080" <<'PWRF'
#!/bin/busybox sh
echo "myco guest: power button, SIGTERM to the workload (pid $(cat /run/workload.pid))" > /dev/console
kill -TERM "$(cat /run/workload.pid)"
PWRF
chmod +x "$out/root/etc/acpi/PWRF/00000080"
cat > "$out/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /var/log
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $names; do insmod /lib/modules/\$m.ko; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "myco guest: up, PORT=\$PORT, job \$MYCO_JOB, running: \$*"
# Not exec: /init (PID 1) stays to power the guest off when the workload
# ends, on its own or by the power button's SIGTERM.
"\$@" &
pid=\$!
echo \$pid > /run/workload.pid
acpid -c /etc/acpi -l /var/log/acpid.log -p /run/acpid.pid
wait \$pid
echo "myco guest: workload exited with status \$?, powering off"
poweroff -f
INIT
chmod +x "$out/init"
echo "$kernel"
