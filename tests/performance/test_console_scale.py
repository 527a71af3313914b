"""The console at 10,000 swarms and 100,000 audit entries: every page is served from the server's own
pagination and search, so any page, any search and the oldest audit entries are reachable and correct.
(How fast the first paint is, in a real browser, is measured by ``make bench``: benchmarks/bench_console.py.)"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from infrafabric.console import create_console_app
from tests.fixtures.console_scale import ENTRIES, SWARMS, large_platform


async def test_ten_thousand_swarms_and_a_hundred_thousand_entries_stay_usable(tmp_path: Path) -> None:
    async with large_platform(tmp_path) as (platform, authority):
        app = create_console_app(platform)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console.test") as client:
            r = await client.post("/login", data={"credential": authority.issue("viewer", "scale")})
            assert r.status_code == 303
            timings = {}
            t0 = time.perf_counter()
            first = await client.get("/swarms")
            timings["swarms page 1"] = time.perf_counter() - t0
            # (membership is computed first: pytest's diff of a 100 kB page on failure would take minutes)
            pages = re.findall(r"page \d+ of \d+", first.text)
            assert pages == [f"page 1 of {SWARMS // 50}"] and len(re.findall(r"<tr data-swarm=", first.text)) == 50
            last = await client.get("/swarms", params={"page": SWARMS // 50})
            shown = re.findall(r'<tr data-swarm="([^"]+)"', last.text)
            assert shown == [f"swarm-{i:05d}" for i in range(SWARMS - 50, SWARMS)]
            found = await client.get("/swarms", params={"q": "swarm-0777"})
            assert len(re.findall(r"<tr data-swarm=", found.text)) == 10  # swarm-07770 .. swarm-07779
            t0 = time.perf_counter()
            audit = await client.get("/audit")
            timings["audit newest"] = time.perf_counter() - t0
            size = await platform.witness.asize()  # the entries, and the console's own record of this login
            assert size == ENTRIES + 1 and re.findall(r"[\d,]+ entries in the log", audit.text) == [
                f"{size:,} entries in the log"]
            seqs = [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', audit.text)]
            assert seqs == list(range(size - 1, size - 51, -1))
            t0 = time.perf_counter()
            hit = await client.get("/audit", params={"q": '"task-012345"'})
            timings["audit search"] = time.perf_counter() - t0
            assert sorted(int(s) for s in re.findall(r'<tr data-seq="(\d+)"', hit.text)) == [24690, 24691]
            oldest = await client.get("/audit", params={"before": 50})
            assert [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', oldest.text)] == list(range(49, -1, -1))
            print({k: f"{v * 1000:.0f} ms" for k, v in timings.items()})
