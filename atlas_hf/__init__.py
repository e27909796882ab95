"""atlas_hf: ATLaS (agent tuning on critical steps) for TRL."""
