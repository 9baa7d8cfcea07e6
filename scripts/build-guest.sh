#!/usr/bin/env bash
# Build the tiny test guest from Debian packages only, into OUTDIR (default: the cache that
# `python -m pvc.devcluster sample-vm` uses):
#   vmlinuz    the kernel of Debian's current linux-image-*-amd64 package
#   initrd.gz  static busybox + an init that prints "pvc-guest tick N" on the serial console every
#              second and powers off on an ACPI power-button press (libvirt's default shutdown)
#   kernel-package  which package the kernel came from
# Needs busybox-static, cpio and apt access (scripts/install.sh installs them). Safe to run again;
# concurrent runs wait for each other.
set -euo pipefail

out="${1:-${PVC_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pvc/guest}}"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

busybox=/bin/busybox
# Only a static busybox runs inside the initramfs, which has no libc.
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build-guest: $busybox is not static; install busybox-static" >&2
  exit 1
fi

# The versioned kernel package the "linux-image-amd64" metapackage currently points at
# (PVC_GUEST_KERNEL_PACKAGE picks another).
pkg="${PVC_GUEST_KERNEL_PACKAGE:-}"
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}') || true
  if [ -z "$pkg" ]; then
    apt-get update -q >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
fi
version="${pkg#linux-image-}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt-get download drops privileges to _apt where it can

(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) \
  || (cd "$work" && apt-get update -q >/dev/null && apt-get download -q "$pkg" >/dev/null)
mods="./lib/modules/$version/kernel/drivers"
# evdev + button: the ACPI power button reaches user space only through an input device.
dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb \
  | tar -x -C "$work" "./boot/vmlinuz-$version" "$mods/input/evdev.ko" "$mods/acpi/button.ko"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules,etc/acpi/PWRF}
cp "$busybox" "$root/bin/busybox"
cp "$work/$mods/input/evdev.ko" "$work/$mods/acpi/button.ko" "$root/lib/modules/"

# busybox acpid maps the power-button key to the event "PWRF/00000080" and runs the file of that
# name under its config directory.
cat > "$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/sh
echo "pvc-guest: ACPI power button pressed, powering off" > /dev/console
sync
poweroff -f
SH
chmod 755 "$root/etc/acpi/PWRF/00000080"

cat > "$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/modules/evdev.ko
insmod /lib/modules/button.ko
acpid -c /etc/acpi -l /dev/null
echo "pvc-guest: up, kernel $(uname -r)"
n=0
while true; do
  n=$((n + 1))
  echo "pvc-guest tick $n"
  sleep 1
done
SH
chmod 755 "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"
cp "$work/boot/vmlinuz-$version" "$out/vmlinuz.new"
cp "$work/initrd.gz" "$out/initrd.gz.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.gz.new" "$out/initrd.gz"
echo "$pkg" > "$out/kernel-package"
echo "guest built in $out from $pkg"
