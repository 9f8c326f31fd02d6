"""The Gradio app: ``python app.py [--ckpt G] [--directions DIR ...] [--ddpm DIR] [--port 7860]``.

Bound to localhost, no analytics, no share link. Tabs: **Mix** (weighted directions, the grid follows the sliders),
**Morph** (frames between domains: strip, GIF, MP4), **Adapt** (one-shot training from an uploaded image or a prompt,
through the CLI's trainer into a run folder runs/app/<domain>; live progress, cancel, download or add to the
library), **Real photo** (inversion, then the photo in each domain)
and **Diffusion** (the DDPM with SVDiff shift files; translation of an upload; a Stable-Diffusion-layout folder
samples and translates with a prompt).

Every callback is a plain function below (tests call them directly); bad input raises ``ValueError`` with a message
that the UI shows (file names as the user knows them, never the app's temporary paths), and the app keeps working.
Uploads are size-limited and taken as files: images are opened by the tools' own reader (16-bit and float images
keep their values), never by the UI component first. Files are only read from the paths the user gave or uploaded.
"""
from __future__ import annotations

import argparse
import functools
import os
import queue
import re
import shutil
import tempfile
import threading
import traceback
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent
BUNDLED_G = ROOT / "checkpoints" / "synthfaces_stylegan2.safetensors"
BUNDLED_DIRECTIONS = ROOT / "checkpoints" / "directions"
#: The style encoder of the bundled generator: image targets on that generator train with it (configs/oneshot_encoder.yaml).
BUNDLED_ENCODER = ROOT / "checkpoints" / "synthfaces_encoder.safetensors"
BUNDLED_DDPM = ROOT / "checkpoints" / "synthfaces_ddpm"
#: The Diffusion tab's bundled shift file: the bundled DDPM adapted to SynthFaces' 10 sketches (SVDiff; see
#: checkpoints/README.md for the command, configs/ddpm_sketch_svdiff_bundled.yaml).
BUNDLED_SHIFT = ROOT / "checkpoints" / "shifts" / "sketch_10shot.safetensors"
#: Where the Adapt tab's runs go, one run folder each (as the CLI writes them): runs/app/<domain>.
APP_RUNS = ROOT / "runs" / "app"
MAX_SEEDS = 16
SLOTS = 6  # direction sliders on the Mix tab
MAX_UPLOAD_MB = 20
#: Results are 32-64 px a tile: the callbacks return the exact pixels, the page shows them this tall with sharp
#: (nearest-neighbour) pixels; Gradio's own style only ever shrinks an image.
DISPLAY_PX = 420
#: Phone width (<= PHONE_PX): a tab's row of controls and results becomes one column in which the controls and
#: results keep their order (the results right after their button), except that a "da-first" result (Mix's grid,
#: which renders on load and follows the sliders) comes before every control and "da-last" blocks (Mix's ways to add
#: directions and its file list) after them all; results take their image's own height instead of DISPLAY_PX (below
#: their label).
PHONE_PX = 600
CSS = (".da-result img { width: 100% !important; height: 100% !important; object-fit: contain !important; "
       "image-rendering: pixelated; }\n"
       f"@media (max-width: {PHONE_PX}px) {{\n"
       "  .da-row { flex-direction: column !important; flex-wrap: nowrap !important; }\n"
       "  .da-row > .column { display: contents !important; }\n"
       "  .da-first { order: -1 !important; }\n"
       "  .da-last { order: 1 !important; }\n"
       "  .da-result { height: auto !important; }\n"
       "  .da-result img { height: auto !important; }\n"
       "  .da-result .image-container { padding-top: 2.2em; }\n"
       "}")
MAX_IMAGE_SIDE = 4096
#: The smallest photo Real photo projects: a few pixels hold no face to invert.
MIN_PHOTO_SIDE = 16
#: The GIF and MP4 of a morph show each tile at least this many pixels tall (integer nearest-neighbour scaling).
MOVIE_TILE_PX = 192
SOURCE = "(source)"
#: Image uploads the file boxes accept (the reader itself decides by content, not by name).
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"]
#: Folders the app's own temporary files live in (uploads, runs, morphs): shortened to file names in messages.
TEMP_PREFIXES = ("domain_adapt_app_", "adapt_", "morph_")


# ----------------------------------------------------------------------------------------------------------
# Loading (cached) and checks


@lru_cache(maxsize=4)
def _generator(path: str, mtime: float):
    from gan_adapt.formats import load_generator
    return load_generator(path)


def project_path(text: str) -> str:
    """A path typed in the page: ``~`` expanded; a relative path that names nothing from the working directory
    but does from the project root (how the page shows the bundled models, see _shown_path) taken from there."""
    path = os.path.expanduser((text or "").strip())
    if path and not os.path.isabs(path) and not os.path.exists(path) and (ROOT / path).exists():
        return str(ROOT / path)
    return path


def generator(path: str):
    path = project_path(path)
    if not path:
        raise ValueError("enter the path of a generator checkpoint (.pt, .pkl or .safetensors)")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    return _generator(os.path.abspath(path), os.path.getmtime(path))


@lru_cache(maxsize=64)
def _direction(path: str, mtime: float):
    from gan_adapt.directions import Direction
    return Direction.from_pretrained(path)


def adapt_parameterizations() -> dict:
    """What the Adapt tab trains: the parameterizations whose result is a direction file (the library's kind), by
    name, with their specs (gan_adapt.parameterizations.SPECS)."""
    from gan_adapt.parameterizations import SPECS
    return {name: s for name, s in SPECS.items() if s.exports_direction}


def check_upload(path: str | None, what: str = "image") -> str:
    """An uploaded file: it exists, is not too large, and (for images) has a readable header of a sensible size.
    Returns the path."""
    if not path:
        raise ValueError(f"upload an {what} first")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p.name}: the upload is missing")
    size_mb = p.stat().st_size / 2 ** 20
    if size_mb > MAX_UPLOAD_MB:
        raise ValueError(f"{p.name}: {size_mb:.1f} MB, more than the {MAX_UPLOAD_MB} MB upload limit")
    if what == "image":
        from adapt_common.image_io import ImageReadError, peek_image
        try:
            _, (w, h) = peek_image(p)
        except ImageReadError as e:
            raise ValueError(str(e).replace(str(p), p.name)) from None
        if max(w, h) > MAX_IMAGE_SIDE:
            raise ValueError(f"{p.name}: {w}x{h} pixels; the largest side may be {MAX_IMAGE_SIDE}")
    return str(p)


def read_upload(path: str | None, size: int | None = None, min_side: int = 1):
    """An uploaded image as the tools read it ([1, 3, H, W] in [-1, 1]; ``size``: cropped and resized), or a
    ValueError naming the upload (also for an image under ``min_side`` px a side)."""
    from adapt_common.image_io import ImageReadError, load_image, peek_image
    p = Path(check_upload(path))
    _, (w, h) = peek_image(p)
    if min(w, h) < min_side:
        raise ValueError(f"{p.name}: {w}x{h} pixels is too small to work with; upload an image at least "
                         f"{min_side} pixels on each side (a photo of a face, cropped around it, works best)")
    try:
        return load_image(p, size=size)
    except ImageReadError as e:  # header fine, data damaged (truncated, bad values)
        raise ValueError(str(e).replace(str(p), p.name)) from None


def preview_upload(path: str | None):
    """The uploaded image as the tools will read it (uint8 [H, W, 3]), shown next to the upload; None when cleared."""
    if not path:
        return None
    from adapt_common.image_io import to_uint8
    return to_uint8(read_upload(path))[0]


def user_message(text: str) -> str:
    """A message without the app's temporary paths: each path in Gradio's upload folder or in one of the app's
    own temporary folders is shortened to its file name, the name the user knows."""
    tmp = tempfile.gettempdir().rstrip(os.sep)
    gradio_dir = os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tmp, "gradio")
    roots = [re.escape(gradio_dir), re.escape(tmp + os.sep) + "(?:" + "|".join(TEMP_PREFIXES) + r")[^/\s'\"]*"]

    def short(m: re.Match) -> str:
        path = m.group(0)
        tail = re.search(r"[.,:;)\]]*$", path).group(0)  # punctuation after the path stays
        return os.path.basename(path[:len(path) - len(tail)]) + tail
    for root in roots:
        text = re.sub(root + r"/[^\s'\"]+", short, text)
    return text


def _seeds(text: str) -> list[int]:
    from gan_adapt.seeds import parse_seeds
    if not (text or "").strip():
        raise ValueError("enter at least one seed, e.g. 0-3")
    return parse_seeds(text, limit=MAX_SEEDS)  # counted from the range bounds: "0-40000000" builds no list


def _grid(images, nrow):
    from adapt_common.image_io import make_grid, to_uint8
    return to_uint8(make_grid(images.detach().float().cpu(), nrow=nrow))[0]


