"""The web page, its JSON API and /metrics, served by the daemon (a real subprocess), driven in a real headless
browser: Debian's chromium through Playwright, WebGL by SwiftShader."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import daemons, make_photo

GATED = "tests.integration.gated_pipeline:GatedPipeline"
TOKEN = "a-web-token-for-the-tests-0123456789"
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                 "--no-sandbox"]


def _missing(message: str) -> None:
    from tests.unit.ai_modules.nodetools import tools_required

    pytest.fail(message) if tools_required() else pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[test]' (`make test` does)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _missing("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def start(tmp_path):
    """start(overrides, env) -> a running daemon serving its page on a free port; `.url` is the page."""
    with daemons(tmp_path, {"web": {"port": 0}}) as run:
        def start_daemon(overrides: dict | None = None, env: dict | None = None):
            d = run(overrides, env)
            d.url = d.wait_for(lambda: d.store().daemon_state()["web_url"], "the web page's address", 30)
            return d
        yield start_daemon


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    yield page
    context.close()


def http(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def drawn(png: bytes) -> float:
    """The fraction of a screenshot's pixels that differ from its most common colour (the background)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(pixels.astype(int) - background).sum(axis=1) > 24).mean())


def only_local(page, url: str) -> None:
    assert page.requests and all(r.startswith(url.rstrip("/")) or r.startswith(("data:", "blob:"))
                                 for r in page.requests), [r for r in page.requests if not r.startswith(url)]


