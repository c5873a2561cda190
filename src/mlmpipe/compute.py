"""How a training step computes: the MLM head only on masked positions, the precision modes (bf16 with fp32
master weights, accelerate's autocast), the attention (bf16 matmuls or an SDPA kernel), the optimizer and
the accelerate state. ``training.train`` puts them together."""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from .masking import IGNORE
from .model import encoder_outputs, mlm_logits, nsp_logits
from .params import Pretrain


class SparseMLM(torch.nn.Module):
    """Wraps a ``*ForMaskedLM``: the MLM head runs only on masked positions (``sparse``) or everywhere."""

    def __init__(self, model, sparse: bool = True):
        super().__init__()
        self.model, self.sparse = model, sparse

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, nsp_labels=None):
        """The MLM loss summed over masked tokens; with ``nsp_labels`` (BertForPreTraining) a pair
        (MLM sum, next-sentence loss summed over examples)."""
        hidden, pooled = encoder_outputs(self.model, input_ids, attention_mask, token_type_ids)
        mlm = self._mlm(hidden, labels)
        if nsp_labels is None:
            return mlm
        return mlm, F.cross_entropy(nsp_logits(self.model, pooled).float(), nsp_labels, reduction="sum")

    def _mlm(self, hidden, labels):
        sel = labels != IGNORE
        if self.sparse:
            # Gather the masked positions, padded to a multiple of 64 with ignored targets: the number of
            # masked tokens changes every step, and a handful of shapes keeps the allocator's cache small.
            idx = sel.flatten().nonzero().squeeze(1)
            n = idx.numel()
            idx = F.pad(idx, (0, -(-n // 64) * 64 - n))
            target = labels.flatten()[idx]
            target[n:] = IGNORE
            logits = mlm_logits(self.model, hidden.flatten(0, 1)[idx])
        else:
            logits, target = mlm_logits(self.model, hidden).flatten(0, 1), labels.flatten()
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")


def make_optimizer(model, p: Pretrain, device_type: str) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=p.lr, betas=(p.beta1, p.beta2), fused=fused)


class Bf16Weights:
    """``bf16-pure`` precision: forward and backward run on a bf16 copy of the model (no autocast casts
    between ops); the optimizer updates fp32 master weights, cast back into the copy after every step."""

    def __init__(self, master):
        self.master = master
        self.work = copy.deepcopy(master).to(torch.bfloat16)
        self.pairs = list(zip(master.parameters(), self.work.parameters()))

    def grads_to_master(self) -> None:
        for m, w in self.pairs:
            m.grad = None if w.grad is None else w.grad.float()
            w.grad = None

    @torch.no_grad()
    def master_to_work(self) -> None:
        for m, w in self.pairs:
            w.copy_(m)


class Precision:
    """How a precision mode (``pretrain.mixed_precision``, auto resolved) does backward, clip and step.

    ``bf16-pure``: forward and backward on a bf16 copy of the model; the gradients go to the fp32 master
    weights, which are clipped and stepped, then cast back into the copy. The others (no, bf16, fp16):
    accelerate's autocast and gradient scaler on the model itself."""

    def __init__(self, requested: str, sharded: bool = False):
        self.name = resolve_precision(requested, sharded)
        self.pure = self.name == "bf16-pure"
        self.accelerator = accelerator_for("no" if self.pure else self.name)
        self.bf16: Bf16Weights | None = None

    def compute_model(self, model):
        """The model forward and backward run on: for bf16-pure a bf16 copy of ``model`` as it is now (so make
        it after restoring a checkpoint), else ``model``."""
        if self.pure:
            self.bf16 = Bf16Weights(model)
            return self.bf16.work
        return model

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def step(self, optimizer, model, wrapper, clip_norm: float | None) -> None:
        """Clip (``clip_norm``: None or 0 = no clipping) and step: the master ``model``'s parameters for
        bf16-pure, else the prepared ``wrapper``'s (accelerate's clip also unscales fp16 gradients)."""
        if self.pure:
            self.bf16.grads_to_master()
        if clip_norm:
            if self.pure:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            else:
                self.accelerator.clip_grad_norm_(wrapper.parameters(), clip_norm)
        optimizer.step()
        if self.pure:
            self.bf16.master_to_work()


def accelerator_for(mixed_precision: str) -> Accelerator:
    """An Accelerator; in a single process, one whose mixed precision differs from an earlier call's
    replaces it (accelerate keeps one global state per process; benchmarks and tests train several times)."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision) and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


def resolve_precision(requested: str, sharded: bool = False) -> str:
    """``auto``: bf16 autocast on GPUs with bf16, else fp16; on CPUs with native bf16, bf16-pure, else no.
    For ``sharded`` weights (pretrain.fsdp) neither bf16-pure nor fp16: bf16 autocast where there is bf16."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no" if sharded else "fp16"
    # CPU: pure-bf16 compute with fp32 master weights where the CPU has native bf16 (AVX-512 BF16 / AMX);
    # it avoids autocast's casts between ops (measured ~5% faster than bf16 autocast on a 4x256 ModernBERT).
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "no"
    return "bf16" if sharded else "bf16-pure"


MATMUL = "mlmpipe_matmul"


def matmul_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention as two matmuls and a softmax in the compute dtype, registered with transformers'
    ``AttentionInterface`` (mask format: SDPA's, a boolean "may attend" tensor or None). On CPU in bf16 the
    SDPA math kernel upcasts q, k, v to fp32 and the CPU flash kernel has a slow backward; this runs the
    matmuls in bf16 (CPU softmax accumulates in fp32 internally either way)."""
    if getattr(module, "is_causal", False) or getattr(module, "num_key_value_groups", 1) > 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(2, 3))
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                  else scores + attention_mask)
    weights = F.dropout(F.softmax(scores, dim=-1), dropout, training=dropout > 0)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _register_matmul_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(MATMUL, matmul_attention)
    AttentionMaskInterface.register(MATMUL, sdpa_mask)


def resolve_attention(name: str, device_type: str) -> str:
    """``pretrain.attention_kernel`` with ``auto`` resolved: matmul on CPU, default (SDPA's choice) on GPU."""
    if name == "auto":
        return "matmul" if device_type == "cpu" else "default"
    return name


@contextlib.contextmanager
def attention_kernel(name: str, device_type: str, model=None):
    """Context manager choosing the attention of ``model``'s training steps (``pretrain.attention_kernel``):
    ``matmul`` switches the model to ``matmul_attention`` (restored on exit, so the saved config keeps its
    own); math/flash/efficient restrict SDPA to that kernel; default leaves PyTorch's choice; auto is
    matmul on CPU and default on GPU."""
    name = resolve_attention(name, device_type)
    if name == "matmul":
        _register_matmul_attention()
        config = model.config
        before = config._attn_implementation
        config._attn_implementation = MATMUL
        try:
            yield
        finally:
            config._attn_implementation = before
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    with sdpa_kernel([backends[name]]) if name in backends else contextlib.nullcontext():
        yield