def label_columns(grid, labels: list[str], tile: int, pad: int = 2, min_scale: int = 2):
    """A grid of ``tile`` px images (``pad`` px apart and around, as _grid makes them) with a label over each
    column: the grid scaled by a whole number k >= ``min_scale`` (nearest neighbour, so each pixel stays one
    colour) until the widest label fits its column, under a white band with the labels (lines split at "\n")
    centred over their columns. Returns uint8 [band + k·H, k·W, 3]."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.multiline_textbbox((0, 0), t, font=font, spacing=2) for t in labels]
    widest = max((b[2] - b[0] for b in boxes), default=0)
    k = max(min_scale, -(-(widest + 6) // (tile + pad)))
    band = max((b[3] for b in boxes), default=0) + 8
    big = np.repeat(np.repeat(np.asarray(grid), k, axis=0), k, axis=1)
    out = Image.new("RGB", (big.shape[1], big.shape[0] + band), "white")
    out.paste(Image.fromarray(big), (0, band))
    draw = ImageDraw.Draw(out)
    for j, text in enumerate(labels):
        centre = (pad + j * (tile + pad) + tile / 2) * k
        draw.multiline_text((centre, 4), text, fill="black", font=font, anchor="ma", align="center", spacing=2)
    return np.asarray(out)


def photo_labels(names: list[str], strength: float) -> list[str]:
    """The column labels of Real photo's row: photo, reconstruction, each domain at its weight, their mix."""
    names = [n for n in names if n]
    labels = ["photo", "reconstruction"] + [f"{n}\n{float(strength):.2f}" for n in names]
    if len(names) > 1:
        labels.append(f"mix\n{float(strength) / len(names):.2f} each")
    return labels


def morph_labels(keys: list[str], strength: float, frames: int) -> list[str]:
    """The column labels of a morph strip: each frame's domains and weights (as gan_adapt.morphing.morph blends
    them: linearly from one keyframe to the next, ``frames`` per step, the last keyframe once)."""
    import numpy as np
    keys = [k for k in keys if k]
    labels = []
    for i, (a, b) in enumerate(zip(keys[:-1], keys[1:])):
        ts = np.linspace(0, 1, int(frames))
        for t in ts if i == len(keys) - 2 else ts[:-1]:
            weights: dict[str, float] = {}
            for key, w in ((a, 1 - t), (b, t)):
                if key != SOURCE and w > 0:
                    weights[key] = weights.get(key, 0.0) + w * float(strength)
            labels.append("\n".join(f"{k} {w:.2f}" for k, w in weights.items()) or SOURCE)
    return labels


# ----------------------------------------------------------------------------------------------------------
# The direction library


