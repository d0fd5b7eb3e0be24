"""
Local multiple-choice tasks in lmms-eval's format, for data made on this machine (Video-NIAH, tests).

`write_task` writes a folder that `lmms-eval --include_path FOLDER --tasks NAME` runs: the questions as JSON lines
(`video`, `question`, `options` ["A. text", ...], `answer` letter, and any other fields), a task YAML, and a
`utils.py` that points lmms-eval at the functions below. The prompt is laid out as lmms-eval's video
multiple-choice tasks lay theirs out (question, options one per line, answer instruction), and answers are read
with lmms-eval's own multiple-choice extractor.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import yaml


POST_PROMPT = "Answer with the option's letter from the given choices directly."
UTILS_SOURCE = (
    "from vilamp.evaluation.lmms_eval_task import aggregate_accuracy, doc_to_text, process_results  # noqa\n"
)
REQUIRED_FIELDS = ("video", "question", "options", "answer")


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The prompt of one question: pre-prompt, question, options one per line, post-prompt."""
    kwargs = lmms_eval_specific_kwargs or {}
    lines = [kwargs.get("pre_prompt", "") + doc["question"], *doc["options"], kwargs.get("post_prompt", POST_PROMPT)]
    return "\n".join(lines)


def process_results(doc: dict, results: Sequence[str]) -> dict:
    """Whether the answer letter read from the response is the document's, with the document's own fields."""
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    letters = [option.split(".", 1)[0].strip() for option in doc["options"]]
    predicted = extract_mcq_answer(results[0], letters)
    record = {key: value for key, value in doc.items() if key not in ("options", "question", "video")}
    return {"accuracy": {**record, "predicted": predicted, "correct": predicted == doc["answer"]}}


def aggregate_accuracy(records: Sequence[dict]) -> float:
    """Share of correct answers, in percent (lmms-eval's video benchmarks report percentages)."""
    if not records:
        raise ValueError("No results to aggregate.")
    return 100.0 * sum(bool(record["correct"]) for record in records) / len(records)


def write_task(directory: str | Path, name: str, docs: Sequence[dict], max_new_tokens: int = 16) -> Path:
    """
    Writes the lmms-eval task `name` over `docs` into `directory` (created if needed) and returns the YAML's path.
    Every doc needs `video` (a file path), `question`, `options` ("A. text", ...) and `answer` (a letter).
    """
    directory = Path(directory)
    for number, doc in enumerate(docs):
        missing = [field for field in REQUIRED_FIELDS if field not in doc]
        if missing:
            raise ValueError(f"Question {number} of task {name!r} lacks {missing}: {doc!r:.200}.")
    if not docs:
        raise ValueError(f"Task {name!r} has no questions.")
    directory.mkdir(parents=True, exist_ok=True)
    data_file = directory / f"{name}.jsonl"
    data_file.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (directory / "utils.py").write_text(UTILS_SOURCE)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_visual": "video",
        "doc_to_text": "!function utils.doc_to_text",
        "doc_to_target": "answer",
        "generation_kwargs": {"max_new_tokens": max_new_tokens, "do_sample": False, "until": ["\n\n"]},
        "process_results": "!function utils.process_results",
        "metric_list": [
            {"metric": "accuracy", "aggregation": "!function utils.aggregate_accuracy", "higher_is_better": True}
        ],
        "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": POST_PROMPT}},
    }
    # lmms-eval reads `!function module.name` as a YAML tag, which PyYAML would quote as a string.
    text = yaml.safe_dump(config, sort_keys=False).replace("'!function ", "!function ")
    text = "\n".join(line[:-1] if "!function " in line and line.endswith("'") else line for line in text.split("\n"))
    yaml_file = directory / f"{name}.yaml"
    yaml_file.write_text(text)
    return yaml_file
