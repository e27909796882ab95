# /// script
# dependencies = [
#     "atlas_hf",
#     "trl",
#     "peft",
# ]
# ///

"""ATLaS supervised fine-tuning: TRL's SFT with the loss on the critical steps of agent trajectories.

A thin launcher for `accelerate launch`: the script itself is `atlas_hf.scripts.sft` (the one
training script, which `atlas-hf train` runs too, with the same flags and defaults).

Trains on a local or Hub dataset of trajectories (`messages`, plus `critical_steps` when already
annotated), optionally annotating them first with an oracle, and optionally publishes the annotated
dataset and the adapter with their cards. Every `AtlasSFTConfig` (TRL `SFTConfig`) and `ModelConfig`
option is a flag; `--config recipe.yaml` works as in TRL's scripts. Launch it with `python` for one
device or with `accelerate launch --config_file recipes/accelerate/<setup>.yaml` for many
(see recipes/README.md).

# LoRA on the embedded sample, on a laptop (CPU)
```bash
python recipes/sft_atlas.py --use_peft --max_steps 8 --output_dir outputs/sft-atlas
```

# LoRA on Llama-3.1-8B-Instruct, annotating with Claude first, on 8 GPUs
```bash
accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml recipes/sft_atlas.py \
    --model_name_or_path meta-llama/Llama-3.1-8B-Instruct \
    --dataset_name your-org/agent-trajectories \
    --annotate anthropic \
    --use_peft --lora_r 64 --lora_alpha 128 --lora_target_modules all-linear \
    --learning_rate 2e-4 --num_train_epochs 3 --max_length 4096 \
    --per_device_train_batch_size 2 --gradient_accumulation_steps 4 \
    --output_dir Llama-3.1-8B-Instruct-ATLaS \
    --publish_dataset_repo your-org/agent-trajectories-atlas \
    --publish_adapter_repo your-org/Llama-3.1-8B-Instruct-ATLaS-LoRA
```
"""

import logging
import sys

from atlas_hf.scripts.sft import ScriptArguments, main, make_parser, parse_args

__all__ = ["ScriptArguments", "main", "make_parser"]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*parse_args(sys.argv[1:], prog="sft_atlas.py"))
