"""A full, unsharded copy of an FSDP2-sharded model on the main process, so that it can be slimmed and saved.

Under torch's `fully_shard` every rank holds a dim-0 block of each parameter, but slimming needs whole weights.
`gather_full_model` gathers the full state dict onto rank 0's CPU (a collective: every rank must call it) and
loads it into a fresh instance of the model's own class, built from its config without random initialization
(transformers' `no_init_weights`: minutes saved on a large model). Every tensor of the copy is then taken from the
trained model: ``load_state_dict(strict=True)`` overwrites every saved tensor (a missing or unexpected key is an
error, never an uninitialized weight), and the non-persistent buffers (rotary frequencies, position ids), which
the state dict leaves out, are copied from the sharded model, which holds them whole (`fully_shard` shards
parameters only). Tied weights stay tied.

OTOTrainer's `save_model` uses it after FSDP2 training.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def is_fsdp2_sharded(model: nn.Module) -> bool:
    """Whether any parameter of `model` is a DTensor, as under `fully_shard`."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(param, DTensor) for param in model.parameters())


def unsharded_class(model: nn.Module) -> type[nn.Module]:
    """The model's own class: `fully_shard` swaps it for a subclass ``FSDP<name>(FSDPModule, <class>)``."""
    from torch.distributed.fsdp import FSDPModule

    return next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


def gather_full_model(model: nn.Module) -> nn.Module | None:
    """On rank 0, an unsharded CPU copy of the FSDP2-sharded `model` (same class, config, weights and mode);
    None on the other ranks. Every rank of the shard group must call it (it all-gathers every parameter)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers.initialization import no_init_weights

    if not is_fsdp2_sharded(model):
        raise ValueError("gather_full_model expects a model sharded with fully_shard (no DTensor parameters found)")
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    dtypes = {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}
    if len(dtypes) > 1:
        raise NotImplementedError(
            f"gather_full_model: the sharded model mixes parameter dtypes {sorted(map(str, dtypes))}; cast it to one "
            "dtype before gathering"
        )
    with no_init_weights():  # every tensor is overwritten below
        full = unsharded_class(model)(copy.deepcopy(model.config))
    full.tie_weights()  # `no_init_weights` also skips `init_weights`, which ties
    if dtypes:
        full.to(dtype=dtypes.pop())
    full.load_state_dict(state, strict=True)
    _copy_unsaved_buffers(model, full, saved=state.keys())
    return full.train(model.training)


def _copy_unsaved_buffers(trained: nn.Module, copy_: nn.Module, saved: Iterable[str]) -> None:
    """Copy into `copy_` every buffer that the state dict left out (non-persistent), from `trained`."""
    saved, trained_buffers = set(saved), dict(trained.named_buffers())
    for name, buffer in copy_.named_buffers():
        if name in saved:
            continue
        if name not in trained_buffers or trained_buffers[name].shape != buffer.shape:
            raise RuntimeError(
                f"gather_full_model: buffer {name!r} is neither in the state dict nor, with shape "
                f"{tuple(buffer.shape)}, in the sharded model; the copy would keep it uninitialized"
            )
        with torch.no_grad():
            buffer.copy_(trained_buffers[name].detach().to("cpu"))


__all__ = ["gather_full_model", "is_fsdp2_sharded", "unsharded_class"]
