"""The README's screenshots of the web page: a real daemon with a few jobs (done, failed, one held mid-way),
photographed in Debian's chromium (Playwright, WebGL by SwiftShader).

    .venv/bin/python tools/web_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import DaemonProcess, make_photo  # noqa: E402
from tests.integration.test_web import CHROMIUM_ARGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="glimpsed-shots-"))
    gate = root / "gate"
    gate.mkdir()
    d = DaemonProcess(root, {"web": {"port": 0},
                             "worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"},
                             "pipeline": {"segment": {"size": 256, "object_size": 200},
                                          "export": {"preview_size": 256, "turntable_size": 128}}},
                      env={"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "reconstruct"})
    d.start()
    try:
        url = d.wait_for(lambda: d.store().daemon_state()["web_url"], "the page", 30)
        (gate / "open").touch()
        (d.inbox / "vase.jpg").write_bytes(make_photo(5, (480, 360)))
        d.wait_jobs("done", 1)
        blank = io.BytesIO()
        Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(blank, "PNG")
        (d.inbox / "blank.png").write_bytes(blank.getvalue())
        d.wait_jobs("failed", 1)
        (gate / "open").unlink()
        (d.inbox / "teapot.jpg").write_bytes(make_photo(2))
        d.wait_for(lambda: (gate / "reached").exists(), "a job held after reconstruct")
        (done,) = d.jobs("done")
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(url)
            page.wait_for_selector("#running tr[data-job]")
            page.screenshot(path=str(args.out / "web-dashboard.png"))
            page.goto(url + f"jobs/{done.id}")
            page.wait_for_function("document.querySelector('#glb-viewer').loaded === true", timeout=120_000)
            page.wait_for_function("document.querySelector('#splat-viewer').dataset.loaded === '1'", timeout=120_000)
            page.wait_for_timeout(1500)
            page.set_viewport_size({"width": 1100, "height": 1500})
            page.screenshot(path=str(args.out / "web-job.png"))
            browser.close()
        (gate / "open").touch()
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.out / 'web-dashboard.png'} and {args.out / 'web-job.png'}")


if __name__ == "__main__":
    main()
