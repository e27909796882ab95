"""Front ends over the public library: the `atlas-hf` command (`cli`), the one training script
(`sft`, TRL's `scripts/sft.py` pattern) and the demo (`demo`). No library module imports them."""
