"""A run's progress beyond its weights and optimizer: the curves so far, the loss sums since the last row,
tokens and time, the best weights of ``pretrain.keep_best``. A checkpoint saves it and a resumed run
restores it, so the curves and totals cover the whole run, not only the part after a resume."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .checkpoints import Checkpoints, Found


@dataclass
class History:
    train: list = field(default_factory=list)  # rows: step, loss, lr (+ nsp_loss)
    val: list = field(default_factory=list)    # rows: step, val_loss, val_top1 (+ val_nsp_accuracy)


@dataclass
class Progress:
    """What a checkpoint saves beside the weights and optimizer (``state``), and a resume restores."""
    history: History = field(default_factory=History)
    tokens_seen: int = 0     # real tokens of the global batches seen by this process
    train_time: float = 0.0  # seconds in training steps (not in validation, logging or checkpoints)
    best: dict | None = None  # pretrain.keep_best: the weights (on the CPU) at the lowest validation loss so far
    window: "Window" = field(default_factory=lambda: Window())  # loss sums since the last row of the curve

    def tokens_per_s(self, processes: int) -> float:
        """Real training tokens per second of all ``processes`` together (this process's share times them)."""
        return self.tokens_seen * processes / max(self.train_time, 1e-9)

    @classmethod
    def restored(cls, found: Found | None) -> "Progress":
        if found is None:
            return cls()
        state = found.state
        return cls(History(**state["history"]) if "history" in state else History(),
                   state.get("tokens_seen", 0), state.get("train_time", 0.0), Checkpoints.load_best(found.dir),
                   Window(**state.get("window", {})))

    def state(self) -> dict:
        return {"history": asdict(self.history), "tokens_seen": self.tokens_seen, "train_time": self.train_time,
                "window": asdict(self.window)}

    def best_val(self) -> dict | None:
        """The validation row with the lowest loss (the first of equals), or None before any."""
        return min(self.history.val, key=lambda r: r["val_loss"], default=None)


@dataclass
class Window:
    """Loss sums since the last row of the training curve."""
    loss: float = 0.0
    masked: int = 0
    nsp: float = 0.0
    steps: int = 0

    def add(self, loss: float, nsp: float, masked: int) -> None:
        self.loss += loss
        self.masked += masked
        self.nsp += nsp
        self.steps += 1

    def mean_loss(self) -> float:
        return self.loss / max(self.masked, 1)

    def row(self, step: int, lr: float, nsp_batch: int | None) -> dict:
        """Mean MLM loss per masked token; with ``nsp_batch`` (the global batch size) the NSP loss per example."""
        row = {"step": step, "loss": round(self.mean_loss(), 5), "lr": lr}
        if nsp_batch is not None:
            row["nsp_loss"] = round(self.nsp / (self.steps * nsp_batch), 5)
        return row
