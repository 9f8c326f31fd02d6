"""Reading input images (adapt_common.image_io.load_image, the one reader every tool uses): 16-bit and float images
keep their values, every Pillow mode is scaled by what its numbers mean, and bad files (decompression bombs,
damaged headers, truncated data) get an error naming the file.

The 16-bit PNGs are written by a few lines of zlib + struct below (the PNG format itself, not Pillow), the float
and 16-bit TIFFs by tifffile; expected values are the known pixel values, scaled by hand."""
import struct
import sys
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from adapt_common.datasets import load_image_folder
from adapt_common.image_io import MAX_PIXELS, ImageReadError, load_image, peek_image

EIGHT_BIT = 2 / 255  # one 8-bit level in [-1, 1] units


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, samples: np.ndarray, colour_type: int, bit_depth: int = 16, header=None) -> None:
    """A PNG from the spec: IHDR, one zlib IDAT of filter-0 rows, IEND. colour_type 0 grey, 2 RGB, 4 grey+alpha,
    6 RGBA; samples big-endian at ``bit_depth``."""
    h, w = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\0" + np.ascontiguousarray(samples[y]).astype(dtype).tobytes() for y in range(h))
    ihdr = header or struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows))
                     + _chunk(b"IEND", b""))


def as_unit(x: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> [H, W, 3] in 0..1."""
    return ((x[0].permute(1, 2, 0).numpy().astype(np.float64)) + 1) / 2


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["tifffile", "pillow"])
def tiff_reader(request, monkeypatch):
    """Read TIFFs with tifffile (when installed) and without it (Pillow's own modes F, I;16, I;16B, I)."""
    if request.param == "pillow":
        monkeypatch.setitem(sys.modules, "tifffile", None)  # `import tifffile` raises ImportError
    return request.param


def test_16bit_grey_png_keeps_its_values(tmp_path, rng):
    g = rng.integers(0, 65536, (7, 9), dtype=np.uint16)
    g[0, 0], g[0, 1] = 0, 65535
    write_png(tmp_path / "g16.png", g, colour_type=0)
    assert peek_image(tmp_path / "g16.png")[0] == "I;16"  # the file really is what Pillow calls I;16
    got = as_unit(load_image(tmp_path / "g16.png"))
    np.testing.assert_allclose(got, np.repeat((g / 65535)[..., None], 3, 2), atol=1e-6)


def test_16bit_rgb_and_rgba_png_within_one_8bit_level(tmp_path, rng):
    # Pillow opens 48/64-bit PNGs as 8-bit RGB(A) (their high bytes): within one 8-bit level of the exact values.
    rgb = rng.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    write_png(tmp_path / "rgb16.png", rgb, colour_type=2)
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "rgb16.png")), rgb / 65535, atol=1 / 255 + 1e-6)
    rgba = rng.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    write_png(tmp_path / "rgba16.png", rgba, colour_type=6)
    a = rgba[..., 3:] / 65535
    on_white = rgba[..., :3] / 65535 * a + (1 - a)
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "rgba16.png")), on_white, atol=2 / 255)


def test_float_and_16bit_tiffs(tmp_path, rng, tiff_reader):
    f = rng.random((6, 8)).astype(np.float32)
    f[0, 0], f[0, 1] = 0.0, 1.0
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "f.tif")), np.repeat(f[..., None], 3, 2), atol=1e-6)
    g = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    for order in "<>":  # I;16 and I;16B under Pillow
        tifffile.imwrite(tmp_path / "g.tif", g, byteorder=order)
        np.testing.assert_allclose(as_unit(load_image(tmp_path / "g.tif")), np.repeat((g / 65535)[..., None], 3, 2),
                                   atol=1e-6)
    tifffile.imwrite(tmp_path / "i.tif", g.astype(np.int32))  # Pillow's mode I, holding 16-bit values
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "i.tif"))[..., 0], g / 65535, atol=1e-6)
    tifffile.imwrite(tmp_path / "big.tif", g.astype(np.int32) * 1000)
    with pytest.raises(ImageReadError, match=r"big\.tif: integer image with values .*8- or 16-bit"):
        load_image(tmp_path / "big.tif")


