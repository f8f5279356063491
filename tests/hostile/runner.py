"""Run one edgeq command line in process, with a timeout: (exit code, stdout, stderr, seconds)."""

from __future__ import annotations

import contextlib
import io
import threading
import time

from edgeq.cli.main import main

__all__ = ["run_cli"]


def run_cli(argv: list[str], timeout: float = 60.0) -> tuple[int | None, str, str, float]:
    """``edgeq ARGV`` in this process. The exit code is None if it did not end within ``timeout``
    (a hang: the thread is left behind, a daemon). stdout and stderr are captured."""
    out, err = io.StringIO(), io.StringIO()
    result: dict[str, int] = {}

    def target() -> None:
        try:
            main(list(argv))
        except SystemExit as e:
            result["code"] = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # main must never let one through: report it as a traceback
            import traceback

            err.write("Traceback (escaped main)\n" + "".join(traceback.format_exception(e)))
            result["code"] = 99

    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout)
    seconds = time.perf_counter() - start
    return result.get("code"), out.getvalue(), err.getvalue(), seconds
