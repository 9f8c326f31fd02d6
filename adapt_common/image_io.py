"""Image reading and writing shared by every tool: tensors in [-1, 1], NCHW, RGB."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(ValueError):
    """An input file that is not a readable image."""


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (values outside are clamped)."""
    if images.ndim == 3:
        images = images[None]
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile [N, C, H, W] into one [C, H', W'] image, ``nrow`` images per row (default: about square)."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one [3, H, W] (or [1, 3, H, W]) image in [-1, 1] as PNG (or any format PIL knows by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)[0]).save(path)
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    return save_image(make_grid(images.detach().float().cpu(), nrow=nrow), path)


#: The most pixels an input image may have: Pillow's own decompression-bomb threshold. A PNG header can claim
#: 100k x 100k pixels in a few bytes; the size is checked from the header, before anything is decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
#: Pillow modes with more than 8 bits a sample: read as numbers and scaled here, since ``convert("RGB")`` clips
#: them to 0..255 (a 16-bit image comes out nearly white, a 0..1 float one black).
HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
TIFF_MAGIC = (b"II*\0", b"MM\0*")  # little- and big-endian TIFF


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Read an image file as [1, 3, H, W] in [-1, 1]; every tool reads its input images here. ``size`` resizes
    (Lanczos) to size x size after a centre crop to a square.

    Each kind of file is scaled to 0..1 by what its numbers mean: 8-bit modes (1, L, P, RGB, CMYK, ...) by 255,
    16-bit ones by 65535, float ones as 0 = black, 1 = white. Alpha (and PNG transparency) is composited on white.
    16-bit RGB(A) PNGs are read at their high 8 bits (Pillow has no 48-bit mode), within one 8-bit level; TIFFs
    are read with tifffile when it is installed, at full precision (Pillow cannot open float RGB TIFFs)."""
    path = Path(path)
    image = _decode(path)
    if size is not None:
        image = _square(image, size)
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def peek_image(path: str | os.PathLike) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from an image file's header, with the same checks and errors as ``load_image``."""
    path = Path(path)
    tiff = _tiff(path, read=False)
    if tiff is not None:
        return tiff[0], tiff[1]
    with _open(path) as im:
        return im.mode, im.size


def _unreadable(path: Path, why) -> ImageReadError:
    return ImageReadError(f"{path}: not a readable image ({why}). Use a PNG, JPEG, WebP or TIFF file.")


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageReadError(f"{path}: {width} x {height} pixels, more than the {MAX_PIXELS:,} an input image may "
                             "have (a damaged header or a decompression bomb); resize the image first")


def _open(path: Path) -> Image.Image:
    """The image opened by Pillow (header only) with its size checked; any failure is an ImageReadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below, as an error
            im = Image.open(path)
    except FileNotFoundError:
        raise  # a missing file is not a corrupt one: keep its own error
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: the header claims more than {2 * MAX_PIXELS:,} pixels (a damaged file or a "
                             f"decompression bomb); input images may have at most {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise _unreadable(path, e) from e
    try:
        _check_pixels(path, *im.size)
    except ImageReadError:
        im.close()
        raise
    return im


def _decode(path: Path) -> Image.Image | np.ndarray:
    """The image as an 8-bit RGB PIL image, or (more than 8 bits a sample) a float32 [H, W, 3] array in 0..255."""
    tiff = _tiff(path, read=True)
    if tiff is not None:
        return _to_rgb(_scale_to_255(tiff[2], path), path, premultiplied=tiff[3])
    try:
        with _open(path) as im:
            im.load()
            im = _upright(im)
            if im.mode in HIGH_BIT_MODES:
                return _to_rgb(_scale_to_255(np.asarray(im), path), path)
            if "A" in im.getbands() or im.has_transparency_data:
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
            return im.convert("RGB")
    except (ImageReadError, FileNotFoundError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or damaged data
        raise _unreadable(path, e) from e


def _upright(im: Image.Image) -> Image.Image:
    """Turned as its EXIF orientation says (phone photos), as a browser shows it; a broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001  EXIF parsing fails in many ways; the pixels are still good
        return im


