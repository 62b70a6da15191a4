"""Terminal output: rich tables and progress when rich is installed (the compiler extra), plain text otherwise."""

from __future__ import annotations

import contextlib
import sys
import time

try:
    from rich.console import Console
    from rich.table import Table
except ImportError:  # the runtime-only install
    Console = Table = None

BAR = "█"


def bar(value: float, scale: float, width: int = 12) -> str:
    if scale <= 0:
        return ""
    n = value / scale * width
    full = int(n)
    return BAR * full + ("▌" if n - full >= 0.5 else "")


def fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def fmt_flops(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def print_table(title: str, columns: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> None:
    if Console is not None:
        table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
        for i, col in enumerate(columns):
            table.add_column(col, justify="right" if i in right else "left", overflow="fold", no_wrap=(col == ""))
        for row in rows:
            table.add_row(*row)
        console = Console(soft_wrap=False)
        if not console.is_terminal:
            console.width = 160  # pipes and CI logs: don't fold tables at 80 columns
        console.print(table)
        return
    widths = [max(len(str(c)) for c in [col] + [r[i] for r in rows]) for i, col in enumerate(columns)]
    print(title)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print()


@contextlib.contextmanager
def progress(enabled: bool, steps: list[str]):
    """Yields ``step(name)``: a progress bar over named steps, on stderr."""
    if not enabled or Console is None:
        yield lambda _name: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:  # a log, not a bar: once the work has taken 2 s, one line per step, sub-steps at most every 2 s
        t0, last = time.perf_counter(), {"t": -1e9, "name": ""}

        def log(name: str) -> None:
            now = time.perf_counter()
            if now - t0 >= 2.0 and (name in steps or now - last["t"] >= 2.0):
                print(f"splitc: {now - t0:7.1f}s {name}", file=sys.stderr, flush=True)
                last["t"] = now

        yield log
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar_:
        task = bar_.add_task("starting", total=len(steps))
        done = {"n": 0}

        def step(name: str) -> None:
            if name in steps:
                bar_.update(task, description=name, completed=steps.index(name))
                done["n"] += 1
            else:  # a sub-step (calibration): shown as the description
                bar_.update(task, description=name)

        yield step
        bar_.update(task, completed=len(steps))


def err(text: str) -> None:
    print(text, file=sys.stderr)
