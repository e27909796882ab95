"""Whether a run is sharded as its `accelerate launch` config asked, and how it is laid out.

`accelerate launch --config_file recipes/accelerate/fsdp2.yaml` sets `ACCELERATE_USE_FSDP=true` in
every process, but accelerate (1.16) turns that into FSDP only on a machine with accelerators
(`AcceleratorState` upgrades `MULTI_GPU`-like setups, never `MULTI_CPU`); on CPUs the same launch
trains with full replicas, as DDP, and says nothing. `check_parallelism` makes that loud, and
`parallelism_summary` records what the run really was. (DeepSpeed ZeRO-3 is set up on CPUs too.)
"""

from __future__ import annotations

import os
from typing import Any

from atlas_hf.errors import DistributedSetupError

_ASKED = (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED"))


def check_parallelism(accelerator: Any) -> None:
    """Refuse a run whose launch asked for FSDP or DeepSpeed that accelerate did not set up.

    Args:
        accelerator (`accelerate.Accelerator`): The trainer's accelerator.

    Raises:
        `DistributedSetupError`: The launch asked for FSDP or DeepSpeed and the run is something else.
    """
    got = accelerator.distributed_type.name  # e.g. "FSDP", "MULTI_CPU", "NO"
    for kind, variable in _ASKED:
        if os.environ.get(variable, "false").lower() == "true" and got != kind:
            import accelerate

            raise DistributedSetupError(
                f"The launch asked for {kind} ({variable}=true), but accelerate {accelerate.__version__} set this "
                f"run up as {got} with {accelerator.num_processes} process(es): every process would hold a full "
                f"replica of the model instead of a shard. accelerate sets up {kind} only on GPUs (or other "
                "accelerators); on CPUs launch with recipes/accelerate/multi_gpu_ddp.yaml instead."
            )


def parallelism_summary(accelerator: Any, model: Any) -> dict[str, Any]:
    """How a run is laid out: accelerate's setup, the processes, and how many parameters are sharded.

    Args:
        accelerator (`accelerate.Accelerator`): The trainer's accelerator.
        model (`torch.nn.Module`): The model as trained (wrapped or not).

    Returns:
        `dict`: `distributed_type`, `num_processes`, `parameters` and `sharded_parameters` (those whose
        local shard is smaller than the whole: FSDP2 `DTensor`s, DeepSpeed ZeRO-3 partitions).
    """
    parameters = list(model.parameters())
    sharded = sum(1 for p in parameters if local_shard(p).numel() < full_numel(p))
    return {
        "distributed_type": accelerator.distributed_type.name,
        "num_processes": accelerator.num_processes,
        "parameters": len(parameters),
        "sharded_parameters": sharded,
    }


def local_shard(parameter: Any) -> Any:
    """The part of `parameter` this process holds: an FSDP2 `DTensor`'s local tensor, a ZeRO-3 partition
    (`ds_tensor`), else the parameter itself.

    Args:
        parameter (`torch.nn.Parameter`): A model parameter.

    Returns:
        `torch.Tensor`: The local shard.
    """
    if hasattr(parameter, "to_local"):
        return parameter.to_local()
    return getattr(parameter, "ds_tensor", None) if hasattr(parameter, "ds_tensor") else parameter


def full_numel(parameter: Any) -> int:
    """The number of elements of the whole parameter, however it is sharded.

    Args:
        parameter (`torch.nn.Parameter`): A model parameter.

    Returns:
        `int`: Its element count (`ds_numel` for a ZeRO-3 partitioned one).
    """
    return int(getattr(parameter, "ds_numel", parameter.numel()))
