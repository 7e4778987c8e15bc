"""Precomputed reference log-probs, cached on disk.

An entry holds the reference log-probs of one split's examples: a ``(rows, width)`` float32 table (pairs: chosen
and rejected; KTO: the completion and its mismatched KL completion). Its key is a SHA-256 over the reference
weights (the tensors themselves), the tokenized examples in order, and the settings that change the numbers
(dtype, mixed precision, attention, log-prob route, padding-free); any change gives another folder, so an entry
is never reused for other weights or data. The table is written in chunks of :data:`CHUNK_ROWS` examples, each
atomically, with its key, rows and width in the file's metadata (checked when read: a chunk that does not match is
computed again). A run killed while precomputing keeps the chunks it finished and continues with the rest.

With several processes, each chunk is split across them (every process runs the same number of forwards, as
sharded models need), gathered, and written by the first process.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from oa_core.io import atomic_path, atomic_write_text

CACHE_VERSION = 1  # bump when the table layout or the key changes
CHUNK_ROWS = 4096
TOKEN_KEYS = ("prompt_input_ids", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels",
              "completion_input_ids", "completion_labels", "kl_input_ids", "kl_labels")


def examples_digest(examples: Sequence[dict]) -> str:
    """SHA-256 over the token ids and labels of ``examples``, in order."""
    h = hashlib.sha256()
    for ex in examples:
        for key in TOKEN_KEYS:
            if key in ex:
                h.update(key.encode())
                h.update(array("q", ex[key]).tobytes())
        h.update(b"\0")
    return h.hexdigest()


def cache_key(weights: str, data: str, settings: dict) -> str:
    payload = json.dumps({"version": CACHE_VERSION, "weights": weights, "data": data, "settings": settings},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class CacheEntry:
    folder: Path
    key: str
    rows: int
    width: int

    @classmethod
    def at(cls, cache_dir: str | Path, key: str, rows: int, width: int) -> CacheEntry:
        return cls(Path(cache_dir) / f"reference-logps-{key}", key, rows, width)

    def chunks(self) -> list[tuple[int, int]]:
        return [(start, min(start + CHUNK_ROWS, self.rows)) for start in range(0, self.rows, CHUNK_ROWS)]

    def path(self, i: int) -> Path:
        return self.folder / f"chunk-{i:05d}.safetensors"

    def read(self, i: int) -> torch.Tensor | None:
        """Chunk ``i`` when it is on disk and made for this key, rows and width; else None."""
        start, stop = self.chunks()[i]
        try:
            with safe_open(self.path(i), framework="pt") as f:
                meta, table = f.metadata(), f.get_tensor("logps")
        except (OSError, ValueError, SafetensorError):
            return None
        expected = {"key": self.key, "start": str(start), "stop": str(stop), "width": str(self.width)}
        if meta != expected or tuple(table.shape) != (stop - start, self.width):
            return None
        return table

    def on_disk(self) -> int:
        return sum(self.read(i) is not None for i in range(len(self.chunks())))

    def status(self) -> dict:
        done, total = self.on_disk(), len(self.chunks())
        state = "hit" if done == total else "miss" if done == 0 else "partial"
        return {"cache": state, "chunks_on_disk": done, "chunks": total, "rows": self.rows, "path": str(self.folder)}

    def write(self, i: int, table: torch.Tensor, about: dict) -> None:
        start, stop = self.chunks()[i]
        if not (self.folder / "entry.json").exists():
            atomic_write_text(self.folder / "entry.json", json.dumps({"key": self.key, **about}, indent=1))
        with atomic_path(self.path(i)) as tmp:
            save_file({"logps": table.contiguous()}, str(tmp),
                      metadata={"key": self.key, "start": str(start), "stop": str(stop), "width": str(self.width)})

    def fill(self, compute: Callable[[list[int]], torch.Tensor], accelerator, *, batch_size: int, about: dict,
             desc: str) -> torch.Tensor:
        """The whole table: chunks on disk are read, the others computed (``compute(indices) -> (n, width)``)."""
        table = torch.empty(self.rows, self.width)
        todo = []
        for i, (start, stop) in enumerate(self.chunks()):
            got = self.read(i)
            if got is None:
                todo.append(i)
            else:
                table[start:stop] = got
        accelerator.wait_for_everyone()  # every process has read what was there before anything is written
        world, rank = accelerator.num_processes, accelerator.process_index
        bar = tqdm(total=sum(stop - start for start, stop in (self.chunks()[i] for i in todo)), desc=desc,
                   disable=not accelerator.is_main_process or not todo, dynamic_ncols=True, leave=False)
        for i in todo:
            start, stop = self.chunks()[i]
            per = math.ceil((stop - start) / world)
            mine = [min(start + rank * per + j, stop - 1) for j in range(per)]  # fillers repeat the last row
            values = torch.cat([compute(mine[b:b + batch_size]) for b in range(0, per, batch_size)])
            got = accelerator.gather(values.float().contiguous())[: stop - start].cpu()
            if accelerator.is_main_process:
                self.write(i, got, about)
            table[start:stop] = got
            bar.update(stop - start)
        bar.close()
        accelerator.wait_for_everyone()
        return table
