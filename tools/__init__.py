"""One-off builders of bundled assets: the small CLIP, the model cards, screenshots and test fixtures."""
