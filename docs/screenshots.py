"""The app pictures of the documentation (docs/usage/app.md): the app on the bundled models, one real action per
tab through the tab's own examples, in headless Chromium.

    python docs/screenshots.py [--out docs] [--shifts FILE.safetensors]

Mix: the example sketch 0.8 + pop art 0.4. Morph: the example source -> sepia -> pop art. Adapt: the SynthFaces
sketch example, 60 steps. Real photo: the example of a rendered SynthFaces face in sketch and pop art. Diffusion:
the bundled DDPM with the bundled 10-shot sketch shift file (or ``--shifts``) sampled, and the translation of the
rendered face the tab starts with. Phone: the Mix tab's first screen at 390 px. A picture whose page shows the
server's project path or a temporary path (text or field values) is refused. Needs Debian's chromium and
Playwright, as tests/test_browser.py does; a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _wait_image(page, elem_id: str, timeout_s: float) -> None:
    page.wait_for_selector(f"#{elem_id} img", timeout=int(timeout_s * 1000))
    page.wait_for_timeout(500)


#: The examples clicked (their labels on the page).
MIX_EXAMPLE = "sketch 0.80 + popart 0.40, seeds 0-3"
MORPH_EXAMPLE = "(source) → sepia → popart"
PHOTO_EXAMPLE = "synthfaces_face_0 in sketch + popart"


def _src(page, elem_id: str) -> str:
    page.wait_for_selector(f"#{elem_id} img", timeout=120_000)
    return page.locator(f"#{elem_id} img").first.get_attribute("src")


def _no_server_paths(page, name: str) -> None:
    """Refuse a picture whose page shows the server's absolute project path or a temporary path, in its text or in
    any field's value."""
    text = page.evaluate("document.body.innerText + '\\n' + [...document.querySelectorAll('input, textarea')]"
                         ".map(e => e.value).join('\\n')")
    for bad in (str(ROOT), "/tmp/"):
        if bad in text:
            line = next(t for t in text.splitlines() if bad in t)
            raise SystemExit(f"app_{name}.png would show {bad!r}: {line!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--shifts", default="", help="a spectral-shift file for the Diffusion tab instead of the "
                    "bundled checkpoints/shifts/sketch_10shot.safetensors")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    import app

    out = Path(args.out)
    demo = app.build_app()
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.local_url, wait_until="networkidle")

            def shot(name: str) -> None:
                _no_server_paths(page, name)
                page.screenshot(path=str(out / f"app_{name}.png"), full_page=True)

            # Mix: the grid rendered on load, then an example (every slot's weight, the seeds) renders again.
            first = _src(page, "out")
            page.locator("#mix-examples").get_by_text(MIX_EXAMPLE).click()
            page.wait_for_function(f"document.querySelector('#out img').src !== {first!r}", timeout=120_000)
            page.wait_for_timeout(500)
            shot("mix")

            page.get_by_role("tab", name="Morph").click()
            page.locator("#morph-examples").get_by_text(MORPH_EXAMPLE).click()  # fills the tab and morphs
            _wait_image(page, "morph-strip", 300)
            page.wait_for_selector("#morph-mp4 video[src]", timeout=120_000)
            shot("morph")

            page.get_by_role("tab", name="Adapt").click()
            page.locator("#adapt-examples").get_by_text("sketch.png").first.click()
            page.wait_for_selector("#adapt-image-preview img", timeout=60_000)
            page.locator("#adapt-go").click()
            page.wait_for_function("document.querySelector('#adapt-status textarea') && "
                                   "document.querySelector('#adapt-status textarea').value.startsWith('done')",
                                   timeout=900_000)
            page.wait_for_timeout(1000)
            shot("adapt")

            page.get_by_role("tab", name="Real photo").click()
            page.locator("#photo-examples").get_by_text(PHOTO_EXAMPLE).click()  # fills the tab and runs
            _wait_image(page, "photo-out", 600)
            shot("real_photo")

            page.get_by_role("tab", name="Diffusion").click()
            if args.shifts:  # the tab starts with the bundled shift file; --shifts replaces it
                page.set_input_files("#shifts input[type=file]", args.shifts)
                page.wait_for_timeout(1500)
            page.locator("#ddpm-go").click()
            _wait_image(page, "ddpm-out", 600)
            page.locator("#translate-go").click()
            _wait_image(page, "translate-out", 600)
            shot("diffusion")

            # Phone width: the Mix tab's first screen (the grid above the controls).
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(demo.local_url, wait_until="networkidle")
            _src(phone, "out")
            phone.wait_for_timeout(500)
            _no_server_paths(phone, "phone")
            phone.screenshot(path=str(out / "app_phone.png"))
            browser.close()
    finally:
        demo.close()
    print(f"wrote {out}/app_{{mix,morph,adapt,real_photo,diffusion,phone}}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
