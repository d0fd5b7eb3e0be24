"""
Language-modelling targets for a tokenised Qwen chat (`<|im_start|>{role}\\n{content}<|im_end|>\\n` turns).

`"released"` masking is the released recipe's (`preprocess_qwen`, docs/architecture.md, "Training recipe"), which the
checkpoint was fine-tuned with: every token of each assistant turn, its `<|im_start|>assistant\\n` header and trailing
newline included, and also every `<|im_start|>`, `<|im_end|>` and lone-newline token anywhere in the sequence (the
system and user turns included). `"assistant"` masking is the usual one: the assistant's words and the `<|im_end|>`
that closes them, nothing else. Either way video placeholders are never targets.

The labels are read off the ids of the whole conversation, so they fit whatever the processor tokenised. Turns are
delimited by their `<|im_start|>` tokens: as every turn boundary is a special token, tokenising the whole
conversation gives the same ids as the original's turn-by-turn tokenisation.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


IGNORE_INDEX = -100  # the label that the loss skips
LABEL_MASKINGS = ("released", "assistant")
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class ChatTokenIds:
    """The token ids that delimit a Qwen chat, and the lone newline that the released masking also trains on."""

    turn_start: int
    turn_end: int
    newline: int
    assistant_header: tuple[int, ...]  # `<|im_start|>assistant`, before the newline that ends the header


def chat_token_ids(tokenizer: PreTrainedTokenizerBase) -> ChatTokenIds:
    """
    Reads the chat's delimiter ids from `tokenizer` (in Qwen2: 151644, 151645, and 198 for the newline); raises
    `ValueError` when it lacks them.
    """
    turn_start, turn_end = tokenizer.convert_tokens_to_ids([TURN_START, TURN_END])
    for token, token_id in ((TURN_START, turn_start), (TURN_END, turn_end)):
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {token} token: labels need a Qwen-style chat tokenizer.")
    newline = tokenizer.encode("\n", add_special_tokens=False)
    if len(newline) != 1:
        raise ValueError(f"The tokenizer splits a lone newline into {len(newline)} tokens; one was expected.")
    header = tuple(tokenizer.encode(TURN_START + "assistant", add_special_tokens=False))
    return ChatTokenIds(turn_start, turn_end, newline[0], header)


def turn_spans(input_ids: Sequence[int], turn_start_id: int) -> list[tuple[int, int]]:
    """`(start, stop)` of every turn: from each `<|im_start|>` up to the next one (or the end), stop excluded."""
    starts = [position for position, token in enumerate(input_ids) if token == turn_start_id]
    return list(zip(starts, [*starts[1:], len(input_ids)], strict=True))


def assistant_content_start(
    input_ids: Sequence[int], start: int, stop: int, chat_ids: ChatTokenIds, tokenizer: PreTrainedTokenizerBase
) -> int | None:
    """
    Where the words of the turn at `[start, stop)` begin when it is an assistant turn, else `None`. The header's
    newline may be merged with newlines that open the answer into one token (Qwen2 has `\\n\\n`); that token then
    counts as part of the answer.
    """
    header_end = start + len(chat_ids.assistant_header)
    if header_end >= stop or tuple(input_ids[start:header_end]) != chat_ids.assistant_header:
        return None
    following = input_ids[header_end]
    if following == chat_ids.newline:
        return header_end + 1
    return header_end if tokenizer.decode([following]).startswith("\n") else None


def check_label_masking(label_masking: str) -> None:
    """Raises `ValueError` unless `label_masking` is one of `LABEL_MASKINGS`."""
    if label_masking not in LABEL_MASKINGS:
        raise ValueError(f"Unknown label_masking {label_masking!r}: choose one of {', '.join(LABEL_MASKINGS)}.")


def make_labels(
    input_ids: torch.Tensor | Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    video_token_id: int | None = None,
    label_masking: str = "released",
) -> torch.LongTensor:
    """
    Targets for one tokenised chat: `input_ids` where the tokens are learned, `IGNORE_INDEX` elsewhere.

    Args:
        input_ids: the ids of one whole conversation (1-D).
        tokenizer: the tokenizer that made them (Qwen chat tokens).
        video_token_id: the video placeholder's id, never a target.
        label_masking: `"released"` (the released recipe, see the module's docstring) or `"assistant"` (the
            assistant's words and closing `<|im_end|>` only).
    """
    check_label_masking(label_masking)
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.ndim != 1:
        raise ValueError(f"`input_ids` must be one conversation (1-D), got shape {tuple(ids.shape)}.")
    chat_ids, as_list = chat_token_ids(tokenizer), ids.tolist()
    targets = torch.zeros_like(ids, dtype=torch.bool)
    for start, stop in turn_spans(as_list, chat_ids.turn_start):
        content_start = assistant_content_start(as_list, start, stop, chat_ids, tokenizer)
        if content_start is None:
            continue
        if label_masking == "released":
            targets[start:stop] = True
        else:
            ends = [position for position in range(content_start, stop) if as_list[position] == chat_ids.turn_end]
            targets[content_start : ends[-1] + 1 if ends else stop] = True
    if label_masking == "released":
        targets |= torch.isin(ids, torch.tensor([chat_ids.turn_start, chat_ids.turn_end, chat_ids.newline]))
    if video_token_id is not None:
        targets &= ids != video_token_id
    return torch.where(targets, ids, torch.full_like(ids, IGNORE_INDEX))
