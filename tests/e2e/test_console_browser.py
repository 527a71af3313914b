"""The operator console in a real browser: Debian's chromium driven by Playwright, against
``infrafabric console embedded`` running as its own process (the embedded platform, a real port).

Log in; see a blocker appear live after a swarm in another process reports it; reset a breaker and find
the audit entry; script payloads in every untrusted field never execute; the read-only role is refused
every action; the page does not poll. A screenshot of each view is saved under ``test-artifacts/console/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.servers.ports import free_port

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "console"
VIEWS = ("swarms", "tasks", "chassis", "cost", "audit", "mesh", "nodes")
XSS = ['<script>window.__xss=1</script>', '"><img src=x onerror="window.__xss=1">',
       "<svg onload=window.__xss=1>", "</textarea><script>window.__xss=1</script>"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

SWARM_SCRIPT = """
import asyncio, json, sys
from infrafabric.coordinator.remote import RemoteSwarmClient

async def main():
    url, credential, description = sys.argv[1], sys.argv[2], sys.argv[3]
    async with RemoteSwarmClient(url, ["integration:sip"], credential=credential) as swarm:
        event = await swarm.report_blocker({"description": description, "required_capabilities": []})
        print(json.dumps({"blocker_id": event["blocker_id"]}), flush=True)
        await asyncio.sleep(float(sys.argv[4]))  # the blocker lives on this swarm's session: keep it open

asyncio.run(main())
"""


class Console:
    def __init__(self, url: str, state: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.state, self.proc = url, state, proc

    def credential(self, role: str) -> str:
        return (self.state / f"{role}.credential").read_text().strip()

    def issue(self, role: str, name: str) -> str:
        from infrafabric.coordinator.credentials import CredentialAuthority

        return CredentialAuthority.load_or_create(self.state / "authority").issue(role, name)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make servers` installs it")
    state = tmp_path_factory.mktemp("console") / "state"
    port = free_port()
    log = (state.parent / "console.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "infrafabric.cli.main", "console", "embedded", "--state", str(state),
                             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while not (state / "console.url").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the console did not start:\n" + (state.parent / "console.log").read_text()[-3000:])
        time.sleep(0.1)
    try:
        yield Console((state / "console.url").read_text().strip(), state, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser: object, console: Console, role: str = "operator") -> object:
    context = browser.new_context(viewport={"width": 1440, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(console.url + "/login")
    page.fill("#credential", console.credential(role))
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url("**/swarms")
    return page


def run_swarm(console: Console, swarm_id: str, description: str, hold: float = 20.0) -> subprocess.Popen[str]:
    url = (console.state / "swarm-api.url").read_text().strip()
    return subprocess.Popen([sys.executable, "-c", SWARM_SCRIPT, url, console.issue("swarm", swarm_id), description,
                             str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_login_and_a_screenshot_of_every_view(console: Console, browser: object) -> None:
    page = open_page(browser, console)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for view in VIEWS:
        response = page.goto(f"{console.url}/{view}")
        assert response.status == 200
        assert page.locator("h1").first.is_visible()
        assert page.locator("nav.views a.current").inner_text().lower().startswith(view[:4])
        page.screenshot(path=str(SHOTS / f"{view}.png"), full_page=True)
    page.goto(f"{console.url}/swarms")
    assert page.locator("#swarms-table tbody tr").count() == 7
    assert page.locator("header .role").inner_text() == "operator"
    assert all((SHOTS / f"{v}.png").stat().st_size > 10_000 for v in VIEWS)
    page.context.close()


def test_a_blocker_reported_by_another_process_appears_live(console: Console, browser: object) -> None:
    page = open_page(browser, console)
    page.goto(f"{console.url}/tasks")
    page.wait_for_selector("#live-status.on")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.wait_for_timeout(1500)
    assert requests == [], f"the page polled while nothing happened: {requests}"  # server push only
    description = f"handshake stalls {time.time_ns()}"
    swarm = run_swarm(console, "session-9-remote", description)  # not one of the in-process demo swarms
    try:
        line = swarm.stdout.readline()  # type: ignore[union-attr]
        reported = time.monotonic()
        assert line, swarm.stderr.read()  # type: ignore[union-attr]
        blocker_id = json.loads(line)["blocker_id"]
        row = page.locator(f"tr[data-blocker='{blocker_id}']")
        row.wait_for(timeout=5000)
        shown_after = time.monotonic() - reported
        assert description in row.inner_text()
        feed = page.locator("#live-feed li", has_text="blocker_detected").first
        assert feed.is_visible()
        print(f"blocker shown {shown_after * 1000:.0f} ms after the other process reported it")
        page.screenshot(path=str(SHOTS / "tasks-live-blocker.png"), full_page=True)
    finally:
        swarm.kill()
        swarm.wait()
    page.context.close()


def test_reset_a_breaker_then_find_its_audit_entry(console: Console, browser: object) -> None:
    page = open_page(browser, console)
    row = page.locator("tr[data-swarm='session-3-h323']")
    assert "open" in row.locator("td.breaker").inner_text()
    row.get_by_role("button", name="Reset the breaker of session-3-h323").click()
    page.wait_for_url("**/swarms")
    assert page.locator(".flash").inner_text() == "breaker of session-3-h323 reset"
    assert page.locator("tr[data-swarm='session-3-h323'] td.breaker").inner_text().startswith("closed")
    page.goto(f"{console.url}/audit")
    page.fill("#audit-q", "session-3-h323")
    page.fill("#audit-op", "circuit_breaker_reset")
    page.click("form.search button")
    first = page.locator("#audit-table tbody tr").first
    first.wait_for()
    text = first.inner_text()
    assert "circuit_breaker_reset" in text and "console-operator" in text
    first.get_by_role("link", name="proof").click()
    proof = json.loads(page.locator("#proof-text").input_value())
    assert proof["leaf_index"] == int(first.get_attribute("data-seq")) and isinstance(proof["path"], list)
    assert proof["checkpoint"] is not None and proof["checkpoint"]["root"] == proof["root"]  # checkable offline
    assert page.locator("#verify-status").inner_text().startswith("Verified")
    page.context.close()


def test_script_in_every_untrusted_field_never_runs(console: Console, browser: object) -> None:
    swarms = [run_swarm(console, f"session-{i + 1}-x", payload, hold=30) for i, payload in enumerate(XSS)]
    try:
        for s in swarms:
            assert s.stdout.readline(), s.stderr.read()  # type: ignore[union-attr]
        page = open_page(browser, console)
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        for view in VIEWS:
            page.goto(f"{console.url}/{view}")
            page.wait_for_timeout(200)
            assert page.evaluate("window.__xss") is None, f"script ran on {view}"
        page.goto(f"{console.url}/tasks")
        shown = page.locator("#blockers-table").inner_text()
        assert all(p in shown for p in XSS)  # shown as the text it is
        page.goto(f"{console.url}/audit?q=session-1-x")
        assert page.evaluate("window.__xss") is None
        assert page.dialogs == [] and violations == []
        inline = page.evaluate("Array.from(document.scripts).filter(s => !s.src).length")
        assert inline == 0
    finally:
        for s in swarms:
            s.kill()
            s.wait()


def test_the_read_only_role_is_refused_every_action(console: Console, browser: object) -> None:
    page = open_page(browser, console, role="viewer")
    assert page.locator("header .role").inner_text() == "viewer"
    for view in VIEWS:
        page.goto(f"{console.url}/{view}")
        assert page.locator("form[action^='/actions/']").count() == 0
    csrf = page.locator("form[action='/logout'] input[name=csrf]").input_value()
    page.goto(f"{console.url}/swarms")
    before = page.locator("#swarms-table").inner_text()
    for path, form in (("/actions/reset-breaker", {"swarm_id": "session-3-h323"}),
                       ("/actions/set-budget", {"swarm_id": "session-1-ndi", "amount": "999"}),
                       ("/actions/deregister-service", {"service_id": "api-gateway-1"}),
                       ("/actions/retry-payout", {"payout_id": "payout_x"})):
        r = page.request.post(f"{console.url}{path}", form={**form, "csrf": csrf},
                              headers={"Origin": console.url}, max_redirects=0)
        assert r.status == 403 and "IF_ERR_FORBIDDEN" in r.text()
    page.goto(f"{console.url}/swarms")
    assert page.locator("#swarms-table").inner_text() == before
    page.goto(f"{console.url}/mesh")
    assert "api-gateway-1" in page.locator("#services-table").inner_text()
    page.context.close()


def tab_to(page: object, selector: str, limit: int = 120) -> int:
    """Press Tab until the focused element matches ``selector``; the number of presses (fails past ``limit``).
    Each stop must show where the focus is (an outline), or a keyboard user is lost."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
        focus = page.evaluate(  # type: ignore[attr-defined]
            """sel => { const el = document.activeElement; const st = getComputedStyle(el);
                        return {match: el.matches(sel), outline: st.outlineStyle, width: st.outlineWidth,
                                tag: el.tagName, visible: el.getBoundingClientRect().width > 0} }""", selector)
        if focus["match"]:
            assert focus["visible"] and focus["outline"] != "none" and focus["width"] != "0px", focus
            return presses
    raise AssertionError(f"{selector} is not reachable with Tab ({limit} presses)")


