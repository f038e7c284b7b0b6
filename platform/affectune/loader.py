"""Split -> Batch, fast: a split is preloaded as torch tensors once, batches are index gathers.

There is no per-sample `__getitem__`/collate: `TensorSplit.batch(index)` gathers B rows of each
tensor with one `index_select` per field, so the loop's data cost is a handful of memcpy calls
per step (the benchmark checks that the platform loop stays within 10% of a bare PyTorch loop).

Shuffling goes through `torch.utils.data.DistributedSampler` in every case (num_replicas=1,
rank=0 in a single process), so a single-process run and each rank of a data-parallel run use
the same seeded per-epoch permutation (seed + epoch), and each rank gets its own disjoint shard.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from affectune import MODALITIES
from affectune.batch import Batch
from affectune.data.schema import Dataset, Split


@dataclass
class TensorSplit:
    """One split as tensors on one device. N samples; T_m frames and D_m features per modality."""

    features: dict[str, torch.Tensor]  # modality -> (N, T_m, D_m) float32
    valid: dict[str, torch.Tensor]  # modality -> (N, T_m) bool, True inside the length
    label: torch.Tensor  # (N,) float32 (regression) or int64 (classification)
    ids: np.ndarray  # (N,) str, the mask keys
    lengths: dict[str, np.ndarray]  # modality -> (N,) int64 (numpy: the mask functions want it)
    tokens: torch.Tensor | None = None  # (N, Tt) int64 or None
    available: torch.Tensor | None = None  # (N, 3) bool modality-level presence; None = all present

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def device(self) -> torch.device:
        return self.label.device

    @classmethod
    def from_split(cls, split: Split, task: str, device: torch.device | str = "cpu") -> "TensorSplit":
        """Zero-copy on CPU (torch.from_numpy shares the split's arrays); one transfer otherwise."""
        device = torch.device(device)

        def as_tensor(a: np.ndarray) -> torch.Tensor:
            # Memoised datasets are read-only; the tensors are only ever read (fills make copies),
            # so sharing the memory is safe and torch's "not writable" warning is moot here.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        features = {m: as_tensor(split.features(m)) for m in MODALITIES}
        valid = {}
        for m in MODALITIES:
            frames = torch.arange(features[m].shape[1], device=device)  # (T_m,)
            valid[m] = frames[None, :] < as_tensor(split.lengths[m].astype(np.int64))[:, None]  # (N, T_m)
        if task == "regression":
            label = as_tensor(split.label_reg.astype(np.float32, copy=False))
        else:
            label = as_tensor(split.label_cls.astype(np.int64, copy=False))
        tokens = None if split.tokens is None else as_tensor(split.tokens.astype(np.int64, copy=False))
        lengths = {m: np.asarray(split.lengths[m], dtype=np.int64) for m in MODALITIES}
        return cls(features, valid, label, np.asarray(split.ids), lengths, tokens)

    def with_features(self, features: dict[str, torch.Tensor], tokens: torch.Tensor | None = None,
                      available: torch.Tensor | None = None) -> "TensorSplit":
        """The same samples with some modalities' features (and optionally tokens, availability) replaced."""
        return TensorSplit({**self.features, **features}, self.valid, self.label, self.ids,
                           self.lengths, self.tokens if tokens is None else tokens,
                           self.available if available is None else available)

    def batch(self, index: torch.Tensor | slice) -> Batch:
        """Rows `index` ((B,) int64 tensor on this split's device, or a slice: a copy-free view)."""
        if isinstance(index, slice):
            take = lambda t: t[index]  # noqa: E731
            rows = torch.arange(len(self), device=self.device)[index]
        else:
            take = lambda t: t.index_select(0, index)  # noqa: E731
            rows = index
        valid = {m: take(self.valid[m]) for m in MODALITIES}
        return Batch(
            text=take(self.features["text"]), audio=take(self.features["audio"]),
            vision=take(self.features["vision"]), valid=valid,
            dropped={m: torch.zeros_like(v) for m, v in valid.items()},
            label=take(self.label), index=rows,
            tokens=None if self.tokens is None else take(self.tokens),
            available=None if self.available is None else take(self.available),
        )

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Consecutive slices in order (evaluation), each trimmed to its longest sample."""
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size)).trimmed()


def preload(dataset: Dataset, split: str, device: torch.device | str = "cpu") -> TensorSplit:
    """`dataset.splits[split]` as a TensorSplit."""
    return TensorSplit.from_split(dataset.splits[split], dataset.task, device)


class EpochBatches:
    """Shuffled training batches of one rank's shard, reseeded each epoch (call `set_epoch`), each
    trimmed to its longest sample (`Batch.trimmed`).

    `batch_size` is the per-rank batch. DistributedSampler pads the permutation so that every rank
    has the same number of samples (and therefore of steps, which DDP requires); with one rank it
    is a plain seeded permutation. `drop_last` drops a final batch smaller than half `batch_size`
    when there are at least two batches: a 1-sample batch gives a noisy step and breaks models
    that normalise over the batch.

    `length_buckets` k > 0 groups samples of similar length (bucketing, as fairseq and AllenNLP
    do): each run of k x batch_size samples of the shuffled shard is sorted by total length
    (frames summed over modalities) and cut into batches, and the batches are shuffled, both
    seeded by (seed, epoch). Every sample is still visited once per epoch, but a batch now holds
    samples of similar length, so trimming cuts most of its padding (attention cost grows with
    the square of the frames); batch composition is no longer uniformly random.
    """

    def __init__(self, data: TensorSplit, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, drop_small_last: bool = True,
                 length_buckets: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if length_buckets < 0:
            raise ValueError(f"length_buckets must be >= 0 (0 = off), got {length_buckets}")
        self.data = data
        self.batch_size = int(batch_size)
        self.drop_small_last = drop_small_last
        self.length_buckets = int(length_buckets)
        self.total_length = torch.as_tensor(sum(data.lengths[m] for m in MODALITIES))  # (N,) frames
        # The sampler only needs len(); a range is a sized stand-in for the split.
        self.sampler = DistributedSampler(range(len(data)), num_replicas=world_size, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=False)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def shard(self) -> torch.Tensor:
        """(n_rank,) int64 rows this rank visits this epoch, in visiting order."""
        return torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)

    def __len__(self) -> int:
        n = self.sampler.num_samples
        full, rest = divmod(n, self.batch_size)
        keep_rest = rest > 0 and not (self.drop_small_last and full >= 1 and rest < self.batch_size / 2)
        return full + int(keep_rest)

    def batch_rows(self) -> list[torch.Tensor]:
        """This epoch's batches as row indices (CPU int64), in visiting order."""
        order = self.shard()  # (n_rank,)
        rows = [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(self))]
        if not self.length_buckets:
            return rows
        pool = self.length_buckets * self.batch_size  # a multiple of the batch: only the last batch is short
        rows = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[torch.argsort(self.total_length[chunk], stable=True)]  # ties keep the shuffle
            rows += list(chunk.split(self.batch_size))
        rows = rows[:len(self)]  # the short last batch goes where drop_small_last would drop it
        g = torch.Generator().manual_seed(self.sampler.seed + self.sampler.epoch)
        return [rows[k] for k in torch.randperm(len(rows), generator=g).tolist()]

    def __iter__(self) -> Iterator[Batch]:
        for rows in self.batch_rows():
            yield self.data.batch(rows.to(self.data.device)).trimmed()


def masked_copy(data: TensorSplit, dropped: dict[str, torch.Tensor], *, fill: str = "zero",
                seed: int = 0, absent: tuple[str, ...] = ()) -> TensorSplit:
    """`data` with the given (N, T_m) frames removed and filled, for a fixed evaluation set.

    The whole split is filled in one call (so gaussian noise is a function of the seed and the
    split, identical for every method); modalities absent from `dropped` share the original
    tensors. The masks are not recorded in `dropped` of the batches it yields: at evaluation time
    a model must not see where frames were removed. Modalities in `absent` (removed as a whole)
    are marked in `available`, which a model may read.
    """
    from affectune.missing import apply_dropped  # the protocol owns filling and token masking

    whole = data.batch(slice(None))
    filled = apply_dropped(whole, dropped, fill=fill, seed=seed, record=False, absent=absent)
    return data.with_features({m: filled.features(m) for m in dropped}, tokens=filled.tokens,
                              available=filled.available if absent else None)
