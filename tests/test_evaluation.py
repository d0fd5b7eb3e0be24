"""
The lmms-eval model `vilamp`: lmms-eval's own CLI runs it on a local multiple-choice task over clips made here, with
the tiny model; its likelihoods; and the released protocol's question extraction on the real prompts of the
benchmarks' lmms-eval tasks.
"""

import glob
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lmms_eval
import pytest
import torch
import yaml

from media import numbered_frames, write_video
from vilamp.evaluation.lmms_eval_task import process_results, write_task
from vilamp.evaluation.prompts import ParsedPrompt, parse_prompt, released_prompt
from vilamp.tiny import tiny_model_and_processor


QUESTIONS = [
    ("What colour is the screen at the start?", ["A. red", "B. green", "C. blue"], "A"),
    ("Which colour comes last?", ["A. purple", "B. teal", "C. orange", "D. grey"], "D"),
    ("Does the colour change?", ["A. yes", "B. no"], "A"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def task_docs(tmp_path_factory) -> list[dict]:
    directory = tmp_path_factory.mktemp("clips")
    docs = []
    for number, (question, options, answer) in enumerate(QUESTIONS):
        # 3 to 5 seconds at 25 fps: 3 to 5 frames at 1 fps.
        clip = write_video(directory / f"clip{number}.mp4", numbered_frames(75 + 25 * number, 48, 64), fps=25)
        docs.append({"video": str(clip), "question": question, "options": options, "answer": answer})
    return docs


def expected_answers(directory: Path, docs: list[dict], max_frames: int, num_keyframes: int = 2) -> list[str]:
    """What the released protocol asks the model, answered by calling processor and model directly."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    answers = []
    for doc in docs:
        text = released_prompt(ParsedPrompt(doc["question"], tuple(doc["options"])))
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(
            text=prompt, videos=doc["video"], query=doc["question"], max_frames=max_frames, num_keyframes=num_keyframes
        )
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        answers.append(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return answers


def run_lmms_eval(tmp_path: Path, tiny_dir: Path, task_docs: list[dict], launcher: list[str], batch_size: int):
    """lmms-eval's CLI on the tiny task, started by `launcher`; (its run, the results, the samples by doc id)."""
    write_task(tmp_path / "task", "vilamp_tiny_mc", task_docs, max_new_tokens=3)
    env = {
        **os.environ,
        # The `vilamp` model comes from this package's installed `lmms_eval.models` entry point (setup.cfg).
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    command = [
        *launcher, "-m", "lmms_eval", "eval", "--model", "vilamp",
        "--model_args", f"pretrained={tiny_dir},max_frames=4,num_keyframes=2,device=cpu",
        "--tasks", "vilamp_tiny_mc", "--include_path", str(tmp_path / "task"), "--batch_size", str(batch_size),
        "--output_path", str(tmp_path / "out"), "--log_samples", "--verbosity", "INFO",
    ]  # fmt: skip
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (results_file,) = glob.glob(str(tmp_path / "out" / "*" / "*_results.json"))
    (samples_file,) = glob.glob(str(tmp_path / "out" / "*" / "*_samples_vilamp_tiny_mc.jsonl"))
    samples = sorted(
        (json.loads(line) for line in Path(samples_file).read_text().splitlines()), key=lambda s: s["doc_id"]
    )
    return run, json.loads(Path(results_file).read_text()), samples


def accuracy_of(docs: list[dict], responses: list[str]) -> float:
    """The task's metric recomputed from the responses with the task's own scoring."""
    scored = zip(docs, responses, strict=True)
    correct = [process_results(doc, [response])["accuracy"]["correct"] for doc, response in scored]
    return 100.0 * sum(correct) / len(correct)


def test_lmms_eval_runs_vilamp_batched_and_data_parallel_on_two_processes(tmp_path, tiny_dir, task_docs):
    # lmms-eval's command line in two processes as torchrun starts them (`accelerate launch --num_processes 2` does
    # the same on GPUs): it gives each rank its share of the questions, and gathers the answers on rank 0. One
    # run rather than one per feature: starting lmms-eval costs more than answering.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run, results, samples = run_lmms_eval(tmp_path, tiny_dir, task_docs, launcher, batch_size=2)
    log = run.stdout + run.stderr
    assert "Running on rank 0" in log and "Running on rank 1" in log, log[-3000:]
    # Every question answered once across the two processes; batched (rank 0 answers 2 in a pass, left-padded)
    # and through lmms-eval, with the answers of one direct call each.
    assert [sample["doc_id"] for sample in samples] == list(range(len(task_docs)))
    responses = [sample["filtered_resps"] for sample in samples]
    assert responses == expected_answers(tiny_dir, task_docs, max_frames=4)
    accuracy = results["results"]["vilamp_tiny_mc"]["accuracy,none"]
    assert accuracy == pytest.approx(accuracy_of(task_docs, responses))
    assert "vilamp_tiny_mc" in run.stdout and "accuracy" in run.stdout


def test_questions_about_one_video_decode_and_encode_it_once(tiny_dir, task_docs, monkeypatch):
    """
    Three questions about each of two videos, asked in an interleaved order: each video is decoded and run through
    the vision tower once, and every answer equals the one a direct call gives for that question alone.
    """
    from vilamp.evaluation.lmms_eval_model import Vilamp

    lm = Vilamp(pretrained=str(tiny_dir), max_frames=4, num_keyframes=2, device="cpu")
    docs = [{**task_docs[video], **question} for question in task_docs_questions() for video in (0, 2)]
    lm.task_dict = {"mc": {"test": docs}}
    decoded, tower_frames = [], []
    process_video = lm.processor.video_processor.process_video

    def counting_decodes(video, *args, **kwargs):
        if isinstance(video, str):  # a path is decoded; a prepared video is handed back as it is
            decoded.append(video)
        return process_video(video, *args, **kwargs)

    monkeypatch.setattr(lm.processor.video_processor, "process_video", counting_decodes)
    lm.model.model.vision_tower.register_forward_pre_hook(lambda _module, args: tower_frames.append(len(args[0])))
    gen_kwargs = {"max_new_tokens": 3, "until": ["\n\n"]}
    requests = [
        request(
            ("\n".join([doc["question"], *doc["options"]]), gen_kwargs, lambda d: [d["video"]], doc_id, "mc", "test")
        )
        for doc_id, doc in enumerate(docs)
    ]
    answers = lm.generate_until(requests)
    assert sorted(decoded) == sorted({doc["video"] for doc in docs})
    # Once each, the videos' sampled frames: 3 s at 1 fps, and 5 s capped at max_frames=4.
    assert sum(tower_frames) == 3 + 4
    expected = expected_answers(tiny_dir, docs, max_frames=4, num_keyframes=2)
    assert answers == expected


def task_docs_questions() -> list[dict]:
    return [{"question": question, "options": options, "answer": answer} for question, options, answer in QUESTIONS]


def test_entry_point_registers_vilamp():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from vilamp.evaluation import lmms_eval_manifest

    registry = ModelRegistryV2()
    registry.register_manifest(lmms_eval_manifest())
    resolved = registry.resolve("vilamp")
    assert (resolved.model_type, resolved.class_path) == ("simple", "vilamp.evaluation.lmms_eval_model.Vilamp")
    model_class = registry.get_model_class("vilamp")
    assert model_class.__name__ == "Vilamp" and model_class.is_simple


def request(args: tuple) -> SimpleNamespace:
    return SimpleNamespace(args=args)


def test_loglikelihood_is_the_next_token_log_probability(tiny_dir, task_docs):
    from vilamp.evaluation.lmms_eval_model import Vilamp

    lm = Vilamp(pretrained=str(tiny_dir), max_frames=4, device="cpu")
    doc = task_docs[0]
    lm.task_dict = {"mc": {"test": [doc]}}
    context = "\n".join([doc["question"], *doc["options"]])
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": context}]}]
    prompt = lm.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = lm.processor(text=prompt, videos=doc["video"], query=doc["question"], max_frames=4)
    with torch.no_grad():
        log_probs = torch.log_softmax(lm.model(**inputs).logits[0, -1].float(), dim=-1)
    # Single letters are single tokens of the tiny byte-level vocabulary, so their text round-trips.
    letters = {letter: lm.processor.tokenizer.convert_tokens_to_ids(letter) for letter in "ABCDEFGH"}
    best = max(letters, key=lambda letter: log_probs[letters[letter]])
    scores = lm.loglikelihood(
        [request((context, letter, lambda d: [d["video"]], 0, "mc", "test")) for letter in letters]
    )
    for token, (score, is_greedy) in zip(letters.values(), scores, strict=True):
        assert score == pytest.approx(float(log_probs[token]), abs=1e-4)
        assert is_greedy == (token == int(log_probs.argmax()))
    assert max(zip(letters, scores, strict=True), key=lambda pair: pair[1][0])[0] == best


def test_a_mistyped_model_directory_fails_at_once():
    from vilamp.evaluation.lmms_eval_model import Vilamp
    from vilamp.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"^no such model directory: \./no-such-run$"):
        Vilamp(pretrained="./no-such-run", device="cpu")


def test_rejects_an_unknown_protocol(tiny_dir):
    from vilamp.evaluation.lmms_eval_model import Vilamp

    with pytest.raises(ValueError, match="'paper'"):
        Vilamp(pretrained=str(tiny_dir), protocol="paper", device="cpu")


class TagIgnoringLoader(yaml.SafeLoader):
    """Reads lmms-eval task YAMLs without resolving their `!function` tags."""


TagIgnoringLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
QUESTION = "What is the man holding when he enters the kitchen?"
OPTIONS = ["a knife", "a cup of tea", "a red book", "nothing"]
LETTERED = tuple(f"{letter}. {text}" for letter, text in zip("ABCD", OPTIONS, strict=True))
PARENTHESIZED = "\n".join(f"({letter}) {text}" for letter, text in zip("ABCD", OPTIONS, strict=True))
# lmms-eval task -> (its utils module, doc_to_text function, YAML with the default prompts, one document).
TASKS = {
    "videomme": ("videomme", "videomme_doc_to_text", "videomme/videomme.yaml", {"options": list(LETTERED)}),
    "videomme_w_subtitle": (
        "videomme", "videomme_doc_to_text_subtitle", "videomme/videomme_w_subtitle.yaml",
        {"options": list(LETTERED), "videoID": "missing"},
    ),
    "mlvu_dev": (
        "mlvu", "mlvu_doc_to_text", "mlvu/mlvu_dev.yaml",
        {"question": QUESTION + "\n" + PARENTHESIZED},
    ),
    "longvideobench_val_v": (
        "longvideobench", "longvideobench_doc_to_text", "longvideobench/longvideobench_val_v.yaml",
        {**{f"option{i}": text for i, text in enumerate(OPTIONS)}, "option4": "N/A"},
    ),
    "egoschema": ("egoschema", "egoschema_doc_to_text", "egoschema/egoschema.yaml", {"option": list(LETTERED)}),
    "lvbench": ("lvbench", "lvbench_doc_to_text", "lvbench/lvbench.yaml", {"options": OPTIONS}),
}  # fmt: skip


def task_prompt(module: str, function: str, yaml_file: str, doc: dict) -> str:
    tasks_dir = Path(lmms_eval.__file__).parent / "tasks"
    config = yaml.load((tasks_dir / yaml_file).read_text(), Loader=TagIgnoringLoader)
    doc_to_text = getattr(importlib.import_module(f"lmms_eval.tasks.{module}.utils"), function)
    return doc_to_text({"question": QUESTION, **doc}, dict(config["lmms_eval_specific_kwargs"]["default"]))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_question_and_options_from_the_real_task_prompts(task, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    prompt = task_prompt(*TASKS[task])
    parsed = parse_prompt(prompt)
    assert parsed == ParsedPrompt(QUESTION, LETTERED), prompt
    assert released_prompt(parsed) == (
        f"{QUESTION}. Please choose the right answer from the following options: "
        "['A. a knife', 'B. a cup of tea', 'C. a red book', 'D. nothing']."
    )


def test_open_ended_question_from_the_activitynetqa_prompt(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    tasks_dir = Path(lmms_eval.__file__).parent / "tasks"
    config = yaml.load((tasks_dir / "activitynetqa/_default_template_yaml").read_text(), Loader=TagIgnoringLoader)
    utils = importlib.import_module("lmms_eval.tasks.activitynetqa.utils")
    doc = {"question": "what is the person in the video doing", "question_id": "v_1", "answer": "dancing"}
    prompt = utils.activitynetqa_doc_to_text(doc, dict(config["lmms_eval_specific_kwargs"]["default"]))
    parsed = parse_prompt(prompt)
    assert parsed == ParsedPrompt("What is the person in the video doing?")
    assert released_prompt(parsed) == "What is the person in the video doing?"


def test_parse_prompt_takes_the_last_lettered_run_and_names_a_bad_prompt():
    prompt = "Subtitles:\nA. not an option list\nWhich one?\nOptions:\nA) first\nB) second\nAnswer:"
    assert parse_prompt(prompt) == ParsedPrompt("Which one?", ("A. first", "B. second"))
    assert parse_prompt("Question: Is it raining") == ParsedPrompt("Is it raining")
    with pytest.raises(ValueError, match="A. one"):
        parse_prompt("A. one\nB. two")