def test_a_dropped_photo_appears_in_the_list_and_its_progress_moves(start, page, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    d = start({"worker": {"pipeline": GATED}}, {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "depth"})
    page.goto(d.url + "jobs")
    assert "No jobs" in page.inner_text("#job-rows")
    (d.inbox / "teapot.jpg").write_bytes(make_photo(2))
    row = page.locator("#job-rows tr", has_text="teapot.jpg")
    row.wait_for(timeout=30_000)                                     # the list polls the API: no reload
    page.wait_for_function("document.querySelector('#job-rows .stage') &&"
                           " document.querySelector('#job-rows .stage').textContent === 'depth'", timeout=60_000)
    held = float(row.locator("progress").get_attribute("value"))
    (gate / "open").touch()
    page.wait_for_function("document.querySelector('#job-rows .state').textContent === 'done'", timeout=90_000)
    assert held == 1.0 and row.locator(".stage").inner_text() == "export"  # moved on from depth to the last stage
    page.goto(d.url)
    page.wait_for_selector("#counts .done b")
    assert page.inner_text("#counts .done b") == "1" and "running" in page.inner_text("#daemon")
    only_local(page, d.url)
    assert f"web page: {d.url}" in d.cli("status").stdout


def test_retry_moves_a_failed_job_back_to_the_queue(start, page):
    d = start()
    blank = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(blank, "PNG")   # nothing to cut out
    (d.inbox / "blank.png").write_bytes(blank.getvalue())
    (job,) = d.wait_jobs("failed", 1)
    assert job.error_type == "NoObjectFound"
    page.goto(d.url + f"jobs/{job.id}")
    assert "NoObjectFound" in page.inner_text(".error") and "drop a new photo" in page.inner_text(".advice")
    page.click("#retry")
    d.wait_for(lambda: any(e["event"] == "job_retried" for e in d.store().events(job.id)), "the retry")
    page.wait_for_selector("text=queued again by the user")
    d.wait_for(lambda: d.store().get(job.id).state == "failed" and d.store().get(job.id).attempts == 1,
               "the retried job to run again")


def test_the_job_page_shows_the_result_in_both_3d_viewers(start, page):
    d = start()
    (d.inbox / "vase.jpg").write_bytes(make_photo(5, (480, 360)))
    (job,) = d.wait_jobs("done", 1)
    # Each viewer's own "load" event, caught on its way down to the element (it does not bubble).
    page.add_init_script("window.loads = []; document.addEventListener('load', (e) => "
                         "{ if (e.target.id) window.loads.push(e.target.id); }, true);")
    page.goto(d.url + f"jobs/{job.id}")
    assert page.inner_text(".stages").count("\n") >= 7                 # a row per stage, with seconds
    page.wait_for_function("window.loads.includes('glb-viewer') && window.loads.includes('splat-viewer')",
                           timeout=120_000)
    page.wait_for_timeout(1500)                                          # a few frames drawn
    mesh, splats = (page.locator(sel).screenshot() for sel in ("#glb-viewer", "#splat-viewer"))
    assert drawn(mesh) > 0.02, "model-viewer drew nothing"
    assert drawn(splats) > 0.02, "the splat viewer drew nothing"
    assert page.evaluate("document.querySelector('#splat-viewer').dataset.error") is None
    only_local(page, d.url)
    files = [a.get_attribute("href") for a in page.locator(".files a").all()]
    assert {f.rsplit("/", 1)[1] for f in files} == {"vase.glb", "vase.ply", "vase.splat", "manifest.json",
                                                   "preview.png", "turntable.webp"}
    status, body = http(d.url.rstrip("/") + files[0])
    assert status == 200 and body == (d.outbox / "vase" / files[0].rsplit("/", 1)[1]).read_bytes()
    status, metrics = http(d.url + "metrics")
    text = metrics.decode()
    assert status == 200 and 'glimpsed_jobs{state="done"} 1.0' in text
    assert 'glimpsed_jobs_finished_total{outcome="done"} 1.0' in text and "glimpsed_job_retries_total 0.0" in text
    assert "glimpsed_job_duration_seconds_count 1.0" in text and 'glimpsed_build_info{pipeline_version=' in text
    assert 'glimpsed_stage_duration_seconds_count{backend="fit",stage="reconstruct"} 1.0' in text
    assert 'glimpsed_workers{state="idle"} 1.0' in text and "glimpsed_oldest_queued_job_age_seconds 0.0" in text
    status, api = http(d.url + f"api/jobs/{job.id}")
    cli = json.loads(d.cli("show", job.id, "--json").stdout)
    assert status == 200 and json.loads(api)["job"] == cli["job"] and json.loads(api)["events"] == cli["events"]
    status, api = http(d.url + "api/status")
    assert json.loads(api).keys() == json.loads(d.cli("status", "--json").stdout).keys()


def test_a_token_guards_the_page_the_api_and_the_metrics(start, page, tmp_path):
    token_file = tmp_path / "web_token"
    token_file.write_text(TOKEN + "\n")
    d = start({"web": {"port": 0, "host": "0.0.0.0", "token_file": str(token_file)}})
    url = d.url.replace("0.0.0.0", "127.0.0.1")
    assert http(url + "api/status")[0] == 401
    assert http(url + "api/status", headers={"Authorization": "Bearer not-the-token"})[0] == 401
    assert http(url + "metrics")[0] == 401
    assert http(url + "api/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    response = page.goto(url + "jobs")
    assert response.status == 401 and page.locator("input[name=token]").count() == 1
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert "not the web token" in page.inner_text("main")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(url + "jobs")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert page.request.get(url + "api/status").status == 200            # the cookie works for the API too
    d.stop()
    d = start({"web": {"port": 0, "token": TOKEN, "metrics_public": True}})
    assert http(d.url + "metrics")[0] == 200 and http(d.url + "api/status")[0] == 401


def test_a_post_from_another_origin_is_refused(start):
    d = start()
    (d.inbox / "cup.jpg").write_bytes(make_photo(4))
    (job,) = d.wait_jobs("done", 1)
    retry = d.url + f"api/jobs/{job.id}/cancel"
    status, body = http(retry, "POST", {"Origin": "http://evil.example"})
    assert status == 403 and b"Origin" in body
    status, body = http(retry, "POST", {"Origin": d.url.rstrip("/")})
    assert status == 409 and b"done" in body                             # allowed; a done job cannot be cancelled
