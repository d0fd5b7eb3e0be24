"""
Training on two CPU processes (gloo) with videos of different lengths on the two ranks: DDP and FSDP2 (`fully_shard`
along `_no_split_modules`, with and without activation checkpointing) give each rank the loss of its own batch and
the gradients of a single process over the same global batch.

The ranks' videos need 3 and 6 vision chunks (one for the shared context frame, then the frames): with sharded
weights, every chunk gathers them in collectives, so the shorter rank runs idle chunks up to the count that
`lockstep_vision_chunks` (what `VilampTrainer` passes) gives; without them FSDP2 hangs or aborts with a collective
mismatch.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from conftest import tiny_model, video_training_batch
from vilamp.training import lockstep_vision_chunks


FRAMES_PER_RANK = (3, 9)  # 2 and 5 chunks of 2 frames, after one of the context frame
CHUNK_SIZE = 2


def rank_batch(rank: int) -> dict:
    """Rank `rank`'s batch: one video of FRAMES_PER_RANK[rank] frames, its first and last frames keyframes."""
    keyframe_mask = torch.zeros(FRAMES_PER_RANK[rank], dtype=torch.bool)
    keyframe_mask[[0, -1]] = True
    return video_training_batch(keyframe_mask, seed=100 + rank)


def training_model(checkpointing: bool):
    model = tiny_model(seed=0, vision_chunk_size=CHUNK_SIZE).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    return model


MODES = {"ddp": ("ddp", False), "fsdp2": ("fsdp2", False), "fsdp2-ckpt": ("fsdp2", True)}


def one_step(rank: int, mode: str, checkpointing: bool) -> dict:
    """One training step of rank `rank` under `mode`; its loss and every full gradient."""
    model = training_model(checkpointing)
    if mode == "ddp":
        wrapped = DistributedDataParallel(model)
    else:
        # accelerate's FSDP2 policy: a unit per `_no_split_modules` class (the model's and its towers').
        for module in model.modules():
            if type(module).__name__ in model._no_split_modules:
                fully_shard(module)
        wrapped = fully_shard(model)
    batch = rank_batch(rank)
    assert lockstep_vision_chunks(model, batch) == 6
    loss = wrapped(**batch, num_vision_chunks=lockstep_vision_chunks(model, batch)).loss
    loss.backward()
    gradients = {}
    for name, parameter in model.named_parameters():
        gradient = parameter.grad
        gradients[name] = gradient.full_tensor() if hasattr(gradient, "full_tensor") else gradient
    return {"loss": loss.detach(), "gradients": gradients}


def worker(rank: int, rendezvous: str, results: str) -> None:
    # Every mode in one pair of processes: starting the two ranks costs more than the three steps together.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        outcomes = {name: one_step(rank, *settings) for name, settings in MODES.items()}
        torch.save(outcomes, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single_process_reference():
    """Each rank's loss, and the gradients of their mean, in one process."""
    model = training_model(checkpointing=False)
    losses = [model(**rank_batch(rank)).loss for rank in range(2)]
    (sum(losses) / 2).backward()
    return [loss.detach() for loss in losses], {name: p.grad for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def two_rank_outcomes(tmp_path_factory) -> list[dict]:
    """Each rank's `{mode: outcome}`, from one run of the two ranks."""
    folder = tmp_path_factory.mktemp("ranks")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = str(folder / "result")
    mp.start_processes(worker, args=(str(folder / "rendezvous"), results), nprocs=2, join=True, start_method="spawn")
    return [torch.load(f"{results}.{rank}") for rank in range(2)]


@pytest.mark.parametrize("mode", list(MODES))
def test_two_ranks_with_different_video_lengths_match_one_process(two_rank_outcomes, single_process_reference, mode):
    losses, gradients = single_process_reference
    outcomes = [by_mode[mode] for by_mode in two_rank_outcomes]
    for rank, outcome in enumerate(outcomes):
        torch.testing.assert_close(outcome["loss"], losses[rank], atol=1e-6, rtol=1e-5)
    assert outcomes[0]["gradients"].keys() == gradients.keys()
    for name, expected in gradients.items():
        for outcome in outcomes:
            torch.testing.assert_close(outcome["gradients"][name], expected, atol=1e-6, rtol=1e-4, msg=name)


def test_accelerate_configs_choose_the_documented_sharding():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    import vilamp.training

    folder = Path(vilamp.training.__file__).parent / "accelerate"
    configs = {path.stem: load_config_from_file(str(path)) for path in sorted(folder.glob("*.yaml"))}
    assert sorted(configs) == ["ddp", "fsdp2", "zero3"]
    assert configs["ddp"].distributed_type == "MULTI_GPU"
    fsdp = configs["fsdp2"].fsdp_config
    assert configs["fsdp2"].distributed_type == "FSDP"
    assert (fsdp["fsdp_version"], fsdp["fsdp_auto_wrap_policy"]) == (2, "TRANSFORMER_BASED_WRAP")
    assert configs["zero3"].deepspeed_config["zero_stage"] == 3
    assert {config.mixed_precision for config in configs.values()} == {"bf16"}
