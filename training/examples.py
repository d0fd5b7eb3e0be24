"""
Training examples: reading the released recipe's data files (docs/architecture.md, "Training recipe") and turning each
record, in the original's LLaVA format or as chat `messages`, into one `TrainingExample`.

A data file is a JSON list, a JSON Lines file, or a YAML mixture of such files:

    datasets:
      - json_path: data/captions.json
        sampling_strategy: all          # or first:N, end:N, random:N (N a count or a percentage, e.g. 10%)

A record in the original's format:

    {"video": "clip.mp4", "query": "What does the rabbit eat?",
     "conversations": [{"from": "human", "value": "<image>\\nWhat does the rabbit eat?"},
                       {"from": "gpt", "value": "An apple."}]}

`video` is a file or a folder of frame images, relative to the dataset's `video_folder`; a list of them is
concatenated into one video. The same example as chat messages, as Hugging Face datasets hold them:

    {"messages": [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                               {"type": "text", "text": "What does the rabbit eat?"}]},
                  {"role": "assistant", "content": "An apple."}]}
"""

import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml


IMAGE_TOKEN = "<image>"  # the original data's placeholder for the video
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}
CHAT_ROLES = ("system", "user", "assistant")
SAMPLING_STRATEGIES = ("all", "first", "end", "random")


@dataclass
class TrainingExample:
    """
    One training conversation about one video.

    Attributes:
        messages: chat messages for the processor's chat template, holding exactly one video slot.
        videos: files or frame folders, concatenated in this order into the example's video.
        query: the frame scorer's question; `None` leaves it to the processor, which takes the text of the turn
            that holds the video.
    """

    messages: list[dict]
    videos: tuple[Path, ...]
    query: str | None = None


def load_examples(data_path: str | os.PathLike, seed: int = 0) -> list[dict]:
    """
    The records of a data file: a JSON list (`.json`), one JSON object a line (`.jsonl`), or a YAML mixture
    (`.yaml`, `.yml`) whose `datasets` entries each name a `json_path` and a `sampling_strategy`. Relative
    `json_path`s are taken from the current directory, as the original does. `seed` drives `random:N` sampling.
    """
    path = Path(data_path)
    if path.suffix in (".yaml", ".yml"):
        return load_mixture(path, seed)
    return read_records(path)


def read_records(path: Path) -> list[dict]:
    """The records of one `.json` (a list of objects) or `.jsonl` (an object a line) file."""
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"Unsupported data file {path}: give a .json, .jsonl or .yaml file.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Cannot read data file {path}: {error}") from error
    if not isinstance(records, list):
        raise ValueError(f"Data file {path} must hold a list of examples, got a {type(records).__name__}.")
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"Example {position} of {path} must be an object, got {type(record).__name__}.")
    return records


def load_mixture(path: Path, seed: int = 0) -> list[dict]:
    """The records of a YAML mixture, each listed file's records sampled by its `sampling_strategy`, in order."""
    try:
        mixture = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"Cannot read data mixture {path}: {error}") from error
    datasets = mixture.get("datasets") if isinstance(mixture, dict) else None
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"Data mixture {path} must hold a non-empty `datasets:` list.")
    rng = random.Random(seed)
    records = []
    for position, entry in enumerate(datasets):
        if not isinstance(entry, dict) or not isinstance(entry.get("json_path"), str):
            raise ValueError(f"Entry {position} of data mixture {path} must name its file in `json_path`.")
        strategy = entry.get("sampling_strategy", "all")
        try:
            records += sample_records(read_records(Path(entry["json_path"])), strategy, rng)
        except ValueError as error:
            raise ValueError(f"Entry {position} of data mixture {path}: {error}") from error
    return records


def sample_records(records: list[dict], strategy: str, rng: random.Random) -> list[dict]:
    """
    The records a mixture entry keeps: `all`, the `first:N`, the last (`end:N`), or `random:N` drawn with `rng`.
    `N` is a count or a percentage of the file (`10%`, rounded up).
    """
    name, _, amount = str(strategy).partition(":")
    if name not in SAMPLING_STRATEGIES or (name == "all") != (amount == ""):
        raise ValueError(f"Unknown sampling_strategy {strategy!r}: use all, first:N, end:N or random:N.")
    if name == "all":
        return records
    count = sample_size(amount, len(records), strategy)
    if name == "first":
        return records[:count]
    if name == "end":
        return records[len(records) - count :]
    return rng.sample(records, count)


def sample_size(amount: str, available: int, strategy: str) -> int:
    """How many records `N` (a count, or a percentage of `available` rounded up) asks for, at most `available`."""
    percent = amount.endswith("%")
    number = amount[:-1] if percent else amount
    if not number.isdigit():
        raise ValueError(f"sampling_strategy {strategy!r} needs a whole number or percentage after ':'.")
    count = math.ceil(int(number) * available / 100) if percent else int(number)
    return min(count, available)


