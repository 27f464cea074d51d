"""Run a command and print its peak RSS in KiB on the last line of stderr.

Exists because a child started straight from a large process (subprocess uses vfork) reports
the parent's peak RSS as its own; forked from this small process, the figure is the command's.
Usage: python -m bench.rss COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        os.execvp(argv[0], argv)  # noqa: S606 - the benchmark's own command line
    _, status, usage = os.wait4(pid, 0)
    print(f"peak-rss-kib {usage.ru_maxrss}", file=sys.stderr)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
