"""Streaming batches for training, deterministic and rank/worker-aware.

:class:`ShardStream` reads feature shards (:mod:`pandiff.data.shards`) with ``safe_open``
(memory-mapped) and reads only the rows of the current batch, so a dataset larger than RAM trains
fine. The order of every :class:`BatchStream` is a pure function of ``(seed, epoch)``: shards in a
random order, items through a shuffle buffer, the stream dealt to ranks, cut into batches, and the
batches dealt to DataLoader workers. A resumed run therefore skips exactly the batches it has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import IterableDataset, get_worker_info

from pandiff.data.shards import FeatureManifest
from pandiff.errors import DataError

# Memory-mapped shards kept open per worker; the shuffle buffer spans few shards at a time.
MAX_OPEN_SHARDS = 8


def buffer_shuffle(stream: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of ``size`` gives ``stream``: each output is a uniform pick from
    the buffer, whose slot the next input refills. Items move at most ~``size`` places forward,
    which keeps reads local to a few shards."""
    n = len(stream)
    if size >= n:
        return rng.permutation(stream)
    out = np.empty_like(stream)
    buf = stream[:size].copy()
    picks = rng.integers(0, size, n - size)
    for i, j in enumerate(picks):
        out[i] = buf[j]
        buf[j] = stream[size + i]
    out[n - size :] = rng.permutation(buf)
    return out


class BatchStream(IterableDataset):
    """A deterministic, rank- and worker-aware stream of collated batches over numbered items.

    Items are numbered ``0..N-1`` in groups (shards) of ``counts``. Use with
    ``DataLoader(stream, batch_size=None, num_workers=W)``: the batches come out in the same order
    for any ``W``. Every rank gets the same number of batches per epoch (the remainder is dropped).

    Subclasses implement :meth:`load_batch`.
    """

    def __init__(
        self,
        counts: list[int],
        batch_size: int,
        seed: int,
        shuffle_buffer: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.counts = [int(c) for c in counts]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.skip_batches = 0, 0
        if self.batches_per_epoch < 1:
            raise DataError(
                f"{self.num_items} items cannot fill one batch of {batch_size} on each of {world_size} "
                "process(es); lower train.batch_size or add data"
            )

    @property
    def num_items(self) -> int:
        return int(self.offsets[-1])

    @property
    def batches_per_epoch(self) -> int:
        return (self.num_items // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's order and skip its first ``skip_batches`` batches (on resume)."""
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """``num_batches x batch_size`` item numbers this rank gets in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        shards = rng.permutation(len(self.counts))
        stream = np.concatenate([np.arange(self.offsets[s], self.offsets[s + 1]) for s in shards])
        order = buffer_shuffle(stream, self.shuffle_buffer, rng)
        mine = order[self.rank :: self.world_size][: self.num_items // self.world_size]
        n = self.batches_per_epoch * self.batch_size
        return mine[:n].reshape(self.batches_per_epoch, self.batch_size)

    def caption_draws(self, epoch: int) -> np.ndarray:
        """One uniform number in [0, 1) per item and epoch: which caption the item shows."""
        return np.random.default_rng([self.seed, epoch, 1]).random(self.num_items)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        batches = self.epoch_batches(self.epoch)[self.skip_batches :]
        draws = self.caption_draws(self.epoch)
        state = self.open_state()
        for ids in batches[worker::workers]:
            yield self.load_batch(ids, draws[ids], state)

    def open_state(self) -> Any:
        """Per-iterator resources (open files); made inside the worker, never pickled."""
        return None

    def load_batch(self, ids: np.ndarray, draws: np.ndarray, state: Any) -> dict[str, Any]:
        raise NotImplementedError


class ShardStream(BatchStream):
    """Batches of one split of a feature folder.

    Batches are dicts: ``moments`` ``B 2C h w`` float16, ``text`` ``B L D`` float16 (one of the
    item's captions, drawn per epoch), ``category``/``instance`` ``B M M`` long, ``image_id`` ``B``.
    """

    def __init__(
        self,
        manifest: FeatureManifest,
        split: str,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 2048,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        files = manifest.shard_files(split)
        self.files = [str(p) for p, _ in files]
        super().__init__([c for _, c in files], batch_size, seed, shuffle_buffer, rank, world_size)

    def open_state(self) -> OrderedDict:
        return OrderedDict()

    def _handle(self, handles: OrderedDict, shard: int):
        if shard in handles:
            handles.move_to_end(shard)
            return handles[shard]
        try:
            handle = safe_open(self.files[shard], framework="pt")
        except (OSError, SafetensorError) as exc:
            raise DataError(
                f"cannot read feature shard {self.files[shard]} ({exc}); re-run `pandiff prepare`"
            ) from None
        handles[shard] = handle
        if len(handles) > MAX_OPEN_SHARDS:
            handles.popitem(last=False)
        return handle

    def load_batch(self, ids: np.ndarray, draws: np.ndarray, state: OrderedDict) -> dict[str, Any]:
        shards = np.searchsorted(self.offsets, ids, side="right") - 1
        rows = ids - self.offsets[shards]
        parts: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("moments", "text", "category", "instance", "image_id")
        }
        for shard, row, u in zip(shards.tolist(), rows.tolist(), draws.tolist()):
            handle = self._handle(state, shard)
            count = int(handle.get_slice("num_captions")[row : row + 1][0])
            caption = min(int(u * count), count - 1)
            parts["text"].append(handle.get_slice("text")[row : row + 1, caption][0])  # L D
            for key in ("moments", "category", "instance", "image_id"):
                parts[key].append(handle.get_slice(key)[row : row + 1][0])
        batch = {k: torch.stack(v) for k, v in parts.items()}
        batch["category"] = batch["category"].long()
        batch["instance"] = batch["instance"].long()
        return batch


class ResidentStream(ShardStream):
    """:class:`ShardStream` with the whole split loaded once into memory on ``device`` (a GPU when
    training there): a batch is a few index operations instead of one memory-mapped read per row,
    so a fast accelerator is never left waiting on the input pipeline. The order, the caption
    draws and the resume semantics are exactly :class:`ShardStream`'s (same ``epoch_batches``),
    so a run can switch between the two and see the same batches.

    Use with ``DataLoader(stream, batch_size=None, num_workers=0)``: the tensors already live on
    ``device``.
    """

    KEYS = ("moments", "text", "num_captions", "category", "instance", "image_id")

    def __init__(self, *args: Any, device: str | torch.device = "cpu", **kwargs: Any) -> None:
        """:class:`ShardStream`'s arguments, and ``device`` to hold the split on."""
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.KEYS}
        handles: OrderedDict = OrderedDict()
        for shard in range(len(self.files)):
            handle = self._handle(handles, shard)
            for key in self.KEYS:
                parts[key].append(handle.get_tensor(key))
        self.tensors = {k: torch.cat(v).to(self.device) for k, v in parts.items()}

    @property
    def nbytes(self) -> int:
        """Bytes the split takes on ``device``."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def load_batch(self, ids: np.ndarray, draws: np.ndarray, state: Any) -> dict[str, Any]:
        t = self.tensors
        index = torch.as_tensor(ids, device=self.device)
        count = t["num_captions"][index].long()
        # The same caption choice as ShardStream: floor(u * count), clamped to the last caption.
        u = torch.as_tensor(draws, dtype=torch.float64, device=self.device)
        caption = torch.minimum((u * count).long(), count - 1)
        batch = {k: t[k][index] for k in ("moments", "category", "instance", "image_id")}
        batch["text"] = t["text"][index, caption]
        batch["category"] = batch["category"].long()
        batch["instance"] = batch["instance"].long()
        return batch
