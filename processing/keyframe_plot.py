"""
A picture of what keyframe selection did: the question's relevance for every sampled frame over time, the keyframes
marked on it, and a strip of the keyframes themselves.
"""

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


THUMBNAILS_PER_ROW = 8


def format_timestamp(seconds: float) -> str:
    """`hh:mm:ss` for a time in seconds (rounded to the nearest second)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _as_numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def plot_keyframes(
    path: str | os.PathLike,
    frame_timestamps: Sequence[float] | torch.Tensor,
    frame_relevance: Sequence[float] | torch.Tensor,
    keyframe_indices: Sequence[int] | torch.Tensor,
    keyframe_images: np.ndarray | torch.Tensor,
    question: str | None = None,
    aspect_ratio: float | None = None,
    gap_filled: Sequence[bool] | None = None,
) -> Path:
    """
    Draws the keyframe timeline and writes it as a PNG.

    Args:
        path: where to write the PNG.
        frame_timestamps: `(N,)` time of each sampled frame, in seconds.
        frame_relevance: `(N,)` CLIP cosine similarity of each frame to the question.
        keyframe_indices: `(K,)` indices of the keyframes among the sampled frames.
        keyframe_images: `(K, 3, H, W)` uint8 keyframes, in the order of `keyframe_indices`.
        question: shown as the title.
        aspect_ratio: width / height of the video as it plays: the thumbnails are drawn at it, not as the tower's
            square frames. Square when not given.
        gap_filled: `(K,)` whether each keyframe filled a gap (drawn hollow) rather than being chosen for its
            relevance: such a keyframe may sit in a trough of relevance while higher peaks are skipped.

    Returns:
        The path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as error:
        raise ImportError("plot_keyframes needs matplotlib: pip install matplotlib") from error

    timestamps, relevance = _as_numpy(frame_timestamps).astype(float), _as_numpy(frame_relevance).astype(float)
    indices, images = _as_numpy(keyframe_indices).astype(int), _as_numpy(keyframe_images)
    filled = np.zeros(len(indices), dtype=bool) if gap_filled is None else np.asarray(gap_filled, dtype=bool)
    _check_shapes(timestamps, relevance, indices, images, filled)

    rows = max(1, math.ceil(len(indices) / THUMBNAILS_PER_ROW))
    columns = THUMBNAILS_PER_ROW if len(indices) > THUMBNAILS_PER_ROW else max(len(indices), 1)
    # A thumbnail is 1/8 of the 12-inch width; its row is as tall as the picture at the video's shape, plus a title.
    row_height = min(1.7, 12 / THUMBNAILS_PER_ROW / (aspect_ratio or 1.0) + 0.35)
    figure = plt.figure(figsize=(12, 3.2 + row_height * rows), dpi=100, layout="constrained")
    grid = figure.add_gridspec(1 + rows, columns, height_ratios=[3.2] + [row_height] * rows)
    _draw_timeline(figure.add_subplot(grid[0, :]), timestamps, relevance, indices, filled, question)
    for number, (index, image, gap) in enumerate(zip(indices, images, filled, strict=True)):
        axis = figure.add_subplot(grid[1 + number // columns, number % columns])
        _draw_thumbnail(axis, image, f"{number + 1}: {format_timestamp(timestamps[index])}", gap, aspect_ratio)
    path = Path(path)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def _check_shapes(
    timestamps: np.ndarray, relevance: np.ndarray, indices: np.ndarray, images: np.ndarray, filled: np.ndarray
) -> None:
    if timestamps.shape != relevance.shape or timestamps.ndim != 1:
        raise ValueError(f"frame_timestamps {timestamps.shape} and frame_relevance {relevance.shape} must be (N,).")
    if images.ndim != 4 or images.shape[0] != indices.shape[0]:
        raise ValueError(f"keyframe_images {images.shape} must be (K, 3, H, W) for the {len(indices)} keyframes.")
    if indices.size and (indices.min() < 0 or indices.max() >= timestamps.shape[0]):
        raise ValueError(f"keyframe_indices must lie in [0, {timestamps.shape[0]}).")
    if filled.shape != indices.shape:
        raise ValueError(f"gap_filled {filled.shape} must hold one flag per keyframe, {indices.shape}.")


def _draw_timeline(
    axis,
    timestamps: np.ndarray,
    relevance: np.ndarray,
    indices: np.ndarray,
    filled: np.ndarray,
    question: str | None,
) -> None:
    """Relevance over time, keyframes marked and numbered: solid if chosen for relevance, hollow if filling a gap."""
    axis.plot(timestamps, relevance, color="0.55", linewidth=1, label="relevance to the question")
    chosen = indices[~filled]
    axis.scatter(
        timestamps[chosen], relevance[chosen], color="tab:red", zorder=3, s=24, label="keyframes chosen for relevance"
    )
    if filled.any():
        axis.scatter(
            timestamps[indices[filled]],
            relevance[indices[filled]],
            facecolors="white",
            edgecolors="tab:red",
            zorder=3,
            s=24,
            label="keyframes filling gaps between them",
        )
    for number, index in enumerate(indices):
        axis.axvline(timestamps[index], color="tab:red", alpha=0.15, linewidth=1)
        axis.annotate(
            str(number + 1),
            (timestamps[index], relevance[index]),
            textcoords="offset points",
            # Three heights in turn: neighbouring keyframes' numbers (32 of them on a long video) do not overlap.
            xytext=(0, 5 + 9 * (number % 3)),
            ha="center",
            fontsize=7,
            color="tab:red",
        )
    axis.margins(y=0.15)  # room above the highest keyframe for its number
    axis.set_xlabel("time in the video")
    axis.set_ylabel("CLIP similarity to the question")
    ticks = axis.get_xticks()
    axis.set_xticks(ticks, [format_timestamp(max(tick, 0.0)) for tick in ticks])
    axis.set_xlim(timestamps.min() - 0.5, timestamps.max() + 0.5)
    axis.legend(loc="best", fontsize=8)
    title = f"{len(indices)} keyframes among {len(timestamps)} sampled frames"
    axis.set_title(f"{question}\n{title}" if question else title, fontsize=10)


def _draw_thumbnail(axis, image: np.ndarray, title: str, gap_filled: bool, aspect_ratio: float | None) -> None:
    """One `(3, H, W)` keyframe at the video's own shape, titled with its number and time."""
    height, width = image.shape[1:]
    # imshow's `aspect` is a pixel's height over its width: the frame is shown at the video's own shape.
    shape = 1.0 if aspect_ratio is None else width / (height * aspect_ratio)
    axis.imshow(np.transpose(image, (1, 2, 0)), aspect=shape, interpolation="lanczos")
    axis.set_title(f"{title}{' (gap)' if gap_filled else ''}", fontsize=8)
    axis.axis("off")
