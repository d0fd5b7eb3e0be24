"""
Differential keyframe selection (docs/architecture.md, "Keyframe selection"): choose K frames that are relevant to the
question and not redundant with each other, then spread any unused slots over the gaps between them.

Memory is O(N * K): a frame's similarities to the others are computed only when it is selected (at most K times),
never as an N x N matrix, so this runs on 100,000 frames.
"""

import math

import numpy as np
import torch
from torch.nn import functional as F


def check_num_keyframes(num_keyframes: int) -> None:
    """Raises `ValueError` unless `num_keyframes` (K) is a positive integer."""
    if isinstance(num_keyframes, bool) or not isinstance(num_keyframes, (int, np.integer)) or num_keyframes < 1:
        raise ValueError(f"`num_keyframes` must be a positive integer, got {num_keyframes!r}.")


def frame_relevance(frame_embeds: torch.Tensor, query_embed: torch.Tensor) -> torch.Tensor:
    """
    Cosine similarity `(N,)` of every frame embedding to the query embedding: the one relevance formula, for keyframe
    selection, the processor's `frame_relevance` and the scorer's training (`training.scorer`).
    """
    if frame_embeds.ndim != 2 or frame_embeds.shape[0] == 0:
        raise ValueError(f"`frame_embeds` must have shape (num_frames >= 1, dim), got {tuple(frame_embeds.shape)}.")
    if query_embed.numel() != frame_embeds.shape[1]:
        raise ValueError(
            f"`query_embed` has {query_embed.numel()} values but the frame embeddings have {frame_embeds.shape[1]}."
        )
    return unit_rows(frame_embeds) @ unit_rows(query_embed.reshape(1, -1))[0]


def unit_rows(embeds: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, as the original's cosine similarity does before its matrix product."""
    return F.normalize(embeds.float(), dim=-1)


def greedy_keyframes(
    unit_frame_embeds: torch.Tensor,
    relevance: torch.Tensor,
    num_keyframes: int,
    similarity_threshold: float,
    relevance_threshold: float | None = None,
) -> list[int]:
    """
    The greedy pass: visit frames from most to least relevant; select a frame not yet covered, then mark every frame
    more similar to it than `similarity_threshold` as covered. Stops at `num_keyframes` or below the relevance floor.
    `unit_frame_embeds` are the frame embeddings scaled to unit length.
    """
    scores, order = torch.sort(relevance, descending=True, stable=True)
    scores, order = scores.numpy(), order.numpy()
    visited = np.zeros(len(order), dtype=bool)
    selected: list[int] = []
    position = 0
    while len(selected) < num_keyframes and position < len(order):
        unvisited = ~visited[order[position:]]
        if not unvisited.any():
            break
        position += int(unvisited.argmax())
        if relevance_threshold is not None and scores[position] < relevance_threshold:
            break
        frame = int(order[position])
        selected.append(frame)
        visited |= (unit_frame_embeds @ unit_frame_embeds[frame]).numpy() > similarity_threshold
        visited[frame] = True
        position += 1
    return selected


def unselected_gaps(selected: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs `(start, end)` (inclusive) of unselected frames, in temporal order."""
    padded = np.concatenate([[True], selected, [True]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(start), int(end) - 1) for start, end in zip(edges[::2], edges[1::2], strict=True)]


def fill_gaps(selected: np.ndarray, num_keyframes: int) -> np.ndarray:
    """
    The released code's gap filling: spread the `num_keyframes - selected` unused slots over the unselected gaps at
    the smallest spacing that fits, then take any slots still left from the last gap backwards.
    """
    filled = selected.copy()
    remaining = num_keyframes - int(selected.sum())
    gaps = unselected_gaps(selected)
    lengths = np.array([end - start + 1 for start, end in gaps], dtype=np.int64)

    def slots_needed(spacing: int) -> int:
        return int((np.ceil(lengths / spacing) - 1).sum())

    low, high = 1, len(selected)
    while low < high:
        middle = (low + high) // 2
        if slots_needed(middle) <= remaining:
            high = middle
        else:
            low = middle + 1
    spacing = low

    for (start, end), length in zip(gaps, lengths, strict=True):
        count = math.ceil(length / spacing) - 1
        if count > 0:
            step = math.ceil(length / (count + 1))
            for i in range(1, count + 1):
                filled[min(start + step * i, end)] = True
            remaining -= count
    # The released code counts `count` slots per gap even if two positions coincide at `end`; so does this.
    for start, end in reversed(gaps):
        for position in range(end, start - 1, -1):
            if remaining <= 0:
                return filled
            if not filled[position]:
                filled[position] = True
                remaining -= 1
    return filled


def relevance_keyframes(
    frame_embeds: torch.Tensor,
    relevance: torch.Tensor,
    num_keyframes: int,
    similarity_threshold: float,
    relevance_threshold: float | None = None,
) -> np.ndarray:
    """
    The `(N,)` boolean mask of the keyframes the greedy pass chooses for their `relevance` (`frame_relevance`), before
    gap filling; at most `num_keyframes` of them. Other arguments as in `select_keyframes`.
    """
    check_num_keyframes(num_keyframes)
    unit_frames = unit_rows(frame_embeds.detach().cpu())
    chosen = greedy_keyframes(
        unit_frames, relevance.detach().cpu(), num_keyframes, similarity_threshold, relevance_threshold
    )
    selected = np.zeros(frame_embeds.shape[0], dtype=bool)
    selected[chosen] = True
    return selected


def keyframe_mask(chosen: np.ndarray, num_keyframes: int, fill_remaining: bool) -> torch.BoolTensor:
    """The keyframes: the frames `chosen` for their relevance, with `fill_remaining` the unused slots spread too."""
    return torch.from_numpy(fill_gaps(chosen, num_keyframes) if fill_remaining else chosen)


def select_keyframes(
    frame_embeds: torch.Tensor,
    query_embed: torch.Tensor,
    num_keyframes: int,
    similarity_threshold: float,
    relevance_threshold: float | None = None,
    fill_remaining: bool = True,
) -> torch.BoolTensor:
    """
    Differential keyframe selection of the released ViLAMP code.

    Args:
        frame_embeds: `(N, D)` frame scorer image embeddings.
        query_embed: `(D,)` or `(1, D)` frame scorer text embedding of the question.
        num_keyframes: K, the number of keyframes wanted.
        similarity_threshold: tau_f; a frame more similar than this to a selected keyframe is redundant.
        relevance_threshold: r_min; the greedy pass stops at frames less relevant than this. `None`: no floor.
        fill_remaining: spread unused slots over the gaps (released code). `False` keeps only the greedy pass,
            as in the paper's Algorithm 1.

    Returns:
        `torch.BoolTensor` of shape `(N,)` with exactly `min(K, N)` true entries when `fill_remaining` is set.
    """
    relevance = frame_relevance(frame_embeds, query_embed)
    chosen = relevance_keyframes(frame_embeds, relevance, num_keyframes, similarity_threshold, relevance_threshold)
    return keyframe_mask(chosen, num_keyframes, fill_remaining)
