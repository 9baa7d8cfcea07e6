#!/usr/bin/env bash
# Install what is needed, start a local 3-node pvc cluster on a real ZooKeeper and real libvirt
# (one libvirtd per node), define and start sample VMs, and show the cluster.
# `demo.sh --hypervisor qemu` boots real tiny guests under QEMU instead of libvirt's test driver.
# `--storage ceph` (the default with qemu) also starts a real Ceph cluster; with qemu, each guest then
# boots with an RBD volume as its disk (vms/demoN) and writes to it every second (`pvc vm log demoN`).
set -euo pipefail
hypervisor=test
storage=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hypervisor) hypervisor="${2:?--hypervisor test|qemu}"; shift 2 ;;
    --storage) storage="${2:?--storage none|ceph}"; shift 2 ;;
    *) echo "usage: demo.sh [--hypervisor test|qemu] [--storage none|ceph]" >&2; exit 2 ;;
  esac
done
[ -n "$storage" ] || { [ "$hypervisor" = qemu ] && storage=ceph || storage=none; }
cd "$(dirname "$0")/.."
./scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
workdir="$PWD/.demo"

if [ -f "$workdir/cluster.json" ]; then
  python -m pvc.devcluster down --workdir "$workdir" >/dev/null 2>&1 || true
fi
up_out=$(python -m pvc.devcluster up --nodes 3 --workdir "$workdir" --hypervisor "$hypervisor" --storage "$storage")
zk_line=$(echo "$up_out" | tail -n 1)
export "$zk_line"
ceph_line=""
if [ "$storage" = ceph ]; then
  ceph_line=$(echo "$up_out" | grep '^PVC_CEPH_CONF=')
  # shellcheck disable=SC2086
  export $ceph_line
  pvc storage pool add vms --pgs 8 --replicas 1
fi

for i in 1 2 3 4; do
  if [ "$hypervisor" = qemu ]; then
    volume=()
    if [ "$storage" = ceph ]; then
      pvc storage volume add vms "demo$i" 64M >/dev/null
      volume=(--volume "vms/demo$i")
    fi
    python -m pvc.devcluster sample-vm "demo$i" --workdir "$workdir" "${volume[@]}" > "$workdir/demo$i.xml"
  else
  cat > "$workdir/demo$i.xml" <<XML
<domain type='test'>
  <name>demo$i</name>
  <uuid>$(python -c 'import uuid; print(uuid.uuid4())')</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='pty'><log file='$workdir/hv$(( (i - 1) % 3 + 1 ))/console/demo$i.log' append='on'/></serial>
  </devices>
</domain>
XML
  fi
  pvc vm define "$workdir/demo$i.xml" --target "hv$(( (i - 1) % 3 + 1 ))"
done
for i in 1 2 3; do pvc vm start "demo$i" --wait; done

echo
echo "== pvc node list"
pvc node list
echo
echo "== pvc vm list"
pvc vm list
cat <<TXT

The cluster is running. To use it:
  source .venv/bin/activate
  export $zk_line $ceph_line
  pvc vm info demo1            # or: pvc vm stop demo1 --wait, pvc vm start demo4 --wait, pvc node info hv2 ...
  pvc vm migrate demo1 --wait  # with --hypervisor qemu: live, while \`pvc vm log demo1 -f\` keeps printing
  python -m pvc.devcluster info --workdir .demo
To stop it:
  .venv/bin/python -m pvc.devcluster down --workdir .demo
TXT
