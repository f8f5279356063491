"""``--cluster ADDRESS`` and ``--workers N`` (and, for bench/compare, ``--device KIND``): one
definition for every command that can spread its work over a Ray cluster (docs/cluster.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["cluster_options", "device_options", "opened"]


def cluster_options(func):
    options = [
        click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
                     help="Spread the work over a Ray cluster: 'local' (Ray on this machine), 'auto', or HOST:PORT / "
                          "ray://HOST:PORT (needs edgeq[cluster]). The result is the same bytes as without it."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="With --cluster: tasks at once (default: the cluster's CPUs; with 'local': this machine's)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def device_options(func):
    options = [
        click.option("--device", "device", default=None, metavar="KIND",
                     help="With --cluster: run on a node started with the resource device:KIND (one job per device at "
                          "a time), e.g. `ray start --address HEAD --resources '{\"device:rpi4\": 1}'`."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=1.0), default=1800.0, show_default=True,
                     help="With --device: give up (and say so) after this many seconds."),
    ]
    for option in reversed(options):
        func = option(func)
    return cluster_options(func)


@contextlib.contextmanager
def opened(address: str | None, workers: int | None) -> Iterator[Any]:
    """The executor the command's work runs on: the serial one without ``address``; else a Ray
    executor, its workers pinned to this machine's CPU facts (how int8 weights are rounded), closed
    after."""
    from edgeq import cluster

    if address is None:
        if workers is not None:
            from edgeq.errors import UsageError

            raise UsageError("--workers needs --cluster (local, or a Ray cluster's address)")
        yield cluster.current()
        return
    from edgeq.runtime.cpu import ENV, int8_saturates

    executor = cluster.connect(address, workers=workers, env={ENV: "1" if int8_saturates() else "0"})
    try:
        with cluster.using(executor):
            yield executor
    finally:
        executor.close()