def test_the_keyboard_alone_logs_in_moves_between_views_and_acts(console: Console, browser: object) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(console.url + "/login")
    tab_to(page, "#credential")
    page.keyboard.type(console.credential("operator"))
    page.keyboard.press("Enter")
    page.wait_for_url("**/swarms")
    # the first stop is the skip link, shown when focused; it moves the focus past the header and views
    assert tab_to(page, "a.skip", limit=1) == 1
    assert page.evaluate("document.activeElement.getBoundingClientRect().left") >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # an action from the keyboard: a new budget typed into a swarm's row and submitted with Enter
    tab_to(page, "tr[data-swarm='session-6-talent'] input[name=amount]")
    page.keyboard.type("42.50")
    page.keyboard.press("Enter")
    page.wait_for_url("**/swarms")
    assert page.locator(".flash").inner_text().startswith("budget of session-6-talent")
    assert "$42.50" in page.locator("tr[data-swarm='session-6-talent']").inner_text()
    # every view is one Tab-and-Enter away through the view links
    tab_to(page, "nav.views a[href='/audit']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/audit")
    tab_to(page, "#audit-q")
    page.keyboard.type("session-6-talent")
    page.keyboard.press("Enter")
    page.wait_for_url("**/audit?*")
    first = page.locator("#audit-table tbody tr").first
    assert "budget_set" in first.inner_text()
    tab_to(page, "#audit-table tbody tr:first-child a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#proof-text")
    tab_to(page, "[data-copy]")
    page.keyboard.press("Enter")
    assert page.locator("[data-copy]").inner_text() == "Copied"
    context.close()
