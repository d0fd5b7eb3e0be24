"""
The released evaluation protocol on top of lmms-eval's prompts.

lmms-eval hands a model one finished prompt per question: the task's instruction, the question, the options one per
line and an answer instruction. The released ViLAMP scripts instead embed the bare question with CLIP (keyframe
selection and feature merging) and ask the LLM "{question}. Please choose the right answer from the following
options: {options}." with the options as a Python list. `parse_prompt` recovers question and options from lmms-eval's
prompt, `released_prompt` rebuilds the released wording.
"""

import re
from dataclasses import dataclass


# "A. text" (Video-MME, LongVideoBench, EgoSchema), "(A) text" (MLVU, LVBench), "A) text".
OPTION_LINE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.)])\s*(.*?)\s*$")
# Headings some tasks put between question and options (lmms-eval's qwen3_vl formats): not part of the question.
OPTIONS_HEADING = re.compile(r"^\s*(?:options|choices|answer choices)\s*:?\s*$", re.IGNORECASE)
QUESTION_LABEL = re.compile(r"^\s*question\s*:\s*", re.IGNORECASE)
RELEASED_TEMPLATE = "{question}. Please choose the right answer from the following options: {options}."
# max_new_tokens of the released script for each lmms-eval task it matches (scripts/eval/exp_*.py).
RELEASED_MAX_NEW_TOKENS = {
    "videomme": 1,
    "mlvu_dev": 256,
    "mlvu_test": 256,
    "egoschema": 256,
    "egoschema_subset": 256,
    "longvideobench_val_v": 128,
}


@dataclass(frozen=True)
class ParsedPrompt:
    """A question and its options ("A. text" each; empty for an open-ended question)."""

    question: str
    options: tuple[str, ...] = ()


def _option_block(lines: list[str]) -> tuple[int, list[str]] | None:
    """Start and options ("A. text") of the last run of lines lettered A, B, C, ... in order, if any."""
    best = None
    index = 0
    while index < len(lines):
        options = []
        while index + len(options) < len(lines):
            match = OPTION_LINE.match(lines[index + len(options)])
            letter = match and (match.group(1) or match.group(2))
            if not letter or ord(letter) - ord("A") != len(options) or not match.group(3):
                break
            options.append(f"{letter}. {match.group(3)}")
        if len(options) >= 2:
            best = (index, options)
            index += len(options)
        else:
            index += 1
    return best


def parse_prompt(prompt: str) -> ParsedPrompt:
    """
    The bare question and the options of an lmms-eval prompt.

    With options (at least two lines lettered A, B, ... in order; the last such run counts), the question is the
    nearest non-empty line above them that is not an "Options:" heading, without a "Question:" label: the task
    instructions above it (Video-MME's "Select the best answer ...", subtitles) and the answer instructions below the
    options are dropped. Without options, it is the text up to the last question mark (lmms-eval appends answer
    instructions such as ActivityNet-QA's " Answer the question using a single word or phrase."), or the whole
    prompt when there is none.
    """
    lines = prompt.splitlines()
    block = _option_block(lines)
    if block is not None:
        start, options = block
        for line in reversed(lines[:start]):
            if line.strip() and not OPTIONS_HEADING.match(line):
                return ParsedPrompt(QUESTION_LABEL.sub("", line).strip(), tuple(options))
        raise ValueError(f"No question above the options in prompt {prompt!r:.300}.")
    text = prompt.strip()
    if "?" in text:
        text = text[: text.rindex("?") + 1]
        text = text[text.rfind("\n") + 1 :]
    question = QUESTION_LABEL.sub("", text).strip()
    if not question:
        raise ValueError(f"No question in prompt {prompt!r:.300}.")
    return ParsedPrompt(question)


def released_prompt(parsed: ParsedPrompt) -> str:
    """
    The released scripts' LLM prompt: the question with the options as a Python list; the bare question when
    there are no options (the released MLVU script's open-ended questions).
    """
    if not parsed.options:
        return parsed.question
    return RELEASED_TEMPLATE.format(question=parsed.question, options=list(parsed.options))
