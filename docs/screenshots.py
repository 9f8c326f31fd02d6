"""The app pictures of the documentation (docs/usage/app.md): the app on the bundled models, one real action per
tab, in headless Chromium.

    python docs/screenshots.py [--out docs] [--shifts FILE.safetensors]

Mix: sketch 0.8 + pop art 0.4 from the bundled library. Morph: source -> sketch -> pop art. Adapt: 60 steps from one
SynthFaces sketch. Real photo: a rendered SynthFaces face projected and shown in two domains. Diffusion: the bundled
DDPM with a spectral-shift file (``--shifts``, e.g. a few-shot run's ``spectral_shifts.safetensors``) and the
translation of a rendered face. Needs Debian's
chromium and Playwright, as tests/test_browser.py does; a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--shifts", default="", help="a spectral-shift file for the Diffusion tab")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    import app
    from adapt_common import synthfaces as sf
    from adapt_common.image_io import save_image

    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="screens_"))
    sketch, _ = sf.fewshot_set("sketch", 1, size=256)
    save_image(sketch[0], tmp / "sketch_reference.png")
    face, _ = sf.eval_set("photo", 1, size=256)
    save_image(face[0], tmp / "face.png")

    demo = app.build_app()
    names = app.Library().names()
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.local_url, wait_until="networkidle")

            # Mix: the library fills the slots in name order; weight the sketch and pop-art slots.
            for name, w in (("sketch", 0.8), ("popart", 0.4)):
                _set_number(page, f"w{names.index(name)}", w)
            page.locator("#go").click()
            _wait_image(page, "out", 120)
            page.screenshot(path=str(out / "app_mix.png"), full_page=True)

            page.get_by_role("tab", name="Morph").click()
            keys = page.locator("#morph-keys input")
            keys.click()
            page.get_by_role("option", name="popart").click()
            page.keyboard.press("Escape")
            page.locator("#morph-go").click()
            _wait_image(page, "morph-strip", 300)
            page.screenshot(path=str(out / "app_morph.png"), full_page=True)

            page.get_by_role("tab", name="Adapt").click()
            page.set_input_files("#adapt-image input[type=file]", str(tmp / "sketch_reference.png"))
            _set_number(page, "adapt-iters", 60)
            page.locator("#adapt-go").click()
            page.wait_for_function("document.querySelector('#adapt-status textarea') && "
                                   "document.querySelector('#adapt-status textarea').value.startsWith('done')",
                                   timeout=600_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "app_adapt.png"), full_page=True)

            page.get_by_role("tab", name="Real photo").click()
            page.set_input_files("#photo input[type=file]", str(tmp / "face.png"))
            _set_number(page, "photo-steps", 100)
            page.locator("#photo-go").click()
            _wait_image(page, "photo-out", 600)
            page.screenshot(path=str(out / "app_real_photo.png"), full_page=True)

            page.get_by_role("tab", name="Diffusion").click()
            if args.shifts:
                page.set_input_files("#shifts input[type=file]", args.shifts)
                page.wait_for_timeout(1500)
            page.locator("#ddpm-go").click()
            _wait_image(page, "ddpm-out", 600)
            if args.shifts:
                page.set_input_files("#translate-image input[type=file]", str(tmp / "face.png"))
                page.locator("#translate-go").click()
                _wait_image(page, "translate-out", 600)
            page.screenshot(path=str(out / "app_diffusion.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {out}/app_{{mix,morph,adapt,real_photo,diffusion}}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
