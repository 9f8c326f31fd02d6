"""The command-line edge: what a user gets wrong (paths, disk space, damaged files, config values, devices, a busy
run folder) ends in one line ``error: ...`` naming the key or the file, exit status 2 and no traceback; and the
housekeeping of run folders (stale temporary files, the run lock, --resume on a missing folder, file modes)."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import diffusion_adapt.cli as diffusion_cli
import gan_adapt.cli as gan_cli

ROOT = Path(__file__).resolve().parents[1]
ARCH = ["generator_args.size=32", "generator_args.style_dim=32", "generator_args.n_mlp=2",
        "generator_args.channel_base=256", "generator_args.channel_max=32"]
FAST = ["training.batch=2", "training.r1_every=2", "exp.threads=1", "logging.log_every=1",
        "logging.sample_every=100", "logging.n_samples=2"]
BUNDLED_DDPM = ROOT / "checkpoints" / "synthfaces_ddpm"


def refused(capsys, main, argv, *needles):
    """Run ``main(argv)``: exit status 2, one ``error:`` line on stderr naming every needle, no traceback."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}, stderr: {err[-2000:]}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def train_args(run, *extra):
    return ["train", *ARCH, *FAST, f"exp.run_dir={run}", *extra]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A finished 2-step adversarial run folder (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("gan") / "run"
    assert gan_cli.main(train_args(run, "training.iters=2")) == 0
    return run


@pytest.fixture
def run_copy(gan_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(gan_run, run)
    return run


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "g.safetensors"
    assert gan_cli.main(["init", "--out", str(out), "--size", "32", "--style-dim", "32", "--n-mlp", "2",
                         "--channel-base", "256", "--channel-max", "32"]) == 0
    return out


INIT = ["--size", "32", "--style-dim", "32", "--n-mlp", "2", "--channel-base", "256", "--channel-max", "32"]


# ---------------------------------------------------------------------------------------------------------
# Output paths and disk errors


def test_an_output_path_that_is_a_folder(tmp_path, capsys):
    taken = tmp_path / "taken.safetensors"
    taken.mkdir()
    refused(capsys, gan_cli.main, ["init", "--out", taken, *INIT], taken, "folder")
    assert list(taken.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))


def test_an_output_path_under_a_file(tmp_path, capsys, tiny_ckpt):
    (tmp_path / "afile").write_text("x")
    refused(capsys, gan_cli.main, ["init", "--out", tmp_path / "afile" / "g.safetensors", *INIT],
            tmp_path / "afile", "not a folder")
    refused(capsys, gan_cli.main, ["generate", "--ckpt", tiny_ckpt, "--seeds", "0", "--outdir", tmp_path / "afile"],
            tmp_path / "afile")


def test_an_unwritable_output_path(tmp_path, capsys):
    """/proc takes no new files, even from root; a read-only folder for other users."""
    refused(capsys, gan_cli.main, ["init", "--out", "/proc/domain_adapt_test/g.safetensors", *INIT],
            "/proc/domain_adapt_test")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            refused(capsys, gan_cli.main, ["init", "--out", ro / "g.safetensors", *INIT], ro, "permission")
        finally:
            ro.chmod(0o755)


def test_a_full_disk_names_the_file_and_the_fix(tmp_path, capsys, monkeypatch, tiny_ckpt):
    """ENOSPC as each writer reports it: safetensors "(os error 28)", torch.save a RuntimeError of its zip writer
    (the disk's free space then tells why), a plain Python write an OSError."""
    import errno

    from safetensors import SafetensorError

    from gan_adapt.formats import native, rosinality

    def st_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(native, "save_file", st_full)
    out = tmp_path / "g.safetensors"
    refused(capsys, gan_cli.main, ["init", "--out", out, *INIT], out, "No space left on device", "free some space")
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind

    def torch_full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(rosinality.torch, "save", torch_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))
    refused(capsys, gan_cli.main, ["init", "--out", tmp_path / "g.pt", *INIT], tmp_path / "g.pt", "free some space")

    def py_full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    monkeypatch.setattr(Path, "mkdir", py_full)
    refused(capsys, gan_cli.main, ["generate", "--ckpt", tiny_ckpt, "--seeds", "0", "--outdir", tmp_path / "o"],
            tmp_path / "o", "No space left on device", "free some space")


def test_a_real_write_failure_under_a_file_size_limit(tmp_path):
    """A real failing write (RLIMIT_FSIZE: the kernel refuses bytes past 20 kB) through the real writers, in a
    subprocess: the message names the file and the limit."""
    script = ("import resource, sys\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
              "from gan_adapt.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    for name in ("g.safetensors", "g.pt"):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-c", script, "init", "--out", str(out), *INIT], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert str(out) in r.stderr and "limit" in r.stderr, r.stderr
        assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------------
# Damaged files


