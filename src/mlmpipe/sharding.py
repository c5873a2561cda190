"""Whole-model states of a run whose weights may be sharded, and ``pretrain.fsdp``'s sharding itself.

With ``pretrain.fsdp: true`` the weights, gradients and optimizer state are split over the processes by
PyTorch's FSDP2 (``fully_shard``): one unit per transformer layer, the training wrapper as the root (its
forward gathers the embeddings and the head). mlmpipe shards the model itself, the same way on CPU (gloo) and
GPU (nccl), because accelerate applies FSDP only on accelerators: on CPU ``--use_fsdp`` silently runs plain
data parallelism. accelerate still picks the device, starts the processes, and owns autocast and fp16's
gradient scaler.

Checkpoints and the saved model need whole states, whatever the sharding: ``model_state`` and
``optimizer_state`` gather them (``torch.distributed.checkpoint.state_dict``, full and on the CPU: a
collective call on every process; the main process gets the tensors), ``load`` puts them back into a sharded
or plain model and optimizer, and ``plain_copy`` makes the standard ``*ForMaskedLM`` that ``save_pretrained``
writes. For an unsharded model (one process, DDP) they reduce to the usual ``state_dict`` calls.
"""
from __future__ import annotations

import contextlib

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from .families import FAMILIES

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on the main process's CPU
_SPREAD = StateDictOptions(full_state_dict=True)  # whole tensors in; each process keeps its shard


def shard(wrapper: torch.nn.Module, model) -> None:
    """FSDP2 over all processes: every transformer layer of ``model`` (the family's ``layers``) a unit, then
    ``wrapper`` (which holds ``model``) the root. In place: the parameters become DTensors."""
    from torch.distributed.fsdp import fully_shard

    for layer in FAMILIES[model.config.model_type].layers(model):
        fully_shard(layer)
    fully_shard(wrapper)


def count_sharded(model: torch.nn.Module) -> int:
    """How many of ``model``'s parameters are DTensors, i.e. split over the processes."""
    from torch.distributed.tensor import DTensor

    return sum(isinstance(p, DTensor) for p in model.parameters())


def is_sharded(model: torch.nn.Module) -> bool:
    return count_sharded(model) > 0


def model_state(model: torch.nn.Module) -> dict:
    """Every weight of ``model``, whole, on the CPU, a copy later steps do not change. Sharded: every process
    must call it, and only the main process gets the tensors (the others an empty dict)."""
    if is_sharded(model):
        return get_model_state_dict(model, options=_GATHER)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer's whole state keyed by parameter name (so it loads into any sharding of ``model``);
    sharded: a collective call, as ``model_state``."""
    return get_optimizer_state_dict(model, optimizer, options=_GATHER)


def load(model: torch.nn.Module, optimizer, weights: dict, optim: dict) -> tuple[list[str], list[str]]:
    """Whole states (as saved) into ``model`` and ``optimizer``, sharded or not; every process passes them.
    Returns the (missing, unexpected) weight names, for the caller to refuse a checkpoint of another model."""
    names = list(model.state_dict())  # the same names sharded or not (the shards are DTensors under them)
    missing, unexpected = [k for k in names if k not in weights], [k for k in weights if k not in set(names)]
    if not missing and not unexpected:  # (set_model_state_dict would keep the current value of a missing one)
        set_model_state_dict(model, weights, options=_SPREAD)
        set_optimizer_state_dict(model, optimizer, optim, options=_SPREAD)
    return missing, unexpected


@contextlib.contextmanager
def gathered(wrapper: torch.nn.Module):
    """The root's own weights (embeddings, head) whole while the block runs, for calls that bypass the
    wrapper's forward (validation calls the model inside it); the layers gather theirs as they run."""
    if not is_sharded(wrapper):
        yield
        return
    wrapper.unshard()
    try:
        yield
    finally:
        wrapper.reshard()


def plain_copy(model, weights: dict):
    """A standard, unsharded ``*ForMaskedLM`` of ``model``'s class and config holding ``weights`` (whole
    tensors, e.g. from ``model_state``): what ``save_pretrained`` writes after a sharded run."""
    cls = next(c for c in type(model).__mro__ if not c.__name__.startswith("FSDP"))  # fully_shard subclasses
    copy = cls(model.config)
    copy.load_state_dict(weights, strict=True)
    return copy
