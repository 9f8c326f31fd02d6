"""Gradio app: ``python app.py [--ckpt PATH] [--port 7860]``, bound to localhost, no analytics, no share link.

For now it renders a StyleGAN2 checkpoint (any supported format) for seeds and truncation; domain mixing,
morphing, one-shot training and diffusion tabs come with the later issues.
"""
from __future__ import annotations

import argparse
import os
from functools import lru_cache

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MAX_SEEDS = 16


@lru_cache(maxsize=4)
def _generator(path: str, mtime: float):
    from gan_adapt.formats import load_generator
    return load_generator(path)


def render(ckpt: str, seeds: str, truncation: float, noise_mode: str):
    """Callback: a uint8 grid [H, W, 3] for the seeds. Raises ValueError with a message for bad input."""
    import torch

    from adapt_common.image_io import make_grid, to_uint8
    from gan_adapt.seeds import parse_seeds, z_from_seeds
    path = os.path.expanduser((ckpt or "").strip())
    if not path:
        raise ValueError("enter the path of a checkpoint file (.pt, .pkl or .safetensors)")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    seed_list = parse_seeds(seeds)
    if len(seed_list) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds at once, got {len(seed_list)}")
    g = _generator(os.path.abspath(path), os.path.getmtime(path))
    with torch.no_grad():
        images = g.generate(z_from_seeds(seed_list, g.style_dim), truncation=float(truncation), noise_mode=noise_mode)
    return to_uint8(make_grid(images, nrow=min(4, len(seed_list))))[0]


def build_app(default_ckpt: str = ""):
    import gradio as gr

    from gan_adapt.formats import CheckpointError

    def on_render(ckpt, seeds, truncation, noise_mode):
        try:
            return render(ckpt, seeds, truncation, noise_mode)
        except (ValueError, CheckpointError, FileNotFoundError) as e:
            raise gr.Error(str(e))

    with gr.Blocks(title="domain-adapt") as demo:
        gr.Markdown("## StyleGAN2 viewer\nRender any rosinality `.pt`, NVIDIA `.pkl` or native `.safetensors` "
                    "checkpoint.")
        with gr.Row():
            with gr.Column(scale=1):
                ckpt = gr.Textbox(label="checkpoint file", value=default_ckpt, elem_id="ckpt")
                seeds = gr.Textbox(label="seeds", value="0-3", elem_id="seeds")
                truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="truncation", elem_id="truncation")
                noise = gr.Radio(["const", "random", "none"], value="const", label="noise", elem_id="noise")
                go = gr.Button("Render", elem_id="go")
            out = gr.Image(label="samples", type="numpy", format="png", elem_id="out")
        inputs = [ckpt, seeds, truncation, noise]
        go.click(on_render, inputs, out, api_name="render")
        truncation.release(on_render, inputs, out)
    return demo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default="", help="checkpoint to show first")
    ap.add_argument("--port", type=int, default=7860)
    args = ap.parse_args(argv)
    build_app(args.ckpt).launch(server_name="127.0.0.1", server_port=args.port, share=False)


if __name__ == "__main__":
    main()
