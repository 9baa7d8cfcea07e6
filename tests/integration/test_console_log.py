"""Console logs on a real cluster: pvcd tails serial log files into a ring of chunks in ZooKeeper;
`pvc vm log [-f]` shows them.

libvirt's test driver writes no serial logs, so these tests write each VM's log file themselves, as a
guest's libvirt would: into the console directory of the node the VM runs on, appending, truncating
(append='off' on a start from offline), rotating and bursting.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import msgspec

from pvc.console_log import (
    FORMAT,
    MAX_BYTES,
    MERGE_AFTER,
    Chunk,
    ConsoleLog,
    Head,
    read_stored,
    stored_log,
)
from pvc.schema import Paths
from pvc.zk import ZK
from tests.conftest import domain_xml, wait_until


def log_path(cluster, node: str, name: str) -> Path:
    return Path(cluster.dev.node(node).console_log_directory) / f"{name}.log"


def append(cluster, node: str, name: str, data: str | bytes) -> None:
    """What the guest's serial console writes."""
    with open(log_path(cluster, node, name), "ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def zk_call(cluster, work):
    async def run():
        zk = ZK(cluster.zookeeper, request_timeout=5)
        await zk.start()
        try:
            return await work(zk)
        finally:
            await zk.close()

    return asyncio.run(run())


def stored(cluster, uuid: str) -> tuple[ConsoleLog, int]:
    """The buffer as ZooKeeper holds it (read as `pvc vm log` reads it) and the bytes its chunks take."""
    found = zk_call(cluster, lambda zk: read_stored(zk, uuid))
    return stored_log(found), sum(len(chunk.encode()) for _, chunk in found.chunks)


def chunk_numbers(cluster, uuid: str) -> list[str]:
    return zk_call(cluster, lambda zk: zk.children(Paths.domain_console_log(uuid)))


def wait_stored(cluster, uuid: str, lines: list[str], partial: str = "", timeout: float = 10) -> ConsoleLog:
    def check():
        log, _ = stored(cluster, uuid)
        return log if log.lines[-len(lines):] == lines and log.partial == partial else None

    try:
        return wait_until(check, timeout=timeout, interval=0.1)
    except AssertionError:
        log, _ = stored(cluster, uuid)
        raise AssertionError(f"stored log is {log.lines[-5:]!r} + {log.partial!r}, want ...{lines[-5:]!r}") from None


def running_vm(cluster, name: str, node: str) -> str:
    vm = cluster.define(name, node=node)
    cluster.pvc("vm", "start", name, "--wait")
    return vm["uuid"]


class Follower:
    """`pvc vm log NAME -f` as a user runs it, its output collected line by line."""

    def __init__(self, cluster, name: str, *args: str) -> None:
        self.proc = subprocess.Popen([shutil.which("pvc") or "pvc", "vm", "log", name, "-f", *args], env=cluster.env,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.notes: list[str] = []
        self._out: queue.Queue = queue.Queue()
        self._err: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True).start()
        self.wait_note("following the console")

    @staticmethod
    def _pump(stream, q: queue.Queue) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def _drain(self, q: queue.Queue, into: list[str], done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            try:
                item = q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"`pvc vm log -f`: no {what} within {timeout} s; got {into[-5:]!r}, "
                                     f"notes {self.notes!r}") from None
            if item is None:
                raise AssertionError(f"`pvc vm log -f` exited with {self.proc.wait()}; notes {self.notes!r}")
            into.append(item)

    def wait_lines(self, count: int, timeout: float = 15) -> list[str]:
        self._drain(self._out, self.lines, lambda: len(self.lines) >= count, timeout, f"{count} lines")
        return self.lines

    def wait_note(self, text: str, timeout: float = 15) -> None:
        self._drain(self._err, self.notes, lambda: any(text in n for n in self.notes), timeout, repr(text))

    def quiet(self, seconds: float = 0.5) -> None:
        """Collect whatever else was printed meanwhile (there should be nothing: no duplicates)."""
        time.sleep(seconds)
        for q, into in ((self._out, self.lines), (self._err, self.notes)):
            while not q.empty():
                item = q.get()
                if item is not None:
                    into.append(item)

    def interrupt(self) -> None:
        """Ctrl-C: a quiet exit 0, no traceback."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=10) == 0
        self.quiet(0.1)
        assert not any("Traceback" in n or "Error" in n for n in self.notes), self.notes


def numbered(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix} {i:05d} the guest says something" for i in range(start, stop)]


def text(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


# -------------------------------------------------------------------------------------------------


def test_define_warns_without_a_serial_log_in_the_console_directory(cluster):
    path = cluster.tmp / "nolog.xml"
    path.write_text(domain_xml("nolog"))
    out = cluster.pvc("vm", "define", str(path), "--target", "hv1")
    assert "has no serial <log file=" in out.stderr
    assert f"{cluster.dev.node('hv1').console_log_directory}/nolog.log" in out.stderr

    path.write_text(domain_xml("elsewhere", log_dir="/var/tmp/other"))
    out = cluster.pvc("vm", "define", str(path), "--target", "hv1")
    assert "/var/tmp/other/elsewhere.log" in out.stderr and "pvc reads" in out.stderr

    path.write_text(domain_xml("haslog", log_dir=cluster.dev.node("hv1").console_log_directory))
    out = cluster.pvc("vm", "define", str(path), "--target", "hv1")
    assert "warning" not in out.stderr
    # An empty log of a VM without a serial log says why it is empty.
    empty = cluster.pvc("vm", "log", "nolog")
    assert empty.stdout == "" and "no serial <log file=" in empty.stderr


def test_static_log_shows_what_the_guest_printed_cleaned(cluster):
    # The VM starts before its log file exists; the file appears later.
    uuid = running_vm(cluster, "clean1", "hv1")
    assert not log_path(cluster, "hv1", "clean1").exists()
    append(cluster, "hv1", "clean1", b"\x1b[2J\x1b[HSeaBIOS (version 1.16)\r\n")
    append(cluster, "hv1", "clean1", b"caf\xc3")  # a UTF-8 character split across writes
    append(cluster, "hv1", "clean1", b"\xa9 \xff\xfe not utf-8\n")
    append(cluster, "hv1", "clean1", b"\x1b[1;32mOK\x1b[0m started \x1b]0;title\x07unit\n")
    append(cluster, "hv1", "clean1", b"progress 10%\rprogress 50%\rprogress 100%\n")
    append(cluster, "hv1", "clean1", b"tab\there\n")
    append(cluster, "hv1", "clean1", b"login: ")  # a partial last line: the prompt
    want = ["SeaBIOS (version 1.16)", "caf\u00e9 \ufffd\ufffd not utf-8", "OK started unit", "progress 100%",
            "tab\there"]
    wait_stored(cluster, uuid, want, partial="login: ")

    out = cluster.pvc("vm", "log", "clean1").stdout  # piped: plain, no pager
    assert out == text(want + ["login: "])
    assert cluster.pvc("vm", "log", "clean1", "--lines", "2").stdout == text(["progress 100%", "tab\there", "login: "])
    assert cluster.pvc("vm", "log", uuid, "-n", "0").stdout == "login: \n"

    # The prompt gets its answer: the partial line completes.
    append(cluster, "hv1", "clean1", "root\n")
    wait_stored(cluster, uuid, want + ["login: root"])


def test_follow_prints_exactly_the_lines_written_through_truncation_rotation_and_bursts(cluster):
    uuid = running_vm(cluster, "follow1", "hv2")
    history = numbered("before", 0, 30)
    append(cluster, "hv2", "follow1", text(history))
    wait_stored(cluster, uuid, history)

    follower = Follower(cluster, "follow1", "--lines", "5")
    written = history[-5:]

    def write(lines: list[str], chunk: int = 1, pause: float = 0.0) -> None:
        for i in range(0, len(lines), chunk):
            # Keep within the buffer (1,000 lines) of what the follower printed, however slow a
            # loaded machine makes it: then it must print every line (else it reports a gap).
            follower.wait_lines(len(written) + i - 500)
            append(cluster, "hv2", "follow1", text(lines[i:i + chunk]))
            if pause:
                time.sleep(pause)
        written.extend(lines)

    write(numbered("steady", 0, 50), pause=0.01)
    # Truncated, as libvirt does with append='off' when the VM starts from offline (after the
    # stop, so the last lines were read: a truncation destroys whatever was not).
    wait_stored(cluster, uuid, written[-50:])
    with open(log_path(cluster, "hv2", "follow1"), "wb"):
        pass
    write(numbered("truncated", 0, 20), pause=0.01)
    # Rotated: renamed away (its last lines not read yet), a new file takes its place.
    write(numbered("old-file", 0, 5))
    path = log_path(cluster, "hv2", "follow1")
    os.rename(path, path.with_suffix(".log.1"))
    write(numbered("new-file", 0, 20), pause=0.01)
    # Replaced: a new file renamed over the old one.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text(numbered("replaced", 0, 10)))
    os.rename(tmp, path)
    written.extend(numbered("replaced", 0, 10))
    # Bursts: 800 lines at once (fits the 1,000-line buffer), then 3,000 lines at up to 3,000 lines/s.
    follower.wait_lines(len(written))
    write(numbered("burst", 0, 800), chunk=800)
    write(numbered("fast", 0, 3000), chunk=30, pause=0.01)

    follower.wait_lines(len(written), timeout=30)
    follower.quiet()
    assert follower.lines == written
    assert not any("scrolled out" in n for n in follower.notes)
    follower.interrupt()

    log, size = stored(cluster, uuid)
    assert log.lines == written[-1000:] and size <= MAX_BYTES
    # The ring stays small: merged chunks, the ones that scrolled out deleted.
    assert len(chunk_numbers(cluster, uuid)) <= MERGE_AFTER + 1000 // (MERGE_AFTER - 1) + 2


def test_a_burst_larger_than_the_buffer_is_counted_not_garbled(cluster):
    uuid = running_vm(cluster, "burst1", "hv3")
    append(cluster, "hv3", "burst1", "first\n")
    wait_stored(cluster, uuid, ["first"])
    follower = Follower(cluster, "burst1")
    assert follower.wait_lines(1) == ["first"]

    burst = numbered("flood", 0, 5000)
    append(cluster, "hv3", "burst1", text(burst))  # one write: the buffer (1,000 lines) scrolls past most
    follower.wait_lines(1 + 1000, timeout=20)
    wait_stored(cluster, uuid, burst[-1000:])
    follower.quiet()
    follower.interrupt()
    # What is printed is the newest lines, in order, none twice; what scrolled away is counted.
    printed = follower.lines
    assert printed[0] == "first" and printed[-1000:] == burst[-1000:]
    indexes = [burst.index(line) for line in printed[1:]]
    assert indexes == sorted(set(indexes))
    skipped = sum(int(m.group(1)) for n in follower.notes if (m := re.search(r"(\d+) lines? scrolled out", n)))
    assert skipped == len(burst) - len(indexes) and skipped >= 4000 - 1000
    log, size = stored(cluster, uuid)
    assert log.lines == burst[-1000:] and log.first == 4001 and size <= MAX_BYTES


def test_huge_lines_and_binary_noise_stay_within_the_byte_bound(cluster):
    uuid = running_vm(cluster, "noise1", "hv1")
    append(cluster, "hv1", "noise1", os.urandom(300_000) + b"\n" + (b"x" * 9000 + b"\n") * 200)
    append(cluster, "hv1", "noise1", "end of noise\n")
    log = wait_stored(cluster, uuid, ["end of noise"])
    _, size = stored(cluster, uuid)
    assert size <= 2 * MAX_BYTES  # the buffer, plus at most the oldest chunk's lines that scrolled out
    assert all(len(line) <= 4096 for line in log.lines)


def test_pvcd_restart_neither_loses_nor_repeats_lines(cluster):
    uuid = running_vm(cluster, "restart1", "hv2")
    written = numbered("a", 0, 20)
    append(cluster, "hv2", "restart1", text(written))
    wait_stored(cluster, uuid, written)
    follower = Follower(cluster, "restart1", "--lines", "0")

    # SIGTERM; the guest keeps printing while its node's daemon is down.
    cluster.dev.stop_node("hv2", signal.SIGTERM)
    more = numbered("while-down", 0, 15)
    append(cluster, "hv2", "restart1", text(more))
    cluster.dev.start_node("hv2")
    written += more
    assert wait_stored(cluster, uuid, written, timeout=30).lines == written

    # kill -9 right after the guest printed: whatever was not written yet is read again, once.
    more = numbered("b", 0, 10)
    append(cluster, "hv2", "restart1", text(more))
    cluster.dev.stop_node("hv2", signal.SIGKILL)
    cluster.dev.start_node("hv2")  # returns at once: the killed daemon's state still says run
    written += more
    assert wait_stored(cluster, uuid, written, timeout=30).lines == written  # a loaded machine starts pvcd slowly
    # And the follower printed each line once, in order, through both restarts.
    assert follower.wait_lines(len(written) - 20) == written[20:]
    follower.quiet()
    assert follower.lines == written[20:] and not any("scrolled out" in n for n in follower.notes)
    follower.interrupt()
    assert stored(cluster, uuid)[0].lines == written


def test_restart_from_offline_with_append_off_truncates_and_continues_numbering(cluster):
    uuid = running_vm(cluster, "offon1", "hv3")
    first = numbered("boot1", 0, 40)
    append(cluster, "hv3", "offon1", text(first))
    wait_stored(cluster, uuid, first)
    cluster.pvc("vm", "stop", "offon1", "--wait")
    # libvirt truncates the log (append='off') when the VM starts again; the new boot prints less
    # than before, then more than before: neither case may hide the new lines.
    path = log_path(cluster, "hv3", "offon1")
    path.write_text(text(numbered("boot2", 0, 5)))
    cluster.pvc("vm", "start", "offon1", "--wait")
    second = numbered("boot2", 0, 5)
    log = wait_stored(cluster, uuid, first + second)
    assert log.lines == first + second and log.first == 0

    cluster.pvc("vm", "stop", "offon1", "--wait")
    third = numbered("boot3", 0, 60)  # longer than the old file: same inode, same size class
    path.write_text(text(third))
    cluster.pvc("vm", "start", "offon1", "--wait")
    assert wait_stored(cluster, uuid, first + second + third).lines == first + second + third


def test_migration_mid_stream_loses_nothing_and_repeats_nothing(cluster):
    uuid = running_vm(cluster, "mig1", "hv1")
    follower = Follower(cluster, "mig1", "--lines", "0")
    written: list[str] = []

    def write(node: str, lines: list[str]) -> None:
        for line in lines:
            append(cluster, node, "mig1", line + "\n")
            time.sleep(0.002)
        written.extend(lines)

    write("hv1", numbered("on-hv1", 0, 200))
    # Migrate at once: the tailer has not written the last lines yet; its final flush must.
    cluster.pvc("vm", "migrate", "mig1", "--target", "hv2", "--wait")
    assert cluster.where_running("mig1") == ["hv2"]
    # On the new host the guest's log is a fresh file, written as soon as the VM runs there.
    write("hv2", numbered("on-hv2", 0, 200))
    follower.wait_note("moved to node hv2")
    # Back to hv1 (unmigrate): its file (append='on') still holds the old lines; none comes twice.
    cluster.pvc("vm", "unmigrate", "mig1", "--wait")
    assert cluster.where_running("mig1") == ["hv1"]
    write("hv1", numbered("back-on-hv1", 0, 100))

    assert follower.wait_lines(len(written), timeout=30) == written
    follower.quiet()
    assert follower.lines == written
    follower.interrupt()
    assert stored(cluster, uuid)[0].lines == written


def test_follow_says_when_the_vm_stops_and_starts_and_keeps_following(cluster):
    uuid = running_vm(cluster, "stops1", "hv2")
    follower = Follower(cluster, "stops1", "--lines", "0")
    append(cluster, "hv2", "stops1", "going down\n")
    cluster.pvc("vm", "stop", "stops1", "--wait")
    follower.wait_note("stopped (stop)")
    cluster.pvc("vm", "start", "stops1", "--wait")
    follower.wait_note("starting on node hv2")
    append(cluster, "hv2", "stops1", "back up\n")
    assert follower.wait_lines(2) == ["going down", "back up"]
    follower.interrupt()
    assert stored(cluster, uuid)[0].lines == ["going down", "back up"]


def test_follow_ends_when_the_vm_is_undefined(cluster):
    running_vm(cluster, "gone1", "hv3")
    follower = Follower(cluster, "gone1")
    cluster.pvc("vm", "stop", "gone1", "--wait")
    cluster.pvc("vm", "undefine", "gone1", "--yes")
    assert follower.proc.wait(timeout=10) == 0
    follower.wait_note("was undefined")


def test_a_missing_console_directory_falls_back_to_checking_on_an_interval(cluster):
    # The directory goes away (the inotify watch with it) while VMs run; a VM starts meanwhile.
    directory = Path(cluster.dev.node("hv1").console_log_directory)
    os.rename(directory, directory.with_name("console.gone"))
    try:
        # Without a serial <log> in its XML (pvcd creates the directory of a declared log file).
        path = cluster.tmp / "nodir1.xml"
        path.write_text(domain_xml("nodir1"))
        cluster.pvc("vm", "define", str(path), "--target", "hv1")
        cluster.pvc("vm", "start", "nodir1", "--wait")
        uuid = cluster.vm("nodir1")["uuid"]
        time.sleep(1)
        assert not directory.exists()
    finally:
        directory.mkdir(exist_ok=True)
    append(cluster, "hv1", "nodir1", "the directory is back\n")
    wait_stored(cluster, uuid, ["the directory is back"], timeout=10)
    # Once the watch is re-armed, a line shows up at once again (well within one check interval).
    time.sleep(2)
    append(cluster, "hv1", "nodir1", "and inotify too\n")
    wait_stored(cluster, uuid, ["the directory is back", "and inotify too"], timeout=0.4)


def test_output_piped_to_head_ends_quietly(cluster):
    uuid = running_vm(cluster, "head1", "hv2")
    lines = numbered("h", 0, 3000)
    append(cluster, "hv2", "head1", text(lines))
    wait_stored(cluster, uuid, lines[-1000:])
    pvc = shutil.which("pvc") or "pvc"
    proc = subprocess.run(f"{pvc} vm log head1 | head -3", shell=True, env=cluster.env,
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout == text(lines[-1000:-997])
    assert proc.stderr == ""
    # Following: a reader that stops reading (head) is noticed at the next line printed.
    follow = subprocess.Popen([pvc, "vm", "log", "head1", "-f"], env=cluster.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert "following the console" in follow.stderr.readline()
    assert [follow.stdout.readline() for _ in range(3)] == [f"{line}\n" for line in lines[-10:-7]]
    follow.stdout.close()
    append(cluster, "hv2", "head1", "one more\n")
    assert follow.wait(timeout=15) == 0
    assert follow.stderr.read() == ""


def test_a_zookeeper_outage_delays_lines_but_loses_none(cluster):
    uuid = running_vm(cluster, "outage1", "hv3")
    written = numbered("before", 0, 10)
    append(cluster, "hv3", "outage1", text(written))
    wait_stored(cluster, uuid, written)
    cluster.dev.stop_zookeeper()  # the whole ensemble
    try:
        more = numbered("during", 0, 10)
        append(cluster, "hv3", "outage1", text(more))
        written += more
        time.sleep(2)
    finally:
        cluster.dev.start_zookeeper()
    more = numbered("after", 0, 10)
    append(cluster, "hv3", "outage1", text(more))
    written += more
    assert wait_stored(cluster, uuid, written, timeout=30).lines == written


def test_an_old_format_buffer_is_read_and_converted_with_its_numbering(cluster):
    """A VM whose buffer an older pvc wrote (format 1: the whole buffer in the key's value) shows it;
    when it runs, its tailer converts it in its first write, and a follower goes on across it."""
    vm = cluster.define("old1", node="hv1")
    uuid = vm["uuid"]
    old = numbered("old", 0, 30)
    record = b'{"first": 70, "lines": %s, "partial": "", "files": [["hv9", 1, 2, 3]]}' % \
        msgspec.json.encode(old)
    # A chunk left under it: an older pvcd (mid-upgrade) wrote this format-1 head over a converted one.
    stale = Chunk(5, ["stale"], "", 5).encode()
    zk_call(cluster, lambda zk: zk.multi([("set", Paths.domain_console_log(uuid), record),
                                          ("create", f"{Paths.domain_console_log(uuid)}/5", stale)]))
    assert cluster.pvc("vm", "log", "old1", "-n", "3").stdout == text(old[-3:])

    follower = Follower(cluster, "old1", "--lines", "2")
    assert follower.wait_lines(2) == old[-2:]
    cluster.pvc("vm", "start", "old1", "--wait")
    new = numbered("new", 0, 40)
    append(cluster, "hv1", "old1", text(new))
    log = wait_stored(cluster, uuid, old + new)
    assert (log.first, log.lines) == (70, old + new)  # the numbering goes on
    head = zk_call(cluster, lambda zk: zk.get(Paths.domain_console_log(uuid)))[0]
    assert Head.decode(head).format == FORMAT and Head.decode(head).files[0].node == "hv9"
    assert "5" not in chunk_numbers(cluster, uuid) and min(map(int, chunk_numbers(cluster, uuid))) > 5
    assert follower.wait_lines(2 + len(new)) == old[-2:] + new
    follower.quiet()
    assert follower.lines == old[-2:] + new
    follower.interrupt()
    cluster.pvc("vm", "stop", "old1", "--wait")
    cluster.pvc("vm", "undefine", "old1", "--yes")  # the chunks go with it
    assert not zk_call(cluster, lambda zk: zk.exists(f"/domains/{uuid}"))
