"""The mini-batch every model consumes, as torch tensors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from affectune import MODALITIES


@dataclass
class Batch:
    """B samples. Features are already filled (zero or gaussian) where frames are missing.

    A model's `forward` may use the features, `valid` (padding) masks, tokens and `available`.
    `available` (B, 3) says, per sample and modality (MODALITIES order), whether the modality is
    present at all: False only where it is absent as a whole (a train policy dropped it, a test
    cell at rate 1.0, an inter-modality condition), which a deployed system knows too.
    `dropped` records which frames the train-time missing policy removed; it is there for
    losses that need it (e.g. reconstruction on masked positions) and is all-False at test time
    so no model can peek at the evaluation masks.
    """

    text: torch.Tensor  # (B, Tt, Dt) float32
    audio: torch.Tensor  # (B, Ta, Da) float32
    vision: torch.Tensor  # (B, Tv, Dv) float32
    valid: dict[str, torch.Tensor]  # modality -> (B, T_m) bool, True inside the sequence length
    dropped: dict[str, torch.Tensor]  # modality -> (B, T_m) bool, True where a frame was removed
    label: torch.Tensor  # (B,) float32 for regression, int64 for classification
    index: torch.Tensor  # (B,) int64 row of each sample in its split
    tokens: torch.Tensor | None = None  # (B, Tt) int64 token ids, or None
    available: torch.Tensor | None = None  # (B, 3) bool, MODALITIES order; None = all True

    def __post_init__(self):
        if self.available is None:
            self.available = torch.ones(self.text.shape[0], len(MODALITIES), dtype=torch.bool,
                                        device=self.text.device)

    def features(self, modality: str) -> torch.Tensor:
        return getattr(self, modality)

    def present(self, modality: str) -> torch.Tensor:
        """(B, T_m) bool: inside the length and not dropped."""
        return self.valid[modality] & ~self.dropped[modality]

    @property
    def size(self) -> int:
        return int(self.text.shape[0])

    def replace(self, **changes) -> "Batch":
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            text=mv(self.text), audio=mv(self.audio), vision=mv(self.vision),
            valid={m: mv(v) for m, v in self.valid.items()},
            dropped={m: mv(v) for m, v in self.dropped.items()},
            label=mv(self.label), index=mv(self.index), tokens=mv(self.tokens),
            available=mv(self.available),
        )

    def trimmed(self) -> "Batch":
        """The same samples cut, per modality, after the batch's last valid frame (at least 1 frame).

        Models ignore padding (tests/test_models.py checks that appending it changes no output),
        so this changes no prediction; attention cost falls with the square of the padded length.
        Modalities padded to one common length (word-aligned data) are cut to one common length,
        because aligned models pair frames by index.
        """
        keep = {m: self._last_valid_frame(v) for m, v in self.valid.items()}
        if len({v.shape[1] for v in self.valid.values()}) == 1:
            keep = dict.fromkeys(keep, max(keep.values()))
        changes = {}
        for m, v in self.valid.items():
            if keep[m] < v.shape[1]:
                changes[m] = self.features(m)[:, :keep[m]]
                changes.setdefault("valid", dict(self.valid))[m] = v[:, :keep[m]]
                changes.setdefault("dropped", dict(self.dropped))[m] = self.dropped[m][:, :keep[m]]
                if m == "text" and self.tokens is not None:
                    changes["tokens"] = self.tokens[:, :keep[m]]
        return self.replace(**changes) if changes else self

    @staticmethod
    def _last_valid_frame(valid: torch.Tensor) -> int:
        """1-based position of the last valid frame over the batch (at least 1); one sync."""
        if not valid.numel():
            return valid.shape[1]
        frame = torch.arange(1, valid.shape[1] + 1, device=valid.device)  # (T,)
        return max(1, int((valid * frame).amax()))

    def is_available(self, modality: str) -> torch.Tensor:
        """(B,) bool: the modality is present (not absent as a whole) for each sample."""
        return self.available[:, MODALITIES.index(modality)]

