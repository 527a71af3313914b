"""The operator console's first paint at its scale goal (10,000 swarms, 100,000 audit entries), in a real
browser: Debian's chromium driven by Playwright, the console served by uvicorn on a local port.

- First contentful paint of each view, logged in, measured by the browser itself
  (``performance.getEntriesByType('paint')``), and the server's share of it (request start to response end).
- Baseline, same run, same browser: the very same page bytes saved as a file and served by Python's plain
  ``http.server``, so the ratio is what rendering the page live costs over painting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import shutil
import statistics
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.servers.ports import free_port
from benchmarks.common import quantile, row

VIEWS = ("swarms", "tasks", "audit", "chassis", "cost")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByType('paint').find(p => p.name === 'first-contentful-paint');
  return {fcp: fcp ? fcp.startTime : null, server: nav.responseEnd - nav.requestStart, bytes: nav.transferSize};
}"""


@contextlib.contextmanager
def console_at_scale(directory: Path) -> Iterator[tuple[str, str]]:
    """The console on a 10k-swarm / 100k-entry platform, served on a free port from a thread of its own."""
    import uvicorn

    from infrafabric.console import create_console_app
    from tests.fixtures.console_scale import large_platform

    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with large_platform(directory) as (platform, authority):
            app = create_console_app(platform)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   lifespan="on"))
            box["credential"] = authority.issue("viewer", "bench")
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.05)
            ready.set()
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.1)
            server.should_exit = True
            await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the benchmark's thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="console-bench", daemon=True)
    thread.start()
    ready.wait(600)
    if "error" in box or "credential" not in box:
        raise RuntimeError(f"the console did not start: {box.get('error')!r}")
    try:
        yield f"http://127.0.0.1:{port}", box["credential"]
    finally:
        stop.set()
        thread.join(60)


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


def _measure(page: Any, url: str, n: int) -> tuple[list[float], list[float]]:
    fcp, server = [], []
    for _ in range(n):
        page.goto(url)
        page.wait_for_function("() => performance.getEntriesByType('paint').length > 0", timeout=10_000)
        t = page.evaluate(TIMING)
        fcp.append(float(t["fcp"]))
        server.append(float(t["server"]))
    return fcp, server


def run(n: int = 15) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise RuntimeError("Debian's chromium is missing: `make servers` installs it")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp, console_at_scale(Path(tmp) / "platform") as (
            url, credential), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.goto(url + "/login")
        page.fill("#credential", credential)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url("**/swarms")
        copies = Path(tmp) / "static"
        (copies / "static").mkdir(parents=True)
        for name in ("console.css", "console.js"):
            (copies / "static" / name).write_bytes(context.request.get(f"{url}/static/{name}").body())
        for view in VIEWS:
            (copies / f"{view}.html").write_text(page.goto(f"{url}/{view}").text())  # type: ignore[union-attr]
        all_fcp, all_static = [], []
        with static_server(copies) as plain:
            for view in VIEWS:
                _measure(page, f"{url}/{view}", 2)  # warm: the first visit fetches the stylesheet and script
                fcp, server = _measure(page, f"{url}/{view}", n)
                static_fcp, _ = _measure(page, f"{plain}/{view}.html", n)
                all_fcp += fcp
                all_static += static_fcp
                rows.append(row(f"console_{view}_first_paint_p50", statistics.median(fcp), "ms",
                                "same_page_static_file_p50", statistics.median(static_fcp), "< 300"))
                rows.append(row(f"console_{view}_server_p50", statistics.median(server), "ms", "", None, "reported"))
        rows.append(row("console_first_paint_p99_all_views", quantile(all_fcp, 0.99), "ms",
                        "same_page_static_file_p99", quantile(all_static, 0.99), "< 300"))
        browser.close()
    return rows


if __name__ == "__main__":
    from benchmarks.run import print_rows

    print_rows("bench_console", run())
