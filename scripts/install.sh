#!/usr/bin/env bash
# Install everything pvc needs on Debian 12 (as root): the real components from Debian, the
# Python packages into ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  zookeeper                                  # the cluster state store (tests start it themselves)
  libvirt-daemon libvirt-clients             # libvirtd (test driver) and virsh
  libvirt-dev pkg-config gcc python3-dev     # to build libvirt-python
  python3-venv
  qemu-system-x86 qemu-utils libvirt-daemon-driver-qemu  # real guests (system tests, `--hypervisor qemu`)
  busybox-static cpio                        # scripts/build-guest.sh: the tiny guest's initramfs
  iproute2 dnsmasq-base frr udhcpc           # client networks: namespaces, DHCP/DNS, FRR's checker, a DHCP client
  ipmitool openipmi                          # fencing: ipmitool powers dead nodes off; ipmi_sim is the dev/test BMC
  tmux                                       # tests: `pvc top` in a real terminal (send-keys, capture-pane)
  ceph-mon ceph-mgr ceph-osd ceph-common     # storage: the ceph/rbd/rados CLIs pvc calls; a local Ceph (`up --storage ceph`)
  openssl                                    # tests: a self-signed certificate for the REST API's TLS
  python3-rados python3-rbd qemu-block-extra # Ceph's bindings (not used by pvc's venv: see docs/operations.md); QEMU's rbd driver
  prometheus                                 # the Prometheus server the metrics system test scrapes the local cluster with
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# An editable install leaves pvc's own modules uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on
# this project's machines) every `pvc` run would compile them again (~35 ms of its start): compile once.
.venv/bin/python -m compileall -q src