def test_a_truncated_checkpoint_on_resume_and_export(run_copy, capsys):
    ckpt = run_copy / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    refused(capsys, gan_cli.main, ["train", "--resume", "--config", run_copy / "config.yaml",
                                   f"exp.run_dir={run_copy}"], ckpt, "truncated or corrupt")
    refused(capsys, gan_cli.main, ["export", run_copy, "--adapter", run_copy / "a.safetensors"], ckpt,
            "truncated or corrupt")
    ckpt.write_bytes(b"")
    refused(capsys, gan_cli.main, ["export", run_copy, "--adapter", run_copy / "a.safetensors"], ckpt)


@pytest.mark.parametrize("text", ["training:\n  batch: [1,\n", "training: {batch: 2\n", "\tlogging: 1\n",
                                  "- a list\n- not a mapping\n"])
def test_malformed_yaml(tmp_path, capsys, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    refused(capsys, gan_cli.main, ["train", "--config", bad, f"exp.run_dir={tmp_path / 'r'}"], bad)
    refused(capsys, diffusion_cli.main, ["train", "--config", bad, f"exp.run_dir={tmp_path / 'r'}"], bad)
    assert not (tmp_path / "r").exists()


def _sparse_direction(tmp_path, indices_of):
    """The bundled sketch direction as a sparse file whose indices are replaced by ``indices_of(indices, size)``
    (no content hash: the index check itself must catch it)."""
    from adapt_common.files import read_with_manifest, save_with_manifest
    from gan_adapt.directions import Direction, FORMAT
    sparse = Direction.from_pretrained(ROOT / "checkpoints" / "directions" / "sketch.safetensors").sparse(0.1)
    good = sparse.save_pretrained(tmp_path / "good.safetensors", sparse=True)
    tensors, manifest, _ = read_with_manifest(good, FORMAT)
    manifest.pop("content_hash", None)
    tensors["indices"] = indices_of(tensors["indices"].clone(), sparse.size)
    return save_with_manifest(tensors, tmp_path / "bad.safetensors", FORMAT, manifest)


@pytest.mark.parametrize("how", ["past_the_end", "negative"])
def test_sparse_direction_indices_out_of_range(tmp_path, capsys, how):
    def tamper(idx, size):
        idx[-1] = size + 5 if how == "past_the_end" else -3  # a negative index would wrap to the end silently
        return idx
    bad = _sparse_direction(tmp_path, tamper)
    refused(capsys, gan_cli.main, ["generate", "--ckpt", ROOT / "checkpoints" / "synthfaces_stylegan2.safetensors",
                                   "--seeds", "0", "--direction", bad, "--outdir", tmp_path / "o"], bad, "indices")
    assert not (tmp_path / "o").exists()


def test_a_hypernetwork_file_without_its_mapper(tmp_path, capsys):
    from adapt_common.files import save_with_manifest
    from gan_adapt.hypernetwork import FORMAT
    no_config = save_with_manifest({"w": torch.zeros(2)}, tmp_path / "h1.safetensors", FORMAT, {"format": FORMAT})
    refused(capsys, gan_cli.main, ["hyper", no_config, "--prompt", "a sketch", "--out", tmp_path / "d.safetensors"],
            no_config, "mapper")
    # a manifest that describes a mapper, without the mapper's tensors
    cfg = {"input_dim": 8, "width": 8, "depth": 1, "layers": [["conv_0", 8]]}
    no_tensors = save_with_manifest({}, tmp_path / "h2.safetensors", FORMAT, {"format": FORMAT, "mapper": cfg})
    refused(capsys, gan_cli.main, ["hyper", no_tensors, "--prompt", "a sketch", "--out", tmp_path / "d.safetensors"],
            no_tensors)
    assert not (tmp_path / "d.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# Config values and devices


@pytest.mark.parametrize("override,key", [
    ("logging.log_every=0", "logging.log_every"), ("logging.checkpoint_every=0", "logging.checkpoint_every"),
    ("logging.sample_every=-1", "logging.sample_every"), ("training.batch=0", "training.batch"),
    ("exp.threads=0", "exp.threads"), ("training.iters=-5", "training.iters")])
def test_config_numbers_are_checked_with_the_key_named(tmp_path, capsys, override, key):
    run = tmp_path / "r"
    refused(capsys, gan_cli.main, train_args(run, "training.iters=1", override), key)
    assert not (run / "checkpoint.pt").exists()


def test_diffusion_config_numbers(tmp_path, capsys):
    run = tmp_path / "r"
    for override, key in (("training.batch=0", "training.batch"), ("logging.log_every=0", "logging.log_every"),
                          ("exp.threads=0", "exp.threads")):
        refused(capsys, diffusion_cli.main, ["train", f"exp.run_dir={run}", "base=''", "training.iters=1",
                                             override], key)


def test_cuda_without_a_gpu(tmp_path, capsys, monkeypatch, tiny_ckpt):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    refused(capsys, gan_cli.main, train_args(tmp_path / "r", "exp.device=cuda"), "exp.device", "use cpu")
    refused(capsys, gan_cli.main, ["generate", "--ckpt", tiny_ckpt, "--device", "cuda", "--outdir", tmp_path / "o"],
            "--device", "use cpu")
    refused(capsys, diffusion_cli.main, ["sample", "--model", BUNDLED_DDPM, "--device", "cuda:0", "--outdir",
                                         tmp_path / "o"], "--device")
    refused(capsys, gan_cli.main, ["generate", "--ckpt", tiny_ckpt, "--device", "gpu", "--outdir", tmp_path / "o"],
            "'gpu'", "not a torch device")
    assert not (tmp_path / "o").exists()


def refused_by_argparse(capsys, main, argv, option):
    """argparse's own refusal: exit 2 (SystemExit), a usage line and one line naming the option."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    assert f"argument {option}" in err and ">= 1" in err, err


def test_zero_steps_and_batches_on_the_command_line(tmp_path, capsys, tiny_ckpt):
    from PIL import Image
    img = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (120, 90, 60)).save(img)
    for argv, option in (
            (["morph", "--ckpt", tiny_ckpt, "--key", "", "--key", "", "--steps", "0", "--out", tmp_path / "m"],
             "--steps"),
            (["invert", "--ckpt", tiny_ckpt, "--image", img, "--steps", "0", "--out", tmp_path / "i"], "--steps"),
            (["generate", "--ckpt", tiny_ckpt, "--batch", "0", "--outdir", tmp_path / "g"], "--batch"),
            (["evaluate", "--ckpt", tiny_ckpt, "--domain", "sketch", "--n", "0", "--out", tmp_path / "e"], "--n")):
        refused_by_argparse(capsys, gan_cli.main, argv, option)
    for argv, option in (
            (["sample", "--model", BUNDLED_DDPM, "--steps", "0", "--outdir", tmp_path / "s"], "--steps"),
            (["sample", "--model", BUNDLED_DDPM, "--batch", "0", "--outdir", tmp_path / "s"], "--batch"),
            (["translate", "--model", BUNDLED_DDPM, "--images", img, "--steps", "0", "--out", tmp_path / "t.png"],
             "--steps")):
        refused_by_argparse(capsys, diffusion_cli.main, argv, option)
    assert not any((tmp_path / d).exists() for d in "migest")


# ---------------------------------------------------------------------------------------------------------
# Run folders: resume, the lock, stale temporary files


def test_diffusion_resume_in_a_gan_run_folder(run_copy, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()}
    refused(capsys, diffusion_cli.main, ["train", "--resume", f"exp.run_dir={run_copy}", "training.iters=1"],
            run_copy, "'adversarial'", "'ddpm'")
    refused(capsys, diffusion_cli.main, ["export", run_copy], run_copy)
    assert {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()} == before  # nothing touched


def test_resume_of_a_folder_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "typo"
    refused(capsys, gan_cli.main, train_args(missing, "training.iters=1") + ["--resume"], missing, "does not exist",
            "--resume")
    assert not missing.exists()


def test_resume_of_a_folder_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    assert gan_cli.main(train_args(run, "training.iters=1") + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert f"no checkpoint in {run}; starting fresh" in err and "Traceback" not in err


def test_stale_temporary_checkpoints_are_removed_on_resume(run_copy):
    from adapt_common.loop import load_training_state
    stale = [run_copy / ".checkpoint.pt.k1l2m3.tmp", run_copy / ".checkpoint.pt.zz9.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    others = [run_copy / ".adapter.safetensors.a1.tmp", run_copy / "notes.tmp"]  # not the checkpoint's: kept
    for p in others:
        p.write_bytes(b"x")
    assert gan_cli.main(["train", "--resume", "--config", str(run_copy / "config.yaml"), f"exp.run_dir={run_copy}",
                         "training.iters=3"]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
    assert load_training_state(run_copy / "checkpoint.pt")["step"] == 3


LOCK_HOLDER = """
import sys, time
from adapt_common.loop import RunLock
lock = RunLock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_one_run_folder_is_refused(run_copy, capsys):
    """Another process holds the run (a training started with --resume); this one stops before touching log.csv,
    and once the other ends its left-over .lock file does not block anyone."""
    log_before = (run_copy / "log.csv").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run_copy)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(capsys, gan_cli.main, ["train", "--resume", "--config", run_copy / "config.yaml",
                                       f"exp.run_dir={run_copy}", "training.iters=3"],
                run_copy, f"PID {holder.pid}", "another training process")
        assert (run_copy / "log.csv").read_bytes() == log_before
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert (run_copy / ".lock").exists()  # the dead holder's file stays; the kernel dropped its lock
    assert gan_cli.main(["train", "--resume", "--config", str(run_copy / "config.yaml"), f"exp.run_dir={run_copy}",
                         "training.iters=3"]) == 0
    rows = (run_copy / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"]


def test_written_files_get_the_usual_mode(tmp_path, tiny_ckpt):
    """safetensors' writer leaves its files 0600; every file the tools write gets what open() would give."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "g.safetensors"
        assert gan_cli.main(["convert", str(tiny_ckpt), str(out)]) == 0
        assert gan_cli.main(["convert", str(tiny_ckpt), str(tmp_path / "g.pt")]) == 0
    finally:
        os.umask(old)
    for p in (out, tmp_path / "g.pt"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, (p, oct(p.stat().st_mode))
