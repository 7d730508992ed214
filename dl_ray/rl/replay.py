"""Replay memory that stores each frame once and rebuilds stacks by index when it samples.

A slot holds one frame (the newest 84x84 frame of an observation, or a whole vector observation) and the
step that led to it: action, clipped reward, ``done`` (no bootstrap past it) and ``prev`` — the absolute
position of the episode's previous frame, or -1 at the start of an episode. An episode's first slots are its
reset stack (``stack - 1`` context frames, then the first observation); every later step adds one slot, so a
million transitions take a million frames, not eight million.

Sampling picks slots that end a transition and follows ``prev`` ``stack`` times: the chain gives a
``window = frames[chain]`` of ``stack + 1`` frames, ``obs = window[:-1]`` and ``next_obs = window[1:]``
(:func:`split_window`; a batch ships the window once, not both stacks: 5 frames instead of 8). A chain
never leaves its episode (the pointers are per episode), and it is only used while every slot on it is
still in the ring buffer.
Actors interleave their env streams freely: the pointers make layout irrelevant.

Uniform sampling by default; proportional prioritized replay (Schaul et al. 2016) over a sum tree as an
option, with importance weights ``(N * P(i))^-beta`` normalised by the batch maximum.

The frames may live on a torch device (``device="cuda"``: the learner's own replay, ``replay.on_learner``):
the bookkeeping stays in numpy, and a sample's windows are one index gather on that device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

Chunk = dict[str, np.ndarray]
"""What an env runner sends: ``streams`` (n,), and per row r and env e: ``frames`` (R, n, *frame),
``action``, ``reward``, ``done``, ``start`` (R, n); ``context`` (S, stack - 1, *frame) holds the older
frames of each start's stack in ``np.nonzero(start)`` order."""


def split_window(window, stack: int):
    """(obs, next_obs) views of a sampled window (numpy or torch): frames ``[:-1]`` and ``[1:]``, and with
    ``stack == 1`` (vector observations) the single frame of each."""
    if stack == 1:
        return window[:, 0], window[:, 1]
    return window[:, :-1], window[:, 1:]


class SumTree:
    """Leaves are slot priorities, each inner node the sum of its two children; vectorised over batches."""

    def __init__(self, capacity: int):
        self.size = 1 << max(1, (capacity - 1).bit_length())
        self.levels = self.size.bit_length() - 1
        self.tree = np.zeros(2 * self.size)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        idx = np.asarray(slots) + self.size
        self.tree[idx] = values
        for _ in range(self.levels):
            idx = np.unique(idx // 2)
            self.tree[idx] = self.tree[2 * idx] + self.tree[2 * idx + 1]

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(slots) + self.size]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """The slot where each cumulative ``mass`` in [0, total) falls."""
        idx = np.ones(len(mass), dtype=np.int64)
        mass = mass.copy()
        for _ in range(self.levels):
            left = self.tree[2 * idx]
            right = mass >= left
            mass -= left * right
            idx = 2 * idx + right
        return idx - self.size