def parse_example(
    record: Mapping, video_folder: str | os.PathLike | None = None, video_token: str = "<video>"
) -> TrainingExample:
    """
    A record in the original's format (`conversations`) or as chat `messages`, as a `TrainingExample` whose video
    slot is `video_token` (the processor's) and whose video paths are taken relative to `video_folder`.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"An example must be a mapping, got {type(record).__name__}.")
    if "conversations" in record:
        return example_from_llava(record, video_folder, video_token)
    if "messages" in record:
        return example_from_messages(record, video_folder, video_token)
    raise ValueError(f"An example needs `conversations` or `messages`; this one has {sorted(record)}.")


def example_from_llava(
    record: Mapping, video_folder: str | os.PathLike | None = None, video_token: str = "<video>"
) -> TrainingExample:
    """
    A record in the original's format: `video`, LLaVA `conversations` (`from` human or gpt, `value`), optional
    `query`. As the original does, a first turn that is not the human's is dropped, and the `<image>` slot is moved
    to the start of its turn, on a line of its own.
    """
    turns = record["conversations"]
    if not isinstance(turns, list) or not all(isinstance(turn, Mapping) for turn in turns):
        raise ValueError("`conversations` must be a list of {'from': ..., 'value': ...} turns.")
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]
    messages = []
    for position, turn in enumerate(turns):
        role, value = LLAVA_ROLES.get(turn.get("from")), turn.get("value")
        if role is None or not isinstance(value, str):
            raise ValueError(
                f"Turn {position} of `conversations` must have `from` 'human' or 'gpt' and a text `value`, got "
                f"{dict(turn)!r:.200}."
            )
        if IMAGE_TOKEN in value and not value.startswith(IMAGE_TOKEN):
            value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()
        messages.append({"role": role, "content": value.replace(IMAGE_TOKEN, video_token)})
    check_video_slot([message["content"].count(video_token) for message in messages], messages, IMAGE_TOKEN)
    return TrainingExample(messages, video_paths(record.get("video"), video_folder), read_query(record))


def example_from_messages(
    record: Mapping, video_folder: str | os.PathLike | None = None, video_token: str = "<video>"
) -> TrainingExample:
    """
    A record of chat `messages` (`role` system, user or assistant; `content` a string or a list of `{"type":
    "text", "text": ...}` and `{"type": "video", "video": PATH}` items), optional `query`. The video item may leave
    its path to the record's `video` field; a string content may hold the video slot as `video_token` instead.
    """
    messages = record["messages"]
    if not isinstance(messages, list) or not all(isinstance(message, Mapping) for message in messages):
        raise ValueError("`messages` must be a list of {'role': ..., 'content': ...} messages.")
    slots, video = [], record.get("video")
    for position, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") not in CHAT_ROLES or not isinstance(content, (str, list)):
            raise ValueError(
                f"Message {position} must have `role` system, user or assistant and a string or list `content`, "
                f"got {dict(message)!r:.200}."
            )
        video_items = [item for item in content_items(content) if item.get("type") == "video"]
        texts = [item.get("text") or "" for item in content_items(content) if item.get("type") == "text"]
        slots.append(len(video_items) + sum(text.count(video_token) for text in texts))
        for item in video_items:
            video = video_item_path(item) or video
    check_video_slot(slots, messages, "video")
    return TrainingExample(list(messages), video_paths(video, video_folder), read_query(record))


def content_items(content) -> list[Mapping]:
    """A message's content as a list of typed items (a string is one text item); anything else gives none."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [item for item in content if isinstance(item, Mapping)] if isinstance(content, list) else []


def video_item_path(item: Mapping) -> str | os.PathLike | None:
    """
    The path of a `{"type": "video"}` content item, under `video` or `path` (a datasets table fills the key it
    lacks with None), or None.
    """
    return item.get("video") or item.get("path")


def named_video(record: Mapping) -> str:
    """The video that a record names, for messages about it: its `video` field, or its first video item's path."""
    if not isinstance(record, Mapping):
        return "none"
    if "video" in record:
        return str(record["video"])
    for message in record.get("messages") or []:
        for item in content_items(message.get("content") if isinstance(message, Mapping) else None):
            if item.get("type") == "video":
                return str(video_item_path(item))
    return "none"


def check_video_slot(slots_per_message: Sequence[int], messages: Sequence[Mapping], slot_name: str) -> None:
    """Raises `ValueError` unless the messages hold exactly one video slot, in a user turn, and an answer."""
    total = sum(slots_per_message)
    if total != 1:
        raise ValueError(
            f"The conversation must hold exactly one {slot_name} slot (one video per example), found {total}."
        )
    holder = messages[[bool(count) for count in slots_per_message].index(True)]
    if holder["role"] != "user":
        raise ValueError(f"The {slot_name} slot must be in a user (human) turn, not a {holder['role']} turn.")
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError("The conversation has no assistant (gpt) turn to learn from.")


def video_paths(video, video_folder: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The example's video files or frame folders (one, or a list to concatenate), relative to `video_folder`."""
    videos = video if isinstance(video, list) else [video]
    if not videos or not all(isinstance(item, (str, os.PathLike)) and str(item) for item in videos):
        raise ValueError(f"The example's video must be a path or a non-empty list of paths, got {video!r}.")
    folder = Path(video_folder) if video_folder is not None else Path()
    return tuple(folder / item for item in videos)


def read_query(record: Mapping) -> str | None:
    """The record's `query` (the frame scorer's question), or `None` when it has none."""
    query = record.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ValueError(f"`query` must be a non-empty question, got {query!r}.")
    return query
