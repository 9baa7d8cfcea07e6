#!/usr/bin/env bash
# Build the tiny test guest from Debian packages only, into OUTDIR (default: the cache that
# `python -m pvc.devcluster sample-vm` uses):
#   vmlinuz    the kernel of Debian's current linux-image-*-amd64 package
#   initrd.gz  static busybox + an init that prints "pvc-guest tick N" on the serial console every
#              second and powers off on an ACPI power-button press (libvirt's default shutdown);
#              with a disk (/dev/vda, virtio: e.g. an RBD volume) it also writes a numbered block to
#              it every second (dd conv=fsync), reads it back and checks it, and at boot verifies
#              what an earlier boot wrote there ("pvc-guest disk ..." lines, see below)
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
# virtio_*: the guest's /dev/vda (a virtio-blk disk); Debian's kernel has them as modules, loaded
# in this order.
virtio="$mods/virtio/virtio_ring.ko $mods/virtio/virtio.ko $mods/virtio/virtio_pci_legacy_dev.ko
$mods/virtio/virtio_pci_modern_dev.ko $mods/virtio/virtio_pci.ko $mods/block/virtio_blk.ko"
# shellcheck disable=SC2086
dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb \
  | tar -x -C "$work" "./boot/vmlinuz-$version" "$mods/input/evdev.ko" "$mods/acpi/button.ko" $virtio

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules,etc/acpi/PWRF}
cp "$busybox" "$root/bin/busybox"
cp "$work/$mods/input/evdev.ko" "$work/$mods/acpi/button.ko" "$root/lib/modules/"
for m in $virtio; do cp "$work/$m" "$root/lib/modules/"; done

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
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  insmod /lib/modules/$m.ko
done
echo "pvc-guest: up, kernel $(uname -r)"

# The disk, if there is one: sector 0 holds "pvc-guest disk count N" (the last block written);
# block n goes to sector 1 + (n - 1) % RING and holds "pvc-guest disk block n" (zero-padded), so
# anyone (this guest after a restart, a test with `rbd export`) can check every block.
DISK=/dev/vda
RING=1024
disk=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ -b $DISK ] && { disk=$DISK; break; }
  sleep 0.2
done
sector() { echo $(( ($1 - 1) % RING + 1 )); }
want() { printf 'pvc-guest disk block %d\n' "$1" | dd bs=512 count=1 conv=sync 2>/dev/null | md5sum | cut -d' ' -f1; }
got() { dd if=$DISK bs=512 skip="$1" count=1 2>/dev/null | md5sum | cut -d' ' -f1; }
d=0
if [ -n "$disk" ]; then
  last=$(dd if=$DISK bs=512 count=1 2>/dev/null | tr -d '\000' | sed -n 's/^pvc-guest disk count \([0-9]*\)$/\1/p')
  if [ -n "$last" ]; then
    first=$(( last > RING ? last - RING + 1 : 1 )); bad=0; k=$first
    while [ $k -le $last ]; do
      [ "$(got "$(sector $k)")" = "$(want $k)" ] || bad=$((bad + 1))
      k=$((k + 1))
    done
    if [ $bad -eq 0 ]; then r=ok; else r="BAD ($bad blocks differ)"; fi
    echo "pvc-guest disk verified blocks $first-$last of an earlier boot: $r"
    d=$last
  else
    echo "pvc-guest disk $DISK is new: writing from block 1"
  fi
fi

n=0
while true; do
  n=$((n + 1))
  echo "pvc-guest tick $n"
  if [ -n "$disk" ]; then
    d=$((d + 1)); s=$(sector $d)
    if printf 'pvc-guest disk block %d\n' $d | dd of=$DISK bs=512 seek="$s" count=1 conv=sync,notrunc,fsync 2>/dev/null \
       && printf 'pvc-guest disk count %d\n' $d | dd of=$DISK bs=512 count=1 conv=sync,notrunc,fsync 2>/dev/null; then
      sum=$(got "$s"); r=ok
      [ "$sum" = "$(want $d)" ] || r="BAD: block $d reads back wrong"
      if [ $d -gt 1 ] && [ "$(got "$(sector $((d - 1)))")" != "$(want $((d - 1)))" ]; then
        r="BAD: block $((d - 1)) changed"
      fi
      echo "pvc-guest disk $d md5 $sum $r"
    else
      echo "pvc-guest disk $d BAD: write failed"
    fi
  fi
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