class FrameReplay:
    def __init__(self, capacity: int, frame_shape: tuple[int, ...], frame_dtype: str, stack: int,
                 prioritized: bool = False, alpha: float = 0.6, seed: int = 0, device: str | None = None):
        self.capacity, self.stack, self.alpha = capacity, stack, alpha
        self.device = torch.device(device) if device else None
        self.frames = np.zeros((capacity, *frame_shape), dtype=frame_dtype)
        if self.device is not None:
            self.frames = torch.from_numpy(self.frames).to(self.device)
        self.prev = np.full(capacity, -1, dtype=np.int64)
        self.action = np.zeros(capacity, dtype=np.uint8)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=bool)
        self.is_transition = np.zeros(capacity, dtype=bool)
        self.written = 0  # absolute positions handed out so far; slot = position % capacity
        self.last = np.full(0, -1, dtype=np.int64)  # per env stream: absolute position of its newest frame
        self.tree = SumTree(capacity) if prioritized else None
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ writing

    def add(self, chunk: Chunk) -> int:
        """Append a chunk; returns the number of transitions it added."""
        streams = np.asarray(chunk["streams"])
        if streams.max(initial=-1) >= len(self.last):
            self.last = np.concatenate([self.last, np.full(streams.max() + 1 - len(self.last), -1)])
        context = chunk.get("context")
        used, added = 0, 0
        for r in range(len(chunk["frames"])):
            start = chunk["start"][r]
            if start.any():
                envs = np.flatnonzero(start)
                prev = np.full(len(envs), -1, dtype=np.int64)
                for depth in range(self.stack - 1):
                    prev = self._write(context[used:used + len(envs), depth], prev, 0, 0.0, False, False)
                used += len(envs)
                self.last[streams[envs]] = prev
            prev = self.last[streams]  # a start chains to its own context frames
            is_transition = ~start & (prev >= 0)
            self.last[streams] = self._write(chunk["frames"][r], prev, chunk["action"][r], chunk["reward"][r],
                                             chunk["done"][r], is_transition)
            added += int(is_transition.sum())
        return added

    def _write(self, frames, prev, action, reward, done, is_transition) -> np.ndarray:
        positions = self.written + np.arange(len(frames))
        slots = positions % self.capacity
        self.frames[self._index(slots)] = frames if self.device is None else torch.from_numpy(frames).to(self.device)
        self.prev[slots] = prev
        self.action[slots] = action
        self.reward[slots] = reward
        self.done[slots] = done
        self.is_transition[slots] = is_transition
        self.written += len(frames)
        if self.tree is not None:
            self.tree.set(slots, np.where(is_transition, self.max_priority**self.alpha, 0.0))
        return positions

    # ------------------------------------------------------------------ sampling

    def __len__(self) -> int:
        """Frames held (each stored transition is one frame)."""
        return min(self.written, self.capacity)

    def chains(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stack + 1) absolute positions per sampled slot, oldest first, and whether all are still stored."""
        chain = np.empty((len(positions), self.stack + 1), dtype=np.int64)
        chain[:, -1] = positions
        for k in range(self.stack - 1, -1, -1):
            chain[:, k] = self.prev[chain[:, k + 1] % self.capacity]
        oldest = self.written - self.capacity
        ok = self.is_transition[positions % self.capacity] & (chain >= max(oldest, 0)).all(axis=1)
        return chain, ok

    def sample(self, batch_size: int, beta: float = 0.4) -> dict[str, np.ndarray]:
        """A batch of ``window`` (B, stack + 1, *frame; see :func:`split_window`), action, reward, done, weight
        and ``position`` (for priority updates)."""
        picked: list[np.ndarray] = []
        need = batch_size
        for _ in range(100):
            positions = self._draw(need)
            chain, ok = self.chains(positions)
            if self.tree is not None and not ok.all():
                self.tree.set(positions[~ok] % self.capacity, 0.0)  # its frames are gone: never again
            picked.append(chain[ok])
            need -= int(ok.sum())
            if need <= 0:
                break
        else:
            raise RuntimeError("replay holds no complete transition yet")
        chain = np.concatenate(picked)[:batch_size]
        slots = chain % self.capacity
        last = slots[:, -1]
        batch = {
            "window": self.frames[self._index(slots)],
            "action": self.action[last].astype(np.int64), "reward": self.reward[last], "done": self.done[last],
            "position": chain[:, -1], "weight": np.ones(batch_size, dtype=np.float32),
        }
        if self.tree is not None:
            prob = self.tree.get(last) / self.tree.total
            weight = (len(self) * prob) ** -beta
            batch["weight"] = (weight / weight.max()).astype(np.float32)
        return batch

    def _index(self, slots: np.ndarray) -> np.ndarray | torch.Tensor:
        """Index of ``self.frames``: the slots themselves, or on the frames' device."""
        return slots if self.device is None else torch.from_numpy(slots).to(self.device)

    def _draw(self, n: int) -> np.ndarray:
        low = max(0, self.written - self.capacity)
        if self.tree is None:
            return self.rng.integers(low, self.written, size=n)
        mass = (np.arange(n) + self.rng.random(n)) / n * self.tree.total
        slots = self.tree.find(mass)
        return self._position_of(slots)

    def _position_of(self, slots: np.ndarray) -> np.ndarray:
        """Absolute position now held by each slot."""
        base = (self.written - 1) // self.capacity * self.capacity
        positions = base + slots
        return np.where(positions >= self.written, positions - self.capacity, positions)

    def update_priorities(self, positions: np.ndarray, td_abs: np.ndarray, eps: float = 1e-6) -> None:
        if self.tree is None:
            return
        keep = positions >= self.written - self.capacity  # not overwritten since they were sampled
        priority = np.abs(td_abs[keep]) + eps
        self.max_priority = max(self.max_priority, float(priority.max(initial=0)))
        self.tree.set(positions[keep] % self.capacity, priority**self.alpha)

    # ------------------------------------------------------------------ accounting and checkpoints

    @property
    def nbytes(self) -> int:
        arrays = [self.frames, self.prev, self.action, self.reward, self.done, self.is_transition]  # numpy or torch
        return sum(a.nbytes for a in arrays) + (self.tree.tree.nbytes if self.tree is not None else 0)

    def stats(self) -> dict[str, Any]:
        return {"frames": len(self), "written": self.written, "bytes": self.nbytes}

    def state(self) -> dict[str, np.ndarray]:
        state = {k: getattr(self, k) for k in ("prev", "action", "reward", "done", "is_transition", "last")}
        state["frames"] = self.frames if self.device is None else self.frames.cpu().numpy()
        state["counters"] = np.array([self.written, self.max_priority])
        if self.tree is not None:
            state["tree"] = self.tree.tree
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k in ("frames", "prev", "action", "reward", "done", "is_transition", "last"):
            setattr(self, k, np.array(state[k]))
        if self.device is not None:
            self.frames = torch.from_numpy(self.frames).to(self.device)
        self.written, self.max_priority = int(state["counters"][0]), float(state["counters"][1])
        if self.tree is not None and "tree" in state:
            self.tree.tree = np.array(state["tree"])
        self.last[:] = -1  # actors restart their episodes after a resume