def _tiff(path: Path, read: bool):
    """A grey or RGB TIFF through tifffile (full precision, float RGB too): (description, (width, height), samples
    [H, W, C] or None, alpha premultiplied?), or None when the file is not such a TIFF, tifffile is not installed or
    cannot decode it (then Pillow tries: it converts palette, CMYK, YCbCr and min-is-white TIFFs itself)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) not in TIFF_MAGIC:
                return None
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            colour = {1: 1, 2: 3}.get(int(page.photometric))  # MINISBLACK, RGB
            if colour is None:
                return None
            width, height = page.imagewidth, page.imagelength
            _check_pixels(path, width, height)
            extra = [int(e) for e in page.extrasamples]
            alpha = bool(extra) and extra[0] in (1, 2)  # associated (premultiplied) or unassociated alpha
            what = f"{page.dtype} x{page.samplesperpixel}"
            arr = page.asarray() if read else None
            planar = page.axes.startswith("S")
    except ImageReadError:
        raise
    except Exception:  # noqa: BLE001  tifffile's many errors (a codec it lacks, damage): Pillow tries and explains
        return None
    if arr is not None:
        if planar:  # samples stored as planes: [S, H, W]
            arr = np.moveaxis(arr, 0, -1)
        if arr.ndim == 2:
            arr = arr[..., None]
        arr = arr[..., :colour + alpha]  # unspecified extra samples are not pixels
    return what, (width, height), arr, alpha and extra[0] == 1


def _scale_to_255(arr: np.ndarray, path: Path) -> np.ndarray:
    """Samples of any type as float32 in 0..255 (8-bit scale): 8-bit by 1, 16-bit by 255/65535, floats 0..1."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32) * 255
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{path}: the float image has NaN or infinite values; save it with finite values "
                                 "in 0..1")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -0.5 or hi > 2.0:  # clearly not 0..1: a 0..255 or a raw-data float image, not a picture to clip
            raise ImageReadError(f"{path}: float image with values {lo:g}..{hi:g}; float images are read as 0..1 "
                                 "(0 black, 1 white). Rescale it to 0..1, or save it as an 8- or 16-bit image")
        return np.clip(arr, 0, 1) * 255
    if arr.dtype.kind in "ui":  # 16-bit, or 32-bit holding 16-bit values (Pillow's mode I)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ImageReadError(f"{path}: integer image with values {lo}..{hi}; only 8- and 16-bit samples "
                                 "(0..65535) can be read. Save it as an 8- or 16-bit image")
        return arr.astype(np.float32) * (255 / 65535)
    raise ImageReadError(f"{path}: samples of type {arr.dtype} cannot be read; save it as an 8- or 16-bit image")


def _to_rgb(arr: np.ndarray, path: Path, premultiplied: bool = False) -> np.ndarray:
    """[H, W], [H, W, 1..4] in 0..255 -> [H, W, 3]: grey repeated, alpha composited on white."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: samples of shape {arr.shape}; expected grey, grey+alpha, RGB or RGBA samples")
    colour, alpha = (arr, None) if arr.shape[2] in (1, 3) else (arr[..., :-1], arr[..., -1:] / 255)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if alpha is not None:
        colour = (colour if premultiplied else colour * alpha) + 255 * (1 - alpha)
    return np.ascontiguousarray(colour, dtype=np.float32)


def _square(image: Image.Image | np.ndarray, size: int) -> Image.Image | np.ndarray:
    """Centre crop to a square, then Lanczos to size x size (8-bit images in Pillow, float ones per channel)."""
    w, h = image.size if isinstance(image, Image.Image) else image.shape[1::-1]
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    if isinstance(image, Image.Image):
        return image.crop(box).resize((size, size), Image.LANCZOS)
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c])).crop(box).resize((size, size), Image.LANCZOS)
                for c in range(image.shape[2])]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0, 255)