def test_float_rgb_tiff_with_tifffile(tmp_path, rng):
    # Pillow cannot open float RGB TIFFs at all; tifffile reads them at full precision.
    f = rng.random((5, 7, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "f.tif")), f, atol=1e-6)
    rgb = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "planar.tif")), rgb / 65535, atol=1e-6)
    rgba = rng.random((5, 7, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    a = rgba[..., 3:]
    np.testing.assert_allclose(as_unit(load_image(tmp_path / "rgba.tif")), rgba[..., :3] * a + 1 - a, atol=1e-5)


def test_float_images_outside_0_1_are_named(tmp_path, tiff_reader):
    tifffile.imwrite(tmp_path / "f255.tif", np.full((4, 4), 200.0, np.float32))
    with pytest.raises(ImageReadError, match=r"f255\.tif: float image with values 200\.\.200; .*0\.\.1"):
        load_image(tmp_path / "f255.tif")
    nan = np.zeros((4, 4), np.float32)
    nan[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageReadError, match=r"nan\.tif: .*NaN"):
        load_image(tmp_path / "nan.tif")


def test_8bit_modes(tmp_path):
    """1, L, LA, P (with and without transparency), CMYK, RGBA: values computed by hand."""
    cases = {
        "1": (Image.new("1", (3, 2), 1), (1, 1, 1)),
        "L": (Image.new("L", (3, 2), 51), (0.2, 0.2, 0.2)),
        "LA": (Image.new("LA", (3, 2), (0, 51)), (0.8, 0.8, 0.8)),  # black at alpha 0.2 on white
        "RGBA": (Image.new("RGBA", (3, 2), (255, 0, 0, 102)), (1, 0.6, 0.6)),
        "CMYK": (Image.new("CMYK", (3, 2), (102, 0, 255, 0)), (0.6, 1, 0)),  # no black: RGB = 1 - CMY
    }
    p = Image.new("P", (3, 2), 1)
    p.putpalette([0, 0, 0, 255, 102, 0] + [0] * 762)
    cases["P"] = (p, (1, 0.4, 0))
    pt = p.copy()
    pt.info["transparency"] = 1  # palette entry 1 fully transparent: white
    cases["P+transparency"] = (pt, (1, 1, 1))
    for name, (im, rgb) in cases.items():
        path = tmp_path / f"{name}.{'tif' if name == 'CMYK' else 'png'}"
        im.save(path, **({"transparency": 1} if name == "P+transparency" else {}))
        got = as_unit(load_image(path))
        np.testing.assert_allclose(got, np.broadcast_to(rgb, got.shape), atol=1 / 255 + 1e-6, err_msg=name)


def test_resizing_keeps_16bit_precision(tmp_path):
    # A uniform 16-bit grey between two 8-bit levels stays there after the crop and resize (no 8-bit rounding).
    v = 20000  # 77.83 in 8-bit units
    write_png(tmp_path / "g.png", np.full((40, 30), v, np.uint16), colour_type=0)
    got = as_unit(load_image(tmp_path / "g.png", size=16))
    assert got.shape == (16, 16, 3)
    np.testing.assert_allclose(got, v / 65535, atol=1e-5)


def test_decompression_bombs_and_damaged_files_are_named(tmp_path):
    # Headers claiming 100k x 100k (Pillow's DecompressionBombError) and 10k x 10k (its warning): refused from the
    # header, naming the file, before anything is decoded.
    for side in (100_000, 10_000):
        write_png(tmp_path / f"bomb{side}.png", np.zeros((1, 1), np.uint8), 0, 8,
                  header=struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        assert side * side > MAX_PIXELS
        with pytest.raises(ImageReadError, match=rf"bomb{side}\.png: .*pixels.*decompression bomb"):
            load_image(tmp_path / f"bomb{side}.png", size=32)
        with pytest.raises(ImageReadError, match=rf"bomb{side}\.png"):
            peek_image(tmp_path / f"bomb{side}.png")
    tifffile.imwrite(tmp_path / "huge.tif", np.zeros((1, 1), np.uint8))  # then its size fields rewritten
    data = bytearray((tmp_path / "huge.tif").read_bytes())
    # tifffile writes ImageWidth/ImageLength as SHORT or LONG tags; find the IFD entries (tag, type, count=1, value).
    rewritten = 0
    for tag in (256, 257):
        for typ, fmt in ((3, "<HHIH"), (4, "<HHII")):
            i = data.find(struct.pack(fmt, tag, typ, 1, 1))
            if i >= 0:
                data[i:i + struct.calcsize(fmt)] = struct.pack(fmt, tag, typ, 1, 60000)
                rewritten += 1
    assert rewritten == 2
    (tmp_path / "huge.tif").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"huge\.tif: .*pixels.*decompression bomb"):
        load_image(tmp_path / "huge.tif")

    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "ok.png")
    good = (tmp_path / "ok.png").read_bytes()
    damaged = bytearray(good)
    damaged[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    (tmp_path / "damaged.png").write_bytes(bytes(damaged))
    (tmp_path / "truncated.png").write_bytes(good[:-30])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("damaged.png", "truncated.png", "text.png"):
        with pytest.raises(ImageReadError, match=rf"{name}: not a readable image"):
            load_image(tmp_path / name)


def test_fewshot_folder_reads_16bit_and_float_and_skips_a_bomb(tmp_path):
    """The few-shot path (adapt_common.datasets): a 16-bit PNG and a float TIFF keep their values; a bomb in the
    folder is skipped and reported, not a crash."""
    folder = tmp_path / "shots"
    folder.mkdir()
    write_png(folder / "a.png", np.full((20, 20), 13107, np.uint16), colour_type=0)  # 0.2
    tifffile.imwrite(folder / "b.tif", np.full((20, 20, 3), 0.7, np.float32), photometric="rgb")
    write_png(folder / "c.png", np.zeros((1, 1), np.uint8), 0, 8, header=struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2,
                                                                                          0, 0, 0))
    with pytest.warns(UserWarning, match=r"1 unreadable and skipped \(c\.png: .*pixels"):
        images, report = load_image_folder(folder, 8)
    assert report.used == 2
    np.testing.assert_allclose(((images + 1) / 2).numpy()[0], 0.2, atol=1e-5)
    np.testing.assert_allclose(((images + 1) / 2).numpy()[1], 0.7, atol=1e-5)


def test_oneshot_reference_reads_16bit(tmp_path):
    """The one-shot reference (target.image) as the trainer reads it."""
    from gan_adapt.training.clip_guided import reference_image
    write_png(tmp_path / "ref.png", np.full((30, 30), 45875, np.uint16), colour_type=0)  # 0.7
    img, _ = reference_image(str(tmp_path / "ref.png"), 16)
    np.testing.assert_allclose(((img + 1) / 2).numpy(), 0.7, atol=1e-5)


def test_invert_cli_reads_16bit_and_names_a_bomb(tmp_path, tiny_generator, capsys):
    """`python -m gan_adapt invert`: the target tile of inversion.png is the 16-bit grey, not white; a bomb is one
    error line naming the file, exit status 2."""
    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    v = 13107  # 0.2: 51 in 8 bits
    write_png(tmp_path / "photo.png", np.full((50, 40), v, np.uint16), colour_type=0)
    assert main(["invert", "--ckpt", str(ckpt), "--image", str(tmp_path / "photo.png"), "--steps", "1",
                 "--out", str(tmp_path / "inv")]) == 0
    grid = np.asarray(Image.open(tmp_path / "inv" / "inversion.png"))
    target_tile = grid[2:2 + tiny_generator.size, 2:2 + tiny_generator.size]
    assert np.abs(target_tile.astype(int) - round(v / 65535 * 255)).max() <= 1
    write_png(tmp_path / "bomb.png", np.zeros((1, 1), np.uint8), 0, 8,
              header=struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2, 0, 0, 0))
    capsys.readouterr()
    assert main(["invert", "--ckpt", str(ckpt), "--image", str(tmp_path / "bomb.png"), "--steps", "1",
                 "--out", str(tmp_path / "inv2")]) == 2
    err = capsys.readouterr().err
    assert "bomb.png" in err and "decompression bomb" in err and "Traceback" not in err
