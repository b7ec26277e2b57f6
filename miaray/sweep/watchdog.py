"""Stops the processes of a private Ray instance once the driver that started it has ended, however it
ended (a normal exit, an exception, SIGTERM, SIGKILL, the out-of-memory killer).

`miaray.sweep.cluster.start_private` runs this file by its path (`python -I watchdog.py NAME VALUE`,
standard library only: importing the `miaray.sweep` package would import Ray) before it starts Ray, with
NAME=VALUE in the environment of every process of that instance (the GCS and raylet inherit it from the
driver, the agents and workers from the raylet) and the read end of a pipe as its stdin, whose write
end only the driver holds. The kernel closes that end when the driver ends, so the read returns; the
watchdog then stops this user's processes whose environment holds NAME=VALUE: SIGTERM, then SIGKILL
after GRACE_S. Ray's own fate sharing kills the driver's direct children (GCS, raylet) when the driver is
SIGKILLed, but not the raylet's agents, which wait for the dead GCS for over a minute.
"""

from __future__ import annotations

import os
import signal
import sys
import time

GRACE_S = 5.0


def tagged(name: str, value: str) -> set[int]:
    """This user's processes (but this one) whose initial environment holds name=value (Linux /proc)."""
    needle, uid, me, found = f"{name}={value}".encode(), os.getuid(), os.getpid(), set()
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: nothing can be found
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as file:
                if needle in file.read().split(b"\0"):
                    found.add(int(entry))
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


def stop(name: str, value: str, *, grace_s: float = GRACE_S) -> set[int]:
    """SIGTERM the processes tagged name=value, SIGKILL those still there after `grace_s`; rescans until
    none is left (a raylet may start a worker while it is being stopped). Returns the pids signalled."""
    signalled: set[int] = set()
    for _ in range(5):
        pids = tagged(name, value)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        signalled |= pids
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids &= tagged(name, value)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
    return signalled


def main(argv: list[str]) -> int:
    name, value = argv
    # Ctrl-C or a SIGTERM sent to the driver's whole process group must not stop the watchdog first.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # returns b"" once the driver (the pipe's only writer) has ended
        pass
    stop(name, value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
