"""``python -m tests.bench [--quick] [--only ingest,delivery,e2e,footprint,snippet,redis,cost]``: the collector's benchmarks.

One command starts everything it needs on 127.0.0.1 (an embedded Redis per
stage, fast vendor stand-ins, the collector under gunicorn, ``collector
worker``, headless Chromium), runs loads bounded in count and in time,
prints each stage's figures and then one summary table, and stops
everything it started, by PID. It asserts nothing.

Each target of the issue is a ratio to a baseline measured in the same run,
so that a noisy machine moves both:

1. ingest     ``POST /collect`` req/s >= 0.5 of the floor's (JSON parse + one RPUSH), p99 <= 3x its p99 (``ingest.py``)
2. delivery   the worker's events/s >= 0.85 of a bare aiohttp client's, median of 5 alternated rounds, and the rows at a vendor's latency (``delivery.py``, ``vendor_speed.py``);
              at a vendor's latency (150, 50 ms) >= 0.85 of bare aiohttp with 256 in flight, per CPU second at 0 ms >= 0.5,
              a 200/s rate limit, a slow Depict, the drain of 100,000 events (``vendor_speed.py``)
3. e2e        browser track -> vendor: median < 1.5 s by default, < 100 ms with flush (``e2e.py``)
4. footprint  Redis bytes per delivered event-day <= 40 (vs a key per id); a one-hour outage of one vendor at
              1,000 events/s < 1 GiB of Redis (vs one RQ job per event) (``footprint.py``)
5. snippet    /t.js <= 2,000 bytes gzip, track() <= 0.5 ms median (``snippet.py``)

and two stages with no target, figures for sizing and cost:

6. redis      Redis CPU per /collect request, per delivery and per event; events/s one Redis
              core carries end to end; gunicorn workers and worker supervisors -> events/s (``redis_capacity.py``)
7. cost       CPU seconds per million events end to end (gunicorn, collector worker, redis-server)
              next to the floor's (floor app + bare client) in the same run (``cost.py``)

``--quick`` makes every run short (a smoke check, about six minutes);
the full run takes about eighteen to twenty-two minutes (the delivery stage about eight of them, the redis stage about two).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from tests.bench import cost, delivery, e2e, footprint, ingest, redis_capacity, redis_faults, snippet
from tests.bench.loadgen import generator_name
from tests.bench.report import ROW_HEADERS, Row, heading, machine, table
from tests.bench.standin import NOTE

DESCRIPTION = "The collector's benchmarks: each target next to a baseline measured in the same run."
STAGES: dict[str, Callable[[bool], list[Row]]] = {
    "ingest": ingest.run,
    "delivery": delivery.run,
    "e2e": e2e.run,
    "footprint": footprint.run,
    "snippet": snippet.run,
    "redis": redis_capacity.run,
    "cost": cost.run,
    "redis_faults": redis_faults.run,  # Redis SIGKILLed and restarted, and down 30 s, during delivery (issue 18: 5, 6)
}


def stage_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(STAGES)} (got {value!r})")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check (about 6 minutes)")
    parser.add_argument("--only", type=stage_list, default=list(STAGES), metavar="STAGES",
                        help=f"comma-separated stages among {','.join(STAGES)} (default: all)")  # fmt: skip
    return parser.parse_args(argv)


def run_stage(name: str, quick: bool) -> list[Row]:
    """A stage's rows; a stage that fails prints why and yields a failed row, and the others still run."""
    started = time.monotonic()
    try:
        rows = STAGES[name](quick)
    except Exception as error:
        traceback.print_exc()
        print(f"\n! stage {name} failed: {type(error).__name__}: {error}")
        rows = [Row(name, "stage failed (see above)", "—", "—", None, "—", None)]
    print(f"\n({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print(f"# Collector benchmarks{' (--quick)' if args.quick else ''}: {', '.join(args.only)}\n")
    print(table(["machine", ""], [*machine(), ("load generator", generator_name())]))
    rows = [row for name in args.only for row in run_stage(name, args.quick)]
    heading("Summary")
    print(table(ROW_HEADERS, [row.cells() for row in rows]))
    print(f"\nratio = ours / baseline, both measured in this run. {NOTE}.")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
