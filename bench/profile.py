"""Sampling profiles of a process under load, with py-spy (``--profile``).

py-spy records the process from outside (no code change, little overhead) as
collapsed stacks; ``summarize`` ranks the frames by the share of samples in
which they run themselves (self) and in which they are on the stack at all
(inclusive), naming each as ``function (file:line)``.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import sys
from pathlib import Path

from bench.procs import die_with_parent

INSTALL_HINT = f"{sys.executable} -m pip install py-spy"


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Recording:
    """py-spy recording one process until stopped."""

    def __init__(self, pid: int, output: Path, *, rate: int = 100) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        py_spy = find_py_spy()
        if py_spy is None:
            raise RuntimeError(f"py-spy is not installed; install it with: {INSTALL_HINT}")
        self._process = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        await asyncio.sleep(0.5)  # attached before the load starts

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def summarize(collapsed: Path, *, top: int = 30, package_hint: str = "voltpay") -> str:
    """The hottest frames: self time, inclusive time, and the same restricted
    to frames whose file names contain ``package_hint``."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own_inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
            if package_hint in frame:
                own_inclusive[frame] += count
    if total == 0:
        return "no samples\n"

    def table(title: str, counter: collections.Counter[str]) -> list[str]:
        lines = [title, ""]
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / total:6.1f}%  {frame}")
        return [*lines, ""]

    out = [f"{total} samples", ""]
    out += table("Self (the frame itself was running)", self_counts)
    out += table("Inclusive (the frame was on the stack)", inclusive)
    out += table(f"Inclusive, {package_hint} frames only", own_inclusive)
    return "\n".join(out)
