"""CPU shares for emulated devices (splitc/tools/clusteremu.py): a cgroup v1 cpu group per device, with a CFS quota
(``cpu.cfs_quota_us = share x cpu.cfs_period_us``) or real-time (SCHED_RR under ``cpu.rt_runtime_us``)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

from splitc.errors import SplitcError

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 5_000  # short periods spread the quota evenly (a 10 ms frame at share 0.5 takes ~20 ms, not 10 or 15)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class CpuGroup:
    """A cgroup v1 cpu group whose processes get ``share`` of one core (``share`` > 1: several cores; None: no quota).

    A CFS quota is a ceiling: on a machine busy with other work a device gets less (a higher cpu.shares weight did
    not change that on the 2-core build VM, measured). ``realtime``: the processes run SCHED_RR in the group with
    ``cpu.rt_runtime_us = share x cpu.rt_period_us`` (per CPU): they get their share whatever else runs, and never
    more. The kernel admits at most sched_rt_runtime_us / sched_rt_period_us (0.95) of RT time over all groups."""

    def __init__(self, path: Path, share: float | None, realtime: bool = False):
        if share is not None and not (math.isfinite(share) and 0 < share <= (os.cpu_count() or 1)):
            raise SplitcError(f"cpu share {share!r} of {path.name}: give a number in (0, {os.cpu_count()}] (cores)")
        self.path, self.share, self.realtime = path, share, bool(realtime and share)
        self.period_us = max(PERIOD_US, math.ceil(1000 / share)) if share else PERIOD_US  # the smallest quota is 1 ms
        self.quota_us = round(share * self.period_us) if share else -1

    def create(self) -> CpuGroup:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            if self.realtime:
                reserve_rt(self.path.parent, self.share)
                (self.path / "cpu.rt_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.rt_runtime_us").write_text(str(round(self.share * PERIOD_US)))
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
                (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        except BaseException:
            self.remove()
            raise
        return self

    def attach(self, pid: int = 0) -> None:
        (self.path / "cgroup.procs").write_text(str(pid or os.getpid()))

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the group: a shell joins it, then execs argv (no preexec_fn: safe with threads)."""
        rr = "chrt -r 1 " if self.realtime else ""
        return ["sh", "-c", f'echo $$ > "{self.path}/cgroup.procs" && exec {rr}"$@"', "sh", *argv]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        """Kill whatever is still inside, then remove the group (and its parent, once empty)."""
        for _ in range(50):
            if not self.path.exists():
                break
            kill_pids(self.pids())
            try:
                self.path.rmdir()
            except OSError:
                time.sleep(0.05)  # killed processes leave the group when they are reaped
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


def reserve_rt(parent: Path, share: float) -> None:
    """Give the group ``parent`` RT time for one more child of ``share``, on top of what it holds."""
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "cpu.rt_period_us").write_text(str(PERIOD_US))
    have = int((parent / "cpu.rt_runtime_us").read_text())
    limit = int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text()) / int(Path("/proc/sys/kernel/sched_rt_period_us").read_text())
    want = have + math.ceil(share * PERIOD_US)
    for _ in range(40):  # the RT time of a group removed a moment ago is released after an RCU grace period
        try:
            (parent / "cpu.rt_runtime_us").write_text(str(want))
            return
        except OSError:
            time.sleep(0.05)
    raise SplitcError(f"real-time CPU shares add up to {want / PERIOD_US:.3g} of a CPU, over the kernel's {limit:.2f}"
                      " for all RT groups (less what other groups hold); lower the shares")


def cgroup_reason() -> str | None:
    """Why CPU quotas cannot be set here (None: they can)."""
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 cpu controller at {CGROUP_CPU}"
    if not os.access(CGROUP_CPU, os.W_OK):
        return f"{CGROUP_CPU} is not writable (run as root)"
    return None