class Library:
    """Named direction files: bundled ones, files from folders the user names, uploads and adapted results."""

    def __init__(self, folders=(), bundled: bool = True, store: str | Path | None = None):
        """``bundled``: start with checkpoints/directions (trained on the bundled generator, so only useful with it).
        ``store``: the folder that uploads and adapted results are copied into, one file per entry named after the
        entry, and read back from when a library starts on it (the app's is ``runs/app/library``: entries survive
        page reloads and server restarts); default a temporary folder that nothing reads again."""
        self.files: dict[str, str] = {}
        self.store = Path(store) if store else Path(tempfile.mkdtemp(prefix="domain_adapt_app_"))
        self.store.mkdir(parents=True, exist_ok=True)
        for folder in [BUNDLED_DIRECTIONS] * bundled + list(folders) + [self.store]:
            self.add_folder(folder, quiet=True)

    def _unique(self, name: str, new_file: bool = False) -> str:
        """``name``, or ``name (2)``, ... when taken (``new_file``: also by a file in the store)."""
        base, i = name, 2
        while name in self.files or (new_file and any(self.store.glob(f"{glob_escape(name)}.*"))):
            name = f"{base} ({i})"
            i += 1
        return name

    def add_folder(self, folder, quiet: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
        """Add every direction file of a folder: (names added, [(file name, why it was skipped)]). A bad file is
        skipped and reported; it never stops the rest of the folder."""
        folder = Path(os.path.expanduser(str(folder).strip()))
        if not folder.is_dir():
            if quiet:
                return [], []
            raise ValueError(f"{folder}: no such folder")
        added, skipped = [], []
        for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pt")):
            if f.name.endswith(".safetensors.json"):
                continue
            why = _not_a_direction(f)
            if why:
                skipped.append((f.name, why))
                continue
            name = self._unique(f.stem)
            self.files[name] = str(f)
            added.append(name)
        if not added and not quiet:
            raise ValueError(f"{folder}: no direction files (.safetensors or official .pt) in it"
                             + "".join(f"; {n}: {why}" for n, why in skipped[:3]))
        return added, skipped

    def add_file(self, path: str, name: str | None = None) -> str:
        """Add an uploaded or trained file under ``name`` (default: the file's name, or for the trainer's generic
        ``direction.safetensors`` its domain: the reference image's name or the prompt it was trained on), copied
        into the store under that unique name (two files of one name are two entries); refuses non-direction
        files."""
        p = Path(check_upload(path, "direction file"))
        why = _not_a_direction(p)
        if why:
            raise ValueError(f"{p.name}: not a direction file ({why})")
        default = adapted_name(str(p)) if p.stem == "direction" else p.stem
        key = self._unique(_file_name(name or default) or "direction", new_file=True)
        dst = self.store / f"{key}{p.suffix}"
        if p.resolve() != dst.resolve():
            shutil.copy(p, dst)
        self.files[key] = str(dst)
        return key

    def names(self) -> list[str]:
        return list(self.files)

    def paths(self) -> list[str]:
        """Each entry's file, in the order of names() (what the Mix tab offers for download)."""
        return list(self.files.values())

    def get(self, name: str):
        if name not in self.files:
            raise ValueError(f"{name!r} is not in the library")
        path = self.files[name]
        return _direction(path, os.path.getmtime(path))


def _not_a_direction(path: Path) -> str:
    """Why ``path`` cannot be loaded as a direction ("" when it can), in words without the path."""
    try:
        _direction(str(path), path.stat().st_mtime)
        return ""
    except (ValueError, OSError) as e:  # the loaders' own messages
        return str(e).replace(str(path), path.name).removeprefix(f"{path.name}: ") or e.__class__.__name__
    except Exception as e:  # noqa: BLE001  any other failure of one file (a manifest without 'kind': KeyError)
        return f"not a loadable direction file ({e.__class__.__name__}: {e})"


def adapted_name(path: str) -> str:
    """The library name of an adapted direction file: its domain (the prompt or the reference image's name), since
    every result file is called direction.safetensors."""
    try:
        domain = str(_direction(path, os.path.getmtime(path)).meta.get("domain") or "")
    except (ValueError, OSError):
        domain = ""
    return _file_name(domain) or Path(path).stem


def _file_name(name: str) -> str:
    """``name`` as a library entry that is also a file name: no path separators or other odd characters."""
    return re.sub(r"[^\w .,+()-]+", "_", name).strip(" ._")[:40]


def glob_escape(name: str) -> str:
    import glob
    return glob.escape(name)


def folder_message(added: list[str], skipped: list[tuple[str, str]]) -> str:
    """What adding a folder did, in words: the names added and each file skipped with its reason."""
    text = f"added {len(added)} direction(s)" + (f": {', '.join(added)}" if added else "")
    if skipped:
        text += f"; skipped {len(skipped)}: " + "; ".join(f"{n} ({why})" for n, why in skipped)
    return text


# ----------------------------------------------------------------------------------------------------------
# Callbacks


# (generator, direction) pairs already checked to fit; the objects are kept so their ids stay theirs
_CHECKED: dict = {}


def render(ckpt: str, seeds: str, truncation: float, noise_mode: str = "const"):
    """The plain generator: a uint8 grid [H, W, 3]."""
    return mix_render(ckpt, None, [], [], seeds, truncation, noise_mode)


def mix_render(ckpt: str, library: Library | None, names: list[str], weights: list[float], seeds: str,
               truncation: float, noise_mode: str = "const"):
    """The generator with Σ wᵢ·directionᵢ (any weights, negative too) for the seeds: a uint8 grid."""
    import torch

    from gan_adapt.directions import DomainEdit
    from gan_adapt.seeds import z_from_seeds
    g = generator(ckpt)
    seed_list = _seeds(seeds)
    pairs = [(library.get(n), float(w)) for n, w in zip(names, weights) if n and float(w) != 0.0]
    for d, _ in pairs:  # check each (generator, direction) once: hashing a 1024 px generator takes a while
        key = (id(g), id(d))
        if key not in _CHECKED:
            try:
                d.check_fits(g)
            except ValueError as e:
                raise ValueError(f"a direction does not fit this generator: {e}") from e
            _CHECKED[key] = (g, d)
    edit = DomainEdit(g, pairs, check=False)
    with torch.no_grad():
        images = edit.generate(z_from_seeds(seed_list, g.style_dim), truncation=float(truncation),
                               noise_mode=noise_mode)
    return _grid(images, min(4, len(seed_list)))


def morph_files(ckpt: str, library: Library, keys: list[str], strength: float, frames: int, seeds: str,
                out_dir: str | None = None, progress=None) -> tuple[str, str, str]:
    """Frames through the keyframes (``(source)`` or a library name each): strip PNG (each frame's domains and
    weights over its column, see label_columns), GIF and MP4 (scaled up, nearest neighbour, to tiles at least
    MOVIE_TILE_PX tall) paths. ``progress`` gets 0 before the generator loads, then the fraction of frames
    rendered after each (gan_adapt.morphing.morph's callback; rendering is most of the time), and 1 when the
    files are written."""
    import numpy as np
    import torch
    from PIL import Image

    from gan_adapt.morphing import Keyframe, morph, save_gif, save_mp4, save_strip
    from gan_adapt.seeds import z_from_seeds
    keys = [k for k in keys if k]
    if len(keys) < 2:
        raise ValueError("choose at least two keyframes (domains) to morph between")
    if not 2 <= int(frames) <= 32:
        raise ValueError("frames per step must be between 2 and 32")
    _report(progress, 0.0, "loading the generator")  # at once, before anything loads
    g = generator(ckpt)
    kf = [Keyframe(g, [] if k == SOURCE else [(library.get(k), float(strength))], k) for k in keys]
    with torch.no_grad():
        frames_t = morph(kf, z_from_seeds(_seeds(seeds), g.style_dim), int(frames),
                         callback=None if progress is None else
                         lambda done, total: _report(progress, done / total, "rendering frames"))
    out = Path(out_dir or tempfile.mkdtemp(prefix="morph_"))
    strip = save_strip(frames_t, out / "strip.png")
    with Image.open(strip) as im:
        plain = np.asarray(im.convert("RGB"))
    Image.fromarray(label_columns(plain, morph_labels(keys, strength, int(frames)), g.size)).save(strip)
    up = max(2, -(-MOVIE_TILE_PX // frames_t.shape[-1]))
    big = frames_t.repeat_interleave(up, dim=-2).repeat_interleave(up, dim=-1)
    files = str(strip), str(save_gif(big, out / "morph.gif")), str(save_mp4(big, out / "morph.mp4"))
    _report(progress, 1.0, "done")
    return files


#: The Adapt tab's bundled examples: SynthFaces domains whose first few-shot face is offered as the reference, and
#: prompts (with the parameterization each example picks).
EXAMPLE_DOMAINS = ("sketch", "popart", "watercolor")
EXAMPLE_PROMPTS = (("a sepia photo of a face", "direction"), ("a thermal image of a face", "dommod"))
EXAMPLE_ITERS = 60


def adapt_examples(folder: str | Path) -> list[list]:
    """The Adapt tab's examples as rows of (reference image or None, prompt, parameterization, iterations): the
    1-shot reference of each EXAMPLE_DOMAINS domain (adapt_common.synthfaces.data.fewshot_set, the image
    ``target.image=synthfaces:<domain>`` trains on), written as ``<domain>.png`` into ``folder`` so the run and the
    library entry are named after the domain; then EXAMPLE_PROMPTS."""
    from adapt_common.image_io import save_image
    from adapt_common.synthfaces.data import fewshot_set
    folder = Path(folder)
    rows = []
    for domain in EXAMPLE_DOMAINS:
        image, _ = fewshot_set(domain, 1, size=128)
        rows.append([str(save_image(image, folder / f"{domain}.png")), "", "stylespace", EXAMPLE_ITERS])
    return rows + [[None, text, param, EXAMPLE_ITERS] for text, param in EXAMPLE_PROMPTS]


#: Mix examples on the bundled directions: the weights of each (the other slots at 0) and the seeds.
MIX_EXAMPLES = (({"sketch": 0.8, "popart": 0.4}, "0-3"), ({"sepia": 1.0}, "4-7"),
                ({"pixelart": 0.7, "sketch": -0.5}, "8-11"), ({"negative": 0.6, "popart": 0.6}, "0-3"))
#: Morph examples: (keyframes, strength, frames per step, seeds).
MORPH_EXAMPLES = (([SOURCE, "sketch"], 0.8, 6, "0-3"), ([SOURCE, "sepia", "popart"], 1.0, 5, "4-7"),
                  (["sketch", "pixelart"], 0.8, 6, "8-11"))
#: Real photo examples: (index of the rendered face, domains, strength, inversion steps).
PHOTO_EXAMPLES = ((0, ["sketch", "popart"], 0.8, 100), (1, ["sepia", "pixelart"], 0.8, 100))
EXAMPLE_FACES = 2


def example_faces(folder: str | Path, n: int = EXAMPLE_FACES) -> list[str]:
    """``n`` held-out SynthFaces photos (adapt_common.synthfaces.data.eval_set, the project's own renderer) written
    as ``synthfaces_face_<i>.png`` (128 px) into ``folder``: the example photos of Real photo and Diffusion."""
    from adapt_common.image_io import save_image
    from adapt_common.synthfaces.data import eval_set
    folder = Path(folder)
    faces, _ = eval_set("photo", n, size=128)
    return [str(save_image(face, folder / f"synthfaces_face_{i}.png")) for i, face in enumerate(faces)]


def mix_examples(slots: list[str]) -> tuple[list[list], list[str]]:
    """The Mix examples whose directions all sit in ``slots`` (the slot dropdowns' first values): rows of
    (each slot's name, each slot's weight, seeds), and a label per row ("sketch 0.80 + popart 0.40, seeds 0-3")."""
    rows, labels = [], []
    for weights, seeds in MIX_EXAMPLES:
        if not set(weights) <= set(slots):
            continue
        rows.append(list(slots) + [float(weights.get(n, 0.0)) if n else 0.0 for n in slots] + [seeds])
        labels.append(" + ".join(f"{n} {w:.2f}" for n, w in weights.items()) + f", seeds {seeds}")
    return rows, labels


def morph_examples(names: list[str]) -> list[list]:
    """The Morph examples whose keyframes are all in the library (``names``) or the source."""
    return [[list(k), s, f, sd] for k, s, f, sd in MORPH_EXAMPLES if set(k) <= set(names) | {SOURCE}]


def photo_examples(faces: list[str], names: list[str]) -> list[list]:
    """The Real photo examples whose domains are all in the library: (face file, domains, strength, steps)."""
    return [[faces[i], list(d), s, st] for i, d, s, st in PHOTO_EXAMPLES if i < len(faces) and set(d) <= set(names)]


#: Diffusion examples with the bundled shift file: (shift scale, seeds, index of the rendered face to translate).
DIFFUSION_EXAMPLES = ((1.0, "0-3", 0), (1.5, "4-7", 1), (0.5, "8-11", 0))


def diffusion_examples(shift: str, faces: list[str]) -> tuple[list[list], list[str]]:
    """The Diffusion examples: rows of ([shift file], scale, seeds, face to translate) and a label per row."""
    rows = [[[shift], sc, sd, faces[i]] for sc, sd, i in DIFFUSION_EXAMPLES if i < len(faces)]
    return rows, [f"{Path(shift).stem} at {sc:.1f}, seeds {sd}, translate {Path(f).stem}" for _, sc, sd, f in rows]


def app_run_folder(domain: str, root: Path | None = None) -> Path:
    """A new folder ``runs/app/<domain>`` (``_2``, ``_3``, ... when taken) for one Adapt-tab run: a run folder like
    the CLI's, kept where the user can find, resume or export it. The folder is created here, by one ``mkdir``
    that fails when the name is taken, so two visitors training from references of the same name at once get two
    folders (an exists() check, then creating it later, gave both the same folder and the second a locked run)."""
    root = Path(root or APP_RUNS)
    root.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^\w.+-]+", "_", domain).strip("._")[:40] or "run"
    name, i = base, 2
    while True:
        try:
            (root / name).mkdir()
            return root / name
        except FileExistsError:
            name, i = f"{base}_{i}", i + 1


def adapt_recipe(ckpt: str, image: str | None) -> str:
    """The config file an Adapt-tab run starts from (see :func:`adapt_config`)."""
    bundled = Path(project_path(ckpt)).resolve() == BUNDLED_G.resolve()
    return "oneshot_encoder.yaml" if image and bundled and BUNDLED_ENCODER.is_file() else "oneshot_sketch_image.yaml"


def adapt_config(ckpt: str, image: str | None, prompt: str, parameterization: str, iters: int, run: Path,
                 clip: str):
    """The one-shot config of an Adapt-tab run: the tab's choices and the parameterization's own learning rate and
    betas (gan_adapt.parameterizations.SPECS), no end-of-run report, on configs/oneshot_encoder.yaml for an image on
    the bundled generator (the style encoder and the learned image analogy guide it: the validation styles' best) and
    configs/oneshot_sketch_image.yaml otherwise (CLIP-guided: a prompt, or a generator without an encoder). The CLI
    trains the same with ``python -m gan_adapt train --config <that file>`` and these keys as overrides."""
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import OneShotConfig
    spec = adapt_parameterizations()[parameterization]
    overrides = [f"training.iters={int(iters)}", "evaluation.n=0", f"training.lr={spec.oneshot_lr}",
                 f"training.betas=[{spec.oneshot_betas[0]},{spec.oneshot_betas[1]}]"]
    cfg = load_config(OneShotConfig, [ROOT / "configs" / adapt_recipe(ckpt, image)], overrides)
    # The user's strings go onto the loaded config as they are: through a key=value override OmegaConf would read
    # them as YAML and interpolations ("${oc.env:HOME}" the home path, "null" None, "a: b" a mapping).
    cfg.base = os.path.abspath(project_path(ckpt))
    cfg.exp.run_dir = str(run)
    cfg.training.parameterization = parameterization
    cfg.loss.clip = [clip]
    cfg.target.image, cfg.target.text = (image, "") if image else ("", prompt)
    cfg.target.domain = Path(image).stem if image else prompt
    return cfg


def _fit_in_steps(trainer, every: int, cancel: threading.Event | None):
    """``trainer.fit()`` (the CLI's loop) in a worker thread, in lock-step with the caller: yields ("step", step,
    stats) every ``every`` steps and at the last, then ("done", fit's result). At each yielded step the worker
    waits until the caller asks for more, so a Cancel set meanwhile stops training before the next step (the loop
    writes a checkpoint first); a caller that stops asking (closed page) stops it the same way."""
    from adapt_common.loop import LoopHooks
    events: queue.Queue = queue.Queue()
    go_on, abandoned = threading.Event(), threading.Event()
    iters = trainer.cfg.training.iters

    def on_step(step: int, stats: dict) -> None:
        if step % every == 0 or step == iters:
            go_on.clear()
            events.put(("step", step, stats))
            go_on.wait()

    def should_stop() -> bool:
        return abandoned.is_set() or (cancel is not None and cancel.is_set())

    def work() -> None:
        try:
            events.put(("done", trainer.fit(hooks=LoopHooks(on_step=[on_step], should_stop=should_stop))))
        except BaseException as e:  # noqa: BLE001  raised again in the caller's thread
            events.put(("error", e))

    worker = threading.Thread(target=work, name="adapt", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            if event[0] == "error":
                raise event[1]
            yield event
            if event[0] == "done":
                return
            go_on.set()
    finally:
        abandoned.set()
        go_on.set()
        worker.join()


def adapt(ckpt: str, image: str | None, prompt: str, parameterization: str, iters: int, every: int = 25,
          cancel: threading.Event | None = None, run_dir: str | None = None, clip: str = "synthfaces",
          progress=None):
    """One-shot training through the CLI's trainer and loop (ClipTrainer.fit) into a run folder like the CLI's
    (``run_dir``, default a new ``runs/app/<domain>``: config.yaml, log.csv, checkpoint.pt, samples/,
    before_after.png, direction.safetensors); yields (status, before/after grid or None, direction file or None)
    every ``every`` steps. ``cancel`` stops it before the next step, leaving a checkpoint that
    ``python -m gan_adapt train --config <run>/config.yaml --resume`` continues. ``progress`` (a gr.Progress)
    gets 0 before anything loads, then the fraction of steps done at each shown step, and 1 at the end."""
    from gan_adapt.training.clip_guided import ClipTrainer
    prompt = (prompt or "").strip()
    if image:
        read_upload(image)  # the whole image decodes: a damaged one is named now, not deep in the trainer
    if not image and not prompt:
        raise ValueError("upload a reference image or type a target prompt")
    if image and prompt:
        raise ValueError("use either a reference image or a prompt, not both")
    if not 1 <= int(iters) <= 2000:
        raise ValueError("iterations must be between 1 and 2000")
    choices = adapt_parameterizations()
    if parameterization not in choices:
        raise ValueError(f"parameterization {parameterization!r}: the app trains direction files; choose one of "
                         f"{', '.join(choices)}")
    if int(every) < 1:
        raise ValueError("progress must be shown every 1 or more steps")
    _report(progress, 0.0, "loading the generator and CLIP")  # at once: loading takes seconds
    generator(ckpt)  # a clear message for a bad checkpoint before anything else
    run = Path(run_dir) if run_dir else app_run_folder(Path(image).stem if image else prompt)
    cfg = adapt_config(ckpt, image, prompt, parameterization, iters, run, clip)
    cfg.logging.sample_every = int(every)  # the grids shown are the run's samples/stepNNNNNN.png
    trainer = ClipTrainer(cfg, quiet=True)
    shown = _shown_path(run)  # the status never shows the server's absolute path (runs/app/<domain>)
    yield f"training {trainer.param.describe()} in {shown}", None, None
    for event in _fit_in_steps(trainer, int(every), cancel):
        if event[0] == "step":
            _, step, stats = event
            _report(progress, step / cfg.training.iters, "training")
            loss = (f"analogy L1 {stats['analogy_l1']:.3f}" if "analogy_l1" in stats
                    else f"direction loss {stats.get('direction', 0):.3f}")
            yield (f"step {step}/{cfg.training.iters}: {loss}",
                   _png(run / "samples" / f"step{step:06d}.png"), None)
        elif event[1]["stopped"]:
            _report(progress, 1.0, "cancelled")
            yield (f"cancelled at step {trainer.step}; {shown} holds its checkpoint (continue it with python -m "
                   f"gan_adapt train --config {Path(shown) / 'config.yaml'} --resume)"), None, None
        else:
            out = Path(event[1]["result"])
            _report(progress, 1.0, "done")
            yield (f"done: {out.name} ({trainer.param.num_trainable():,} values) in {shown}",
                   _png(run / "before_after.png"), str(out))


def _report(progress, fraction: float, desc: str) -> None:
    """One progress update (a gr.Progress or any callable taking (fraction, desc=...)); nothing when None. Returns
    None whatever the tracker returns (outside a Gradio event a gr.Progress returns its fraction)."""
    if progress is not None:
        progress(float(fraction), desc=desc)


def _shown_path(path: Path) -> str:
    """A path as shown on the page: relative to the project when inside it (not the server's absolute path), also
    when a folder on the way is a link to somewhere else (runs/ may link to a larger disk): the path as given
    (absolute, links kept) is tried before the path with its links resolved."""
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        try:
            return str(candidate.relative_to(ROOT))
        except ValueError:
            pass
    return str(path)


def _png(path: Path):
    """An image file as a uint8 array [H, W, 3] for the UI."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def photo_in_domains(ckpt: str, library: Library, image: str, names: list[str], strength: float, steps: int = 200,
                     progress=None):
    """Invert an uploaded photo (W+), then show: photo, reconstruction, each chosen domain, and their mix."""
    import torch

    from gan_adapt.directions import DomainEdit
    from gan_adapt.inversion import invert
    _report(progress, 0.0, "loading the generator")  # at once, before anything loads
    g = generator(ckpt)
    target = read_upload(image, size=g.size, min_side=MIN_PHOTO_SIDE)
    if not 10 <= int(steps) <= 2000:
        raise ValueError("inversion steps must be between 10 and 2000")
    def tick(step, loss) -> None:  # returns None: a true return stops the inversion (gr.Progress outside a
        progress((step + 1) / steps, desc="inverting")  # Gradio event returns its fraction)
    # "is None", not truthiness: a gr.Progress has a length (of its tracked iterables), 0 here, so it is falsy
    res = invert(g, target, steps=int(steps), callback=None if progress is None else tick)
    dirs = [library.get(n) for n in names if n]
    with torch.no_grad():
        row = [target, res.image]
        for d in dirs:
            row.append(DomainEdit(g, [(d, float(strength))]).generate(w=res.w))
        if len(dirs) > 1:
            row.append(DomainEdit(g, [(d, float(strength) / len(dirs)) for d in dirs]).generate(w=res.w))
    return _grid(torch.cat(row), len(row))


@lru_cache(maxsize=2)
def _ddpm(path: str, mtime: float):
    from diffusion_adapt.models import load_model
    return load_model(path)


@lru_cache(maxsize=1)  # a real Stable Diffusion is gigabytes: one at a time
def _t2i(path: str, mtime: float):
    from diffusion_adapt.text2image import load_t2i
    return load_t2i(path)


#: What the Diffusion tab takes, for messages about a folder it cannot use.
DIFFUSION_FOLDERS = ("the Diffusion tab takes an unconditional DDPM folder (DDPMPipeline.save_pretrained: "
                     "model_index.json and unet/, or a bare UNet2DModel folder with config.json) or a "
                     "Stable-Diffusion-layout folder (StableDiffusionPipeline.save_pretrained: unet/ and "
                     "text_encoder/, usually vae/, scheduler/ and tokenizer/ too)")


def diffusion_folder_kind(path: str) -> str:
    """"t2i" for a Stable-Diffusion-layout folder (unet/ and text_encoder/; diffusion_adapt.text2image.load_t2i
    refuses one whose parts are of another architecture), "ddpm" for anything else that may be an unconditional
    model (diffusion_adapt.models.load_model says what is wrong with it); a ValueError saying what is wrong and what
    to do for a folder that is neither."""
    import json

    from diffusion_adapt.text2image import is_t2i_folder
    p = Path(path)
    index = p / "model_index.json"
    info = None
    if index.exists():
        try:
            info = json.loads(index.read_text())
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{path}: model_index.json is damaged ({str(e).splitlines()[0]}); save the pipeline "
                             "again with save_pretrained, or choose another folder: " + DIFFUSION_FOLDERS) from None
    if is_t2i_folder(p):
        return "t2i"
    names = str((info or {}).get("_class_name", ""))
    if info is not None and ("text_encoder" in info or "StableDiffusion" in names):
        missing = " and ".join(f"{d}/" for d in ("unet", "text_encoder") if not (p / d).is_dir())
        raise ValueError(f"{path}: model_index.json names a {names or 'text-to-image pipeline'}, but the folder has "
                         f"no {missing}: a Stable-Diffusion-layout folder needs unet/ and text_encoder/ (as "
                         "StableDiffusionPipeline.save_pretrained writes them); copy the missing parts in, or choose "
                         "another folder")
    if info is None and not (p / "unet").is_dir() and not (p / "config.json").is_file():
        raise ValueError(f"{path}: not a diffusion model folder (no model_index.json, config.json, unet/ or "
                         "text_encoder/); " + DIFFUSION_FOLDERS)
    return "ddpm"


def _model_path_and_steps(model_dir: str, steps) -> tuple[str, str, int]:
    """(the folder's absolute path, its kind as diffusion_folder_kind says, the checked number of DDIM steps)."""
    path = project_path(model_dir)
    if not os.path.isdir(path):
        raise ValueError(f"{path or '(empty)'}: not a model folder; " + DIFFUSION_FOLDERS)
    if not 1 <= int(steps) <= 200:
        raise ValueError("steps must be between 1 and 200")
    return os.path.abspath(path), diffusion_folder_kind(path), int(steps)


def _ddpm_and_steps(model_dir: str, steps) -> tuple:
    """The (cached) model of a model folder, its scheduler and the checked number of DDIM steps."""
    path, _, steps = _model_path_and_steps(model_dir, steps)
    return (*_ddpm(path, os.path.getmtime(path)), steps)


def _t2i_and_steps(model_dir: str, steps) -> tuple:
    """The (cached) T2IModel of a Stable-Diffusion-layout folder and the checked number of DDIM steps."""
    path, _, steps = _model_path_and_steps(model_dir, steps)
    return _t2i(path, os.path.getmtime(path)), steps


def _is_t2i(model_dir: str) -> bool:
    """Whether the Diffusion tab's folder is a Stable-Diffusion-layout one (a ValueError for one it cannot use)."""
    return _model_path_and_steps(model_dir, 1)[1] == "t2i"


def _step_report(progress, start: int, total: int, desc: str):
    """A callback for diffusion_adapt.text2image's samplers (``callback(i, n)`` after DDIM step i of n) that reports
    (start + i + 1) / total to ``progress``; None when no progress is wanted."""
    if progress is None:
        return None
    return lambda i, n: _report(progress, min((start + i + 1) / total, 1.0), desc)


def _is_text_encoder_file(path: str) -> bool:
    """Whether a shift file shifts a CLIP text encoder (its keys under ``text_model.``, as the text-to-image
    trainer's spectral_shifts_te.safetensors), not a UNet."""
    from diffusion_adapt import svdiff
    keys = svdiff.SpectralShifts.from_pretrained(path).tensors
    return bool(keys) and all(k.startswith(svdiff.TEXT_MODEL_PREFIX) for k in keys)


def _t2i_shifted(model, shift_files: list[str], scales: list[float]):
    """A copy of a T2IModel with the shift files applied at their scales (diffusion_adapt.text2image's
    apply_t2i_shifts): text-encoder files to the text encoder, the others to the UNet; only the shifted parts are
    copied (the cached model itself when there are no files)."""
    import copy
    import dataclasses

    from diffusion_adapt.text2image import apply_t2i_shifts
    pairs = [(check_upload(f, "shift file"), float(s)) for f, s in zip(shift_files, scales) if f]
    if not pairs:
        return model
    te_pairs = [(f, s) for f, s in pairs if _is_text_encoder_file(f)]
    unet_pairs = [pair for pair in pairs if pair not in te_pairs]
    model = dataclasses.replace(model, unet=copy.deepcopy(model.unet) if unet_pairs else model.unet,
                                text_encoder=copy.deepcopy(model.text_encoder) if te_pairs else model.text_encoder)
    return apply_t2i_shifts(model, unet_pairs, te_pairs)


def _t2i_size(model) -> int:
    """The image size of a T2IModel: its VAE's (latent models) or its UNet's (pixel models)."""
    return int(model.vae.config.sample_size if model.vae is not None else model.unet.config.sample_size)


def _check_guidance(guidance) -> float:
    import math
    try:
        g = float(guidance)
    except (TypeError, ValueError):
        raise ValueError(f"guidance scale {guidance!r}: enter a number (1: no guidance; Stable Diffusion is "
                         "usually sampled at 5-8)") from None
    if not math.isfinite(g) or not 0 <= g <= 30:
        raise ValueError(f"guidance scale {g:g}: enter a number between 0 and 30 (1: no guidance)")
    return g


def _shifted(unet, shift_files: list[str], scales: list[float]):
    """A copy of ``unet`` with the shift files applied at their scales (the cached model itself when none)."""
    import copy

    from diffusion_adapt import svdiff
    pairs = [(check_upload(f, "shift file"), float(s)) for f, s in zip(shift_files, scales) if f]
    if not pairs:
        return unet
    unet = copy.deepcopy(unet)
    svdiff.apply_shift_files(unet, pairs)
    return unet


def parse_scales(text: str, n_files: int, default: float) -> list[float]:
    """Per-file scales from "1.0, 0.5" (one per file, in upload order); empty: ``default`` for every file."""
    text = (text or "").strip()
    if not text:
        return [float(default)] * n_files
    try:
        values = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"scales {text!r}: write numbers separated by commas, one per shift file") from None
    if len(values) != n_files:
        raise ValueError(f"{len(values)} scale(s) for {n_files} shift file(s): give one per file, or leave it empty "
                         "to use the slider for all")
    return values


def diffusion_samples(model_dir: str, shift_files: list[str], scales: list[float], seeds: str, steps: int,
                      progress=None, prompt: str = "", guidance: float = 5.0):
    """DDIM samples of the model with the shift files at their scales: a uint8 grid. ``progress`` gets 0 before
    the model loads, then the fraction of DDIM steps done after each step. A Stable-Diffusion-layout folder samples
    text to image: ``prompt`` (required) with classifier-free ``guidance`` (diffusion_adapt.text2image.t2i_sample,
    as ``python -m diffusion_adapt sample --prompt``); an unconditional DDPM ignores both."""
    from diffusion_adapt.sampling import ddim_sample, noise_from_seeds
    _report(progress, 0.0, "loading the diffusion model")
    if _is_t2i(model_dir):
        return _t2i_samples(model_dir, shift_files, scales, seeds, steps, progress, prompt, guidance)
    unet, sched, steps = _ddpm_and_steps(model_dir, steps)
    unet = _shifted(unet, shift_files, scales)
    seed_list = _seeds(seeds)
    size = unet.config.sample_size
    images = ddim_sample(unet, sched, noise_from_seeds(seed_list, (3, size, size)), steps,
                         callback=_step_report(progress, 0, steps, "sampling"))
    return _grid(images, min(4, len(seed_list)))


def _needs_prompt(model_dir: str, prompt: str) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError(f"{model_dir}: a Stable-Diffusion-layout (text-to-image) model: enter a prompt")
    return prompt


def _t2i_samples(model_dir, shift_files, scales, seeds, steps, progress, prompt, guidance):
    """diffusion_samples for a Stable-Diffusion-layout folder."""
    from diffusion_adapt.sampling import noise_from_seeds
    from diffusion_adapt.text2image import t2i_sample
    prompt, guidance = _needs_prompt(model_dir, prompt), _check_guidance(guidance)
    seed_list = _seeds(seeds)
    model, steps = _t2i_and_steps(model_dir, steps)
    model = _t2i_shifted(model, shift_files, scales)
    size = model.unet.config.sample_size  # the latents' size (the CLI's noise, seed by seed)
    noise = noise_from_seeds(seed_list, (model.unet.config.in_channels, size, size))
    images = t2i_sample(model, [prompt] * len(seed_list), noise, steps, guidance,
                        callback=_step_report(progress, 0, steps, "sampling"))
    return _grid(images, min(4, len(seed_list)))


def diffusion_translate(model_dir: str, image: str, shift_files: list[str], scales: list[float], steps: int,
                        progress=None, prompt: str = ""):
    """DDIB translation of an uploaded image: DDIM inversion with the plain model, decoding with the shifted one.
    Returns a uint8 strip: the input (at the model's size), its plain reconstruction, the translation.
    ``progress`` gets 0 before the model loads, then the fraction of the 3 x ``steps`` model evaluations done
    (inversion, plain decoding, shifted decoding) after each, and 1 at the end. A Stable-Diffusion-layout folder
    inverts with the empty prompt and decodes with ``prompt`` and the shift files (either is enough), without
    guidance (diffusion_adapt.text2image's t2i_invert and t2i_decode, as ``translate --target-prompt``); an
    unconditional DDPM ignores the prompt and needs a shift file."""
    import torch

    from diffusion_adapt.sampling import ddim_decode, ddim_invert
    _report(progress, 0.0, "loading the diffusion model")
    if _is_t2i(model_dir):
        return _t2i_translate(model_dir, image, shift_files, scales, steps, progress, prompt)
    source, sched, steps = _ddpm_and_steps(model_dir, steps)
    if not any(shift_files):
        raise ValueError("translation needs at least one shift file (the target domain)")
    x = read_upload(image, size=source.config.sample_size)
    target = _shifted(source, shift_files, scales)
    n = 3 * steps  # each of the three DDIM passes reports its share of the bar
    with torch.no_grad():
        noise = ddim_invert(source, sched, x, steps, callback=_step_report(progress, 0, n, "inverting"))
        recon = ddim_decode(source, sched, noise, steps,
                            callback=_step_report(progress, steps, n, "plain reconstruction"))
        out = ddim_decode(target, sched, noise, steps, callback=_step_report(progress, 2 * steps, n, "translating"))
    _report(progress, 1.0, "done")
    return _grid(torch.cat([x, recon, out]), 3)


def _t2i_translate(model_dir, image, shift_files, scales, steps, progress, prompt):
    """diffusion_translate for a Stable-Diffusion-layout folder: the source prompt is empty, the target prompt is
    ``prompt``; the plain reconstruction decodes with the plain model and the empty prompt."""
    import torch

    from diffusion_adapt.text2image import t2i_decode, t2i_invert
    prompt = (prompt or "").strip()
    if not prompt and not any(shift_files):
        raise ValueError("translation with a Stable-Diffusion-layout model needs a prompt (the target domain in "
                         "words) or a shift file, or both")
    source, steps = _t2i_and_steps(model_dir, steps)
    x = read_upload(image, size=_t2i_size(source))
    target = _t2i_shifted(source, shift_files, scales)
    n = 3 * steps
    with torch.no_grad():
        noise = t2i_invert(source, x, "", steps, callback=_step_report(progress, 0, n, "inverting"))
        recon = t2i_decode(source, noise, "", steps, callback=_step_report(progress, steps, n, "plain reconstruction"))
        out = t2i_decode(target, noise, prompt, steps, callback=_step_report(progress, 2 * steps, n, "translating"))
    _report(progress, 1.0, "done")
    return _grid(torch.cat([x, recon.cpu(), out.cpu()]), 3)


# ----------------------------------------------------------------------------------------------------------
# The UI

#: The explanation at the top of each tab (Adapt's is adapt_help()). Times: the bundled models, measured on one
#: CPU core beside training jobs (see docs/usage/app.md).
TAB_HELP = {
    "Mix": "**Mix** adds trained domain directions to the generator, each at its own weight (negative weights push "
           "away from a domain), and shows the same faces (one per seed) in the mixed domain. The grid follows the "
           "sliders: a re-render takes well under a second.",
    "Morph": "**Morph** renders frames that blend from one keyframe to the next (the source generator or a library "
             "direction at the chosen strength): a labelled strip, a GIF and an MP4. Two keyframes, 6 frames, "
             "4 seeds took 4 s on one loaded CPU core.",
    "Real photo": "**Real photo** projects an uploaded photo into the generator (W+ inversion: the latent whose "
                  "image matches the photo, optimised step by step), then renders that latent in each chosen domain "
                  "and in their mix. The bar counts inversion steps; 50 steps took 4 s on one loaded CPU core.",
    "Diffusion": "**Diffusion** samples the DDPM with SVDiff spectral-shift files (a few-shot domain, learnt as "
                 "small shifts of the weights' singular values), and translates an upload: DDIM inversion with the "
                 "plain model, then decoding with the shifted one. On the bundled DDPM the tab starts with the "
                 "bundled 10-shot sketch shift file and a rendered face, so Sample and Translate work at once. The "
                 "plain reconstruction shows what the "
                 "inversion keeps of the input (not exact: the DDIM steps only approximate the ODE). The bar "
                 "counts DDIM steps; 4 seeds at 25 steps took 10 s on one loaded CPU core (22 s with loading the "
                 "model). The folder may also be a Stable Diffusion layout (unet/ and text_encoder/, as "
                 "StableDiffusionPipeline.save_pretrained writes it): then Sample draws the prompt at the guidance "
                 "scale, and Translate inverts the upload with the empty prompt and decodes it with the prompt and "
                 "the shift files (a text-to-image SVDiff run's spectral_shifts_te file shifts the text encoder).",
}


def adapt_help() -> str:
    """The Adapt tab's explanation: what it does, each parameterization it offers (gan_adapt.parameterizations.SPECS:
    what trains, the trainable count on config-f 1024), and how long it takes."""
    kinds = "\n".join(f"- `{n}`: {s.trains} ({s.count_1024:,} values on a 1024 px StyleGAN2)"
                       for n, s in adapt_parameterizations().items())
    return ("**Adapt** trains a new domain from one reference image or a text prompt: only a small set of values "
            "trains while the generator stays frozen, and the result is a direction file for the library. A prompt "
            "is CLIP-guided; an image on the bundled generator is guided by the bundled style encoder (it finds the "
            "reference's unstyled face) and a learned image analogy of that pair (a net trained beforehand on random "
            "procedural styles), trained on pixels. What trains:\n" + kinds + "\n\nThe bar counts training steps; 20 iterations took 16 s on "
            "one loaded CPU core, loading CLIP included. Cancel keeps a checkpoint in the run folder.")


def build_app(default_ckpt: str = "", folders=(), ddpm: str = ""):
    import gradio as gr

    # the bundled directions belong to the bundled generator: offered only when the app starts on it
    on_bundled = not default_ckpt or Path(default_ckpt).resolve() == BUNDLED_G.resolve()
    # uploads and adapted results are kept in runs/app/library: read again at the next start
    library = Library(folders, bundled=on_bundled, store=APP_RUNS / "library")
    default_ckpt = default_ckpt or (str(BUNDLED_G) if BUNDLED_G.exists() else "")
    ddpm = ddpm or (str(BUNDLED_DDPM) if BUNDLED_DDPM.exists() else "")
    on_bundled_ddpm = bool(ddpm) and Path(ddpm).resolve() == BUNDLED_DDPM.resolve()
    # One Cancel per page (Gradio's session hash): a visitor's Cancel stops that visitor's training, never another's.
    cancels: dict[str, threading.Event] = {}

    def result_image(label, **kwargs):
        """An output image shown DISPLAY_PX tall with sharp pixels (see CSS), sent as PNG (exact pixels; Gradio's
        default WebP is lossy)."""
        classes = ["da-result"] + kwargs.pop("elem_classes", [])
        return gr.Image(label=label, height=DISPLAY_PX, elem_classes=classes, **{"format": "png", **kwargs})

    def guard(fn):
        """Errors as words in the UI. ``functools.wraps`` keeps ``fn``'s signature visible to Gradio, which looks
        there for a ``progress=gr.Progress()`` parameter to fill (without it no progress bar is shown)."""
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (ValueError, OSError) as e:
                raise gr.Error(user_message(str(e))) from e
            except Exception as e:  # noqa: BLE001  a bug: still words in the UI, the traceback in the console
                traceback.print_exc()
                raise gr.Error(user_message(f"unexpected {e.__class__.__name__}: {e}")) from e
        return wrapped

    def library_updates():
        """New choices for every control that lists the library: Mix's slots, Morph's keyframes, Real photo's
        domains (their chosen values stay), and Mix's list of the entries' files to download. Also sent when a
        page loads, so a reloaded page lists what the library holds now."""
        names = library.names()
        return ([gr.update(choices=[""] + names) for _ in range(SLOTS)]
                + [gr.update(choices=[SOURCE] + names), gr.update(choices=names), library.paths()])

    def on_add_folder(folder):
        added, skipped = library.add_folder(folder)
        gr.Info(user_message(folder_message(added, skipped)))
        return library_updates()

    def on_add_file(path, name=None):
        gr.Info(f"added {library.add_file(path, name)!r} to the library")
        return library_updates()

    def image_input(label, elem_id, value=None):
        """An image upload taken as a file (the app's reader opens it, with a message for a bad one) and a
        preview of the image as the tools read it (``value``: a file there from the start, previewed)."""
        upload = gr.File(value=value, label=label, file_types=IMAGE_TYPES, type="filepath", elem_id=elem_id)
        preview = gr.Image(value=preview_upload(value) if value else None, label="as read", type="numpy",
                           interactive=False, height=160, elem_id=f"{elem_id}-preview")
        upload.change(guard(preview_upload), upload, preview)
        return upload

    examples_dir = tempfile.mkdtemp(prefix="domain_adapt_app_")
    faces = example_faces(examples_dir)  # Real photo's and Diffusion's example photos (SynthFaces renders)
    with gr.Blocks(title="domain-adapt") as demo:
        gr.Markdown("## domain-adapt: one-shot and few-shot domain adaptation\nGenerator: any rosinality `.pt`, "
                    "NVIDIA `.pkl` or native `.safetensors`; directions: ours or official StyleDomain/HyperDomainNet.")
        # shown relative to the project root when inside it: the page never shows the server's absolute path
        ckpt = gr.Textbox(label="generator checkpoint", value=_shown_path(default_ckpt) if default_ckpt else "",
                          elem_id="ckpt")
        with gr.Tab("Mix", elem_id="tab-mix"):
            gr.Markdown(TAB_HELP["Mix"], elem_id="help-mix")
            with gr.Row(elem_classes=["da-row"]):
                with gr.Column(scale=1):
                    with gr.Column(elem_classes=["da-last"]):  # at phone width after the sliders and Render
                        folder = gr.Textbox(label="add direction files from a folder", elem_id="folder")
                        upload_dir = gr.File(label="upload a direction file", file_types=[".safetensors", ".pt"],
                                             elem_id="upload-direction")
                    names, weights = [], []
                    for i in range(SLOTS):
                        with gr.Row():
                            names.append(gr.Dropdown([""] + library.names(), value=(library.names() + [""] * SLOTS)[i],
                                                     label=f"direction {i + 1}", elem_id=f"dir{i}"))
                            weights.append(gr.Slider(-1.5, 1.5, value=0.0, step=0.05, label="weight",
                                                     elem_id=f"w{i}"))
                    seeds = gr.Textbox(label="seeds", value="0-3", elem_id="seeds")
                    truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="truncation", elem_id="truncation")
                    go = gr.Button("Render", elem_id="go")
                with gr.Column(scale=2):
                    # at phone width the grid comes first (it is rendered on load and follows the sliders)
                    out = result_image("samples", type="numpy", elem_id="out", elem_classes=["da-first"])
                    lib_files = gr.File(library.paths(), label=f"the library's direction files (uploads and "
                                        f"Adapt results are kept in {_shown_path(library.store)})",
                                        file_count="multiple", interactive=False, elem_id="library-files",
                                        elem_classes=["da-last"])

            def on_mix(ck, sd, tr, *slots):
                return mix_render(ck, library, list(slots[:SLOTS]), list(slots[SLOTS:]), sd, tr)
            mix_inputs = [ckpt, seeds, truncation, *names, *weights]
            go.click(guard(on_mix), mix_inputs, out, api_name="mix")
            for comp in [*weights, truncation, *names]:  # the grid follows the controls as they move
                comp.change(guard(on_mix), mix_inputs, out, trigger_mode="always_last")

            def on_seeds(ck, sd, tr, *slots):
                """A seed edit re-renders; a list still being typed ("0-") keeps the grid (Render names it)."""
                try:
                    _seeds(sd)
                except ValueError:
                    return gr.update()
                return on_mix(ck, sd, tr, *slots)
            seeds.change(guard(on_seeds), mix_inputs, out, trigger_mode="always_last")
            demo.load(guard(on_mix), mix_inputs, out)  # the grid is there when the page opens
            mix_rows, mix_labels = mix_examples([n.value for n in names])
            if mix_rows:  # an example sets every slot's direction and weight and the seeds, then the grid renders
                mix_ex = gr.Examples(mix_rows, [*names, *weights, seeds], example_labels=mix_labels,
                                     label="examples: bundled directions at chosen weights; click one",
                                     elem_id="mix-examples")
                mix_ex.load_input_event.then(guard(on_mix), mix_inputs, out)
            library_views = list(names)  # Morph's keyframes and Real photo's domains join below

        with gr.Tab("Morph", elem_id="tab-morph"):
            gr.Markdown(TAB_HELP["Morph"], elem_id="help-morph")
            keys = gr.Dropdown([SOURCE] + library.names(), value=[SOURCE] + library.names()[:1], multiselect=True,
                               label="keyframes, in order", elem_id="morph-keys")
            with gr.Row():
                strength = gr.Slider(0.0, 1.5, value=0.8, step=0.05, label="direction strength", elem_id="morph-strength")
                frames = gr.Slider(2, 16, value=6, step=1, label="frames per step", elem_id="morph-frames")
                mseeds = gr.Textbox(label="seeds", value="0-3", elem_id="morph-seeds")
            mgo = gr.Button("Morph", elem_id="morph-go")
            # the strip's own labels are its top rows: Gradio's label box would cover the first ones
            gr.Markdown("Strip: one row per seed, one column per frame, each labelled with its domains and weights.")
            strip = result_image("strip", type="filepath", show_label=False, elem_id="morph-strip")
            with gr.Row():
                gif = result_image("GIF", type="filepath", elem_id="morph-gif")
                mp4 = gr.Video(label="MP4", autoplay=True, loop=True, elem_id="morph-mp4")
            def on_morph(ck, k, s, f, sd, progress=gr.Progress()):
                return morph_files(ck, library, k, s, f, sd, progress=progress)
            morph_inputs, morph_outputs = [ckpt, keys, strength, frames, mseeds], [strip, gif, mp4]
            mgo.click(guard(on_morph), morph_inputs, morph_outputs, api_name="morph")
            morph_rows = morph_examples(library.names())
            if morph_rows:  # an example fills the tab and morphs
                morph_ex = gr.Examples(morph_rows, [keys, strength, frames, mseeds], elem_id="morph-examples",
                                       example_labels=[" → ".join(k) + f", strength {s}, seeds {sd}"
                                                       for k, s, _, sd in morph_rows],
                                       label="examples: keyframes of the bundled directions; click one to morph")
                morph_ex.load_input_event.then(guard(on_morph), morph_inputs, morph_outputs)
            library_views.append(keys)

        with gr.Tab("Adapt", elem_id="tab-adapt"):
            gr.Markdown(adapt_help(), elem_id="help-adapt")
            with gr.Row():
                with gr.Column(scale=1):
                    ref = image_input("one reference image", "adapt-image")
                    prompt = gr.Textbox(label="or a target prompt", placeholder="a pencil sketch of a face",
                                        elem_id="adapt-prompt")
                    kinds = adapt_parameterizations()
                    param = gr.Dropdown(list(kinds), value="stylespace", label="parameterization",
                                        elem_id="adapt-param",
                                        info="; ".join(f"{n}: {s.trains}" for n, s in kinds.items()))
                    iters = gr.Slider(10, 600, value=150, step=10, label="iterations", elem_id="adapt-iters")
                    with gr.Row():
                        train_btn = gr.Button("Train", variant="primary", elem_id="adapt-go")
                        stop_btn = gr.Button("Cancel", elem_id="adapt-cancel")
                    status = gr.Textbox(label="status", interactive=False, elem_id="adapt-status")
                with gr.Column(scale=2):
                    progress_img = result_image("source (top) and adapted (bottom)", type="numpy", elem_id="adapt-grid")
                    result = gr.File(label="direction file (after training)", interactive=False,
                                     elem_id="adapt-file")
                    add_btn = gr.Button("Add to the library", elem_id="adapt-add")
            gr.Examples(adapt_examples(tempfile.mkdtemp(prefix="domain_adapt_app_")), [ref, prompt, param, iters],
                        label=f"examples: a SynthFaces reference ({', '.join(EXAMPLE_DOMAINS)}) or a prompt; "
                              "click one, then Train", elem_id="adapt-examples")

            def on_train(ck, im, pr, pa, it, request=None, progress=gr.Progress()):
                session = getattr(request, "session_hash", None) or ""
                cancel = cancels[session] = threading.Event()
                try:
                    for st, grid, f in adapt(ck, im, pr, pa, int(it), cancel=cancel, progress=progress):
                        yield st, (grid if grid is not None else gr.update()), (f if f else gr.update())
                except (ValueError, OSError) as e:
                    raise gr.Error(user_message(str(e))) from e
                finally:
                    if cancels.get(session) is cancel:
                        del cancels[session]

            def on_cancel(request=None):
                cancel = cancels.get(getattr(request, "session_hash", None) or "")
                if cancel is not None:
                    cancel.set()
            # Gradio passes the gr.Request to a parameter annotated with its class (this module's annotations are
            # strings, which Gradio cannot resolve to a local import)
            on_train.__annotations__["request"] = on_cancel.__annotations__["request"] = gr.Request
            # two visitors may train at once (Gradio's default is one run of an event at a time for everyone)
            train_btn.click(on_train, [ckpt, ref, prompt, param, iters], [status, progress_img, result],
                            api_name="adapt", concurrency_limit=2)
            stop_btn.click(on_cancel, None, None, api_name="cancel")
            add_result = guard(lambda f: on_add_file(f, adapted_name(f) if f else None))

        with gr.Tab("Real photo", elem_id="tab-photo"):
            gr.Markdown(TAB_HELP["Real photo"], elem_id="help-photo")
            with gr.Row():
                with gr.Column(scale=1):
                    photo = image_input("a photo", "photo")
                    pdirs = gr.Dropdown(library.names(), value=library.names()[:2], multiselect=True,
                                        label="domains", elem_id="photo-domains")
                    pstrength = gr.Slider(0.0, 1.5, value=0.8, step=0.05, label="strength", elem_id="photo-strength")
                    psteps = gr.Slider(20, 600, value=150, step=10, label="inversion steps", elem_id="photo-steps")
                    pgo = gr.Button("Invert and stylise", elem_id="photo-go")
                with gr.Column(scale=2):
                    gr.Markdown("The photo, its reconstruction by the generator, the photo in each domain and in "
                                "their mix, each labelled above.")
                    pout = result_image("photo in each domain", type="numpy", show_label=False, elem_id="photo-out")

            def on_photo(ck, im, ds, s, st, progress=gr.Progress()):
                ds = [d for d in ds or [] if d]
                grid = photo_in_domains(ck, library, im, ds, s, int(st), progress)
                return label_columns(grid, photo_labels(ds, s), generator(ck).size)
            photo_inputs = [ckpt, photo, pdirs, pstrength, psteps]
            pgo.click(guard(on_photo), photo_inputs, pout, api_name="photo")
            photo_rows = photo_examples(faces, library.names())
            if photo_rows:  # an example fills the tab, then inverts and stylises
                photo_ex = gr.Examples(photo_rows, [photo, pdirs, pstrength, psteps], elem_id="photo-examples",
                                       example_labels=[f"{Path(f).stem} in {' + '.join(d)}" for f, d, _, _ in
                                                       photo_rows],
                                       label="examples: held-out SynthFaces photos (rendered by the project's "
                                             "renderer) in bundled domains; click one to run it")
                photo_ex.load_input_event.then(guard(on_photo), photo_inputs, pout)
            library_views += [pdirs, lib_files]
            # Every way into the library refreshes every list of it (Mix, Morph, Real photo).
            folder.submit(guard(on_add_folder), folder, library_views, api_name="add_folder")
            upload_dir.upload(guard(on_add_file), upload_dir, library_views, api_name="add_direction")
            add_btn.click(add_result, result, library_views, api_name="add_result")
            demo.load(library_updates, None, library_views)  # a reloaded page lists the library as it is now

        with gr.Tab("Diffusion", elem_id="tab-diffusion"):
            gr.Markdown(TAB_HELP["Diffusion"], elem_id="help-diffusion")
            # on the bundled DDPM the bundled 10-shot sketch shift file and a rendered face are there from the start:
            # Sample and Translate each work on the first click
            bundled_shift = [str(BUNDLED_SHIFT)] if on_bundled_ddpm and BUNDLED_SHIFT.is_file() else []
            with gr.Row(elem_classes=["da-row"]):
                with gr.Column(scale=1):
                    model = gr.Textbox(label="diffusion model folder (a DDPM, or a Stable-Diffusion-layout folder: "
                                             "unet/ and text_encoder/)", value=_shown_path(ddpm) if ddpm else "",
                                       elem_id="ddpm")
                    dprompt = gr.Textbox(label="prompt (Stable-Diffusion-layout folders only: what Sample draws and "
                                               "what Translate decodes to; a DDPM ignores it)", elem_id="ddpm-prompt")
                    dguidance = gr.Number(value=5.0, minimum=0, maximum=30, step=0.5,
                                          label="guidance scale (Stable-Diffusion-layout folders only, Sample; 1: no "
                                                "guidance)", elem_id="ddpm-guidance")
                    shifts = gr.File(value=bundled_shift or None, label="spectral-shift files", file_count="multiple",
                                     file_types=[".safetensors"], elem_id="shifts")
                    scale = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="shift scale", elem_id="shift-scale")
                    scales_text = gr.Textbox(label="per-file scales (e.g. 1.0, -0.5; empty: the slider for all)",
                                             elem_id="shift-scales")
                    dseeds = gr.Textbox(label="seeds", value="0-3", elem_id="ddpm-seeds")
                    dsteps = gr.Slider(5, 100, value=25, step=5, label="DDIM steps", elem_id="ddpm-steps")
                    dgo = gr.Button("Sample", variant="primary", elem_id="ddpm-go")
                with gr.Column(scale=2):
                    dout = result_image("samples", type="numpy", elem_id="ddpm-out")
            with gr.Row(elem_classes=["da-row"]):  # translation: its own row, so its result follows its button
                with gr.Column(scale=1):
                    timage = image_input("an image to translate", "translate-image",
                                         value=faces[0] if bundled_shift else None)
                    tgo = gr.Button("Translate (DDIM inversion, then the shifted model)", variant="primary",
                                    elem_id="translate-go")
                with gr.Column(scale=2):
                    tout = result_image("input, plain reconstruction, translation", type="numpy",
                                        elem_id="translate-out")
            if bundled_shift:
                diff_rows, diff_labels = diffusion_examples(bundled_shift[0], faces)
                gr.Examples(diff_rows, [shifts, scale, dseeds, timage], example_labels=diff_labels,
                            label="examples: the bundled 10-shot sketch shift file at a scale, with a rendered "
                                  "SynthFaces face to translate; click one, then Sample or Translate",
                            elem_id="diffusion-examples")

            def _files(files):
                return [f if isinstance(f, str) else f.name for f in (files or [])]

            def on_sample(md, files, sc, sct, sd, st, prompt="", guidance=5.0, progress=gr.Progress()):
                files = _files(files)
                return diffusion_samples(md, files, parse_scales(sct, len(files), sc), sd, int(st), progress,
                                         prompt=prompt, guidance=guidance)

            def on_translate(md, im, files, sc, sct, st, prompt="", progress=gr.Progress()):
                files = _files(files)
                return diffusion_translate(md, im, files, parse_scales(sct, len(files), sc), int(st), progress,
                                           prompt=prompt)
            tgo.click(guard(on_translate), [model, timage, shifts, scale, scales_text, dsteps, dprompt], tout,
                      api_name="translate")
            dgo.click(guard(on_sample), [model, shifts, scale, scales_text, dseeds, dsteps, dprompt, dguidance], dout,
                      api_name="diffusion")
    return demo


def launch(demo, **kwargs):
    """Queue and launch with the app's settings: localhost only, no share link, the upload limit, the display CSS,
    and the Adapt tab's run folders as files the page may offer for download."""
    settings = dict(server_name="127.0.0.1", share=False, max_file_size=f"{MAX_UPLOAD_MB}mb", css=CSS,
                    allowed_paths=[str(APP_RUNS)])
    return demo.queue().launch(**{**settings, **kwargs})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="", help="the generator (default: the bundled SynthFaces StyleGAN2)")
    ap.add_argument("--directions", nargs="*", default=[], help="folders of direction files for the library")
    ap.add_argument("--ddpm", default="", help="the diffusion model folder (default: the bundled DDPM)")
    ap.add_argument("--port", type=int, default=7860)
    args = ap.parse_args(argv)
    launch(build_app(args.ckpt, args.directions, args.ddpm), server_port=args.port)


if __name__ == "__main__":
    main()
