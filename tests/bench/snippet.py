"""How big and how fast the snippet is: ``python -m tests.bench.snippet`` (also run by ``python -m tests.bench``).

Prints the bytes of ``/t.js`` (readable source, minified by rjsmin, gzip)
next to the 2,048-byte budget, and the median main-thread time of one
``collector('track', ...)`` call in headless Chromium next to the 0.5 ms
budget, with baselines measured in the same run: an empty function called
with the same arguments, and ``JSON.stringify`` of an event like the one the
snippet builds.

The page is served cross-origin isolated (COOP + COEP) so that
``performance.now()`` has 5 microsecond resolution instead of 100.

Two scenarios:
- typical: the queue is emptied between groups of 10 calls, as when events
  trickle in and are sent;
- collector unreachable: the settings never come, so nothing is sent and the
  queue stays at its 200-event cap (written to localStorage once a second,
  not per call).

It prints; it asserts nothing. ``run()`` returns the budget rows for the
suite's summary; ``--quick`` times fewer calls.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import rjsmin
from flask import Flask, Response

from collector.inbound import snippet
from tests.bench import browser
from tests.bench.report import Row, heading, ratio
from tests.chromium import CHROMIUM, chromium_available, launched_chromium

BUDGET_GZIP_BYTES = 2048
BUDGET_TRACK_MS = 0.5
CALLS = 1000
QUICK_CALLS = 200
DESCRIPTION = "The snippet's size and main-thread time per track call, next to their budgets."
ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
PAGE = f"""<!doctype html><html><head><meta charset=utf-8><link rel=icon href="data:,">
{browser.snippet_tags("/t.js", "bench")}
</head><body><p>bench</p></body></html>"""

# In the page: time `calls` calls of three things, interleaved so that they
# share the same conditions. `drain` empties the queue every 10 calls.
MEASURE = """async ({calls, drain}) => {
  const props = i => ({product_id: 'KEY-' + i, entity_price: '100', currency: 'USD', variant_ids: ['v1', 'v2']});
  const event = i => ({id: 'k3j4h5g6f7d8s9a0x1c2', type: 'add_to_cart', ts: Date.now(), anonymous_id: 'a1b2c3d4e5f6g7h8i9j0',
    session_id: 's1t2u3v4w5x6y7z8a9b0', url: location.href, document_width: 1280, props: props(i)});
  const noop = function () {};
  const track = [], empty = [], stringify = [];
  const emptied = async () => {
    collector('flush');
    for (let i = 0; i < 400 && localStorage._col_q !== '[]'; i++) await new Promise(r => setTimeout(r, 5));
  };
  for (let i = 0; i < calls; i++) {
    if (drain && i % 10 === 0) await emptied();
    let t = performance.now(); collector('track', 'add_to_cart', props(i)); track.push(performance.now() - t);
    t = performance.now(); noop('track', 'add_to_cart', props(i)); empty.push(performance.now() - t);
    const e = event(i);
    t = performance.now(); JSON.stringify(e); stringify.push(performance.now() - t);
  }
  // amortised baselines: one call is below the timer's 5 us resolution
  const reps = 100000, e = event(0);
  let t = performance.now(); for (let i = 0; i < reps; i++) noop('track', 'add_to_cart', e.props);
  const emptyEach = (performance.now() - t) / reps;
  t = performance.now(); for (let i = 0; i < reps; i++) JSON.stringify(e);
  const stringifyEach = (performance.now() - t) / reps;
  collector('flush');
  await new Promise(r => setTimeout(r, 50));
  return {track, empty, stringify, emptyEach, stringifyEach, errors: collector.errors, isolated: crossOriginIsolated,
          queued: JSON.parse(localStorage._col_q || '[]').length};
}"""


def measure_bytes() -> dict[str, int]:
    source = snippet.snippet_source().encode("utf-8")
    built = snippet.build_snippet(source.decode("utf-8"))
    return {
        "source": len(source),
        "minified": len(rjsmin.jsmin(source.decode("utf-8")).encode("utf-8")),
        "served": len(built.minified),
        "gzip": len(built.gzipped),
        "gzip_of_minified_level6": len(gzip.compress(built.minified, compresslevel=6)),
    }


def bench_app(settings_status: int) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(snippet.bp)

    @app.after_request
    def isolate(response: Response) -> Response:
        response.headers.update(ISOLATED)
        return response

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @app.post("/collect")
    def collect() -> tuple[str, int]:
        return json.dumps({"accepted": 1, "duplicates": 0, "rejected": []}), 202

    @app.get("/sites/<site>/settings.json")
    def settings(site: str) -> tuple[str, int]:
        if settings_status != 200:
            return "{}", settings_status
        return json.dumps({"require_consent": False, "honor_gpc": False}), 200

    return app


def run_scenario(chromium: Any, settings_status: int, drain: bool, calls: int = CALLS) -> dict:
    with browser.serve(bench_app(settings_status)) as url:
        context = chromium.new_context()
        try:
            page = context.new_page()
            page.goto(f"{url}/", wait_until="load")
            page.wait_for_function("window.collector && 'errors' in window.collector")
            if settings_status == 200:
                page.wait_for_function("localStorage._col_s !== undefined")
            page.evaluate(MEASURE, {"calls": 50, "drain": drain})  # warm up the JIT
            return page.evaluate(MEASURE, {"calls": calls, "drain": drain})
        finally:
            context.close()


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} ms"


def print_timing(title: str, result: dict) -> None:
    track = statistics.median(result["track"])
    p95 = statistics.quantiles(result["track"], n=20)[-1]
    verdict = "within" if track <= BUDGET_TRACK_MS else "OVER"
    print(f"\n{title} ({len(result['track'])} calls, cross-origin isolated: {result['isolated']}, "
          f"queue at the end: {result['queued']}, swallowed errors: {result['errors']})")
    print(f"  collector('track', ...)  median {ms(result['track'])}   p95 {p95:.4f} ms   "
          f"budget {BUDGET_TRACK_MS} ms: {verdict}")
    print(f"  empty function call      median {ms(result['empty'])}   amortised {result['emptyEach']:.5f} ms")
    print(f"  JSON.stringify(event)    median {ms(result['stringify'])}   amortised {result['stringifyEach']:.5f} ms")
    print(f"  track / JSON.stringify   {track / result['stringifyEach']:.1f}x (median track over amortised stringify)")


def print_bytes(sizes: dict[str, int]) -> None:
    verdict = "within" if sizes["gzip"] <= BUDGET_GZIP_BYTES else "OVER"
    print("/t.js bytes")
    print(f"  readable source   {sizes['source']:>6}")
    print(f"  minified (rjsmin) {sizes['minified']:>6}")
    print(f"  gzip -9 (served)  {sizes['gzip']:>6}   budget {BUDGET_GZIP_BYTES}: {verdict} "
          f"({BUDGET_GZIP_BYTES - sizes['gzip']} bytes to spare)")
    print(f"  gzip -6           {sizes['gzip_of_minified_level6']:>6}")


SCENARIOS = (
    ("typical", "typical: queue emptied every 10 calls", 200, True),
    ("unreachable", "collector unreachable: nothing sent, queue at its cap", 503, False),
)


def measure(calls: int = CALLS) -> tuple[dict[str, int], dict[str, dict]]:
    """Print and return the sizes and, with Chromium, each scenario's timings."""
    sizes = measure_bytes()
    print_bytes(sizes)
    if not chromium_available():
        print(f"\nno Chromium at {CHROMIUM}: timing skipped (apt-get install chromium)")
        return sizes, {}
    timings = {}
    with launched_chromium() as chromium:
        for name, title, settings_status, drain in SCENARIOS:
            timings[name] = run_scenario(chromium, settings_status, drain, calls)
            print_timing(title, timings[name])
    return sizes, timings


def _track_row(name: str, result: dict) -> Row:
    median = statistics.median(result["track"])
    baseline = result["stringifyEach"]
    return Row("snippet", f"track() main thread, median ({name})", f"{baseline:.5f} ms (JSON.stringify)",
               f"{median:.4f} ms", ratio(median, baseline), f"<= {BUDGET_TRACK_MS} ms", median <= BUDGET_TRACK_MS)  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    """The suite's stage: print everything, return the budget rows."""
    heading("5. Snippet: /t.js size and main-thread time per track call")
    sizes, timings = measure(QUICK_CALLS if quick else CALLS)
    gzip_bytes = sizes["gzip"]
    rows = [Row("snippet", "/t.js gzip bytes", f"{sizes['minified']} B minified", f"{gzip_bytes} B",
                ratio(gzip_bytes, sizes["minified"]), f"<= {BUDGET_GZIP_BYTES} B", gzip_bytes <= BUDGET_GZIP_BYTES)]  # fmt: skip
    rows += [_track_row(name, result) for name, result in timings.items()]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.snippet", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help=f"time {QUICK_CALLS} calls per scenario instead of {CALLS}")
    args = parser.parse_args(argv)
    measure(QUICK_CALLS if args.quick else CALLS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
