"""Runs one benchmark configuration in a fresh process: JSON spec on stdin, JSON result on stdout.

Errors come back as ``{"error": {"type": ..., "message": ...}}`` so the parent re-raises the same
EdgeqError subclass (``edgeq.runtime.isolated``).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def _measure(spec: dict) -> dict:
    from edgeq.runtime.bench import measure

    model, provider, threads, batch = spec.pop("model"), spec.pop("provider"), spec.pop("threads"), spec.pop("batch")
    return measure(model, provider, threads, batch=batch, **spec).to_dict()


def main() -> int:
    from edgeq.runtime.isolated import serve

    return serve(_measure)


if __name__ == "__main__":
    sys.exit(main())
