"""
Directories loaded through remote code in a fresh Python where this project cannot be imported, as a Hub user loads
them, all in one process (each fresh process spends about 10 s importing torch and transformers):

- one that `save_pretrained` wrote: the processor's outputs and the model's logits equal this process's, and
  transformers' image-text-to-text pipeline answers a chat message that holds a video as `generate` does;
- every parity fixture converted from the released layout: its frame scorer, keyframes, logits and greedy tokens
  reproduce what the released model recorded.
"""

import json
import textwrap

import pytest
import torch

from conftest import CLIP_PATH, FIXTURE_CASES, load_fixture, run_without_project
from vilamp.conversion.convert_vilamp_to_hf import convert_checkpoint
from vilamp.conversion.verify_conversion import expand_image_index
from vilamp.tiny import tiny_model_and_processor


MESSAGES = [
    {
        "role": "user",
        "content": [{"type": "video", "path": str(CLIP_PATH)}, {"type": "text", "text": "What is the rabbit doing?"}],
    }
]

# Loads the saved model (DIRECTORY) as a Hub user would and prints what the test compares with EXPECTED's, as one
# JSON line.
SAVED_MODEL_SCRIPT = """
    import json, torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
    expected = torch.load(EXPECTED)
    messages = expected["messages"]

    processor = AutoProcessor.from_pretrained(DIRECTORY, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(DIRECTORY, trust_remote_code=True).eval()
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    direct = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    pipe = pipeline("image-text-to-text", model=DIRECTORY, trust_remote_code=True)
    answer = pipe(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)
    print(json.dumps({
        "modules": [type(processor).__module__, type(model).__module__, type(pipe.model).__module__],
        "input_names": sorted(inputs.keys()),
        "inputs_that_differ": [name for name, value in expected["inputs"].items()
                               if not (torch.equal(inputs[name], value) if torch.is_tensor(value)
                                       else inputs[name] == value)],
        "logits": (logits - expected["logits"]).abs().max().item(),
        "direct": direct,
        "pipeline": answer[0]["generated_text"],
    }))
"""

# Each converted case: the shipped scorer and keyframe selection on the recorded CLIP inputs, then the model on the
# recorded SigLIP frames; differences from the released model's outputs, one JSON line per case.
CONVERTED_SCRIPT = """
    import importlib, json, torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
    for directory, io_file, outputs_file in CASES:
        io = torch.load(io_file)
        outputs = load_file(outputs_file)
        model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        base = AutoModel.from_pretrained(directory, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        assert torch.equal(base.image_newline, model.model.image_newline)

        scorer = processor.frame_scorer
        image_embeds = scorer.embed_pixels(io["clip_pixel_values"])
        text_embeds = scorer.embed_queries([io["query"]])
        keyframes = importlib.import_module(type(processor).__module__.rsplit(".", 1)[0] + ".keyframes")
        mask = keyframes.select_keyframes(image_embeds, text_embeds, processor.num_keyframes,
                                          processor.keyframe_similarity_threshold,
                                          processor.keyframe_relevance_threshold)
        inputs = dict(input_ids=io["input_ids"], pixel_values_videos=io["siglip_pixel_values"],
                      keyframe_mask=mask, query_embeds=outputs["clip_text_embeds"])
        with torch.no_grad():
            logits = model(**inputs).logits
            generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        print(json.dumps({
            "image": (image_embeds - outputs["clip_image_embeds"]).abs().max().item(),
            "text": (text_embeds - outputs["clip_text_embeds"]).abs().max().item(),
            "mask": mask.long().tolist(),
            "logits": (logits - outputs["logits"]).abs().max().item(),
            "tokens": generated[:, inputs["input_ids"].shape[1]:].tolist(),
        }))
"""


def save_tiny_model(folder) -> dict:
    """A tiny model and processor saved in `folder`/model, and this process's inputs and logits for MESSAGES."""
    model, processor = tiny_model_and_processor(seed=3)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    inputs = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = {"messages": MESSAGES, "inputs": dict(inputs), "logits": logits}
    torch.save(expected, folder / "expected.pt")
    return expected


def convert_fixture(case: str, folder) -> tuple[str, str, str]:
    """`case` converted into `folder`, and its model inputs saved beside it: (directory, inputs, recorded outputs)."""
    fixture = load_fixture(case)
    output = folder / case
    convert_checkpoint(fixture["dir"], output, dtype="float32", log=lambda _message: None)
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    mask = outputs["keyframe_mask"].bool()
    config = json.loads((output / "config.json").read_text())
    num_tokens = 196 * int(mask.sum()) + int((~mask).sum()) + 1
    io = {
        "input_ids": expand_image_index(inputs["input_ids_with_image_index"], num_tokens, config["video_token_id"]),
        "siglip_pixel_values": inputs["siglip_pixel_values"],
        "clip_pixel_values": inputs["clip_pixel_values"],
        "query": fixture["case"]["query"],
    }
    torch.save(io, folder / f"{case}.pt")
    return str(output), str(folder / f"{case}.pt"), str(fixture["dir"] / "outputs.safetensors")


@pytest.fixture(scope="module")
def remote_code_run(tmp_path_factory) -> dict:
    """This process's expectations, and what the fresh process measured: `saved` and one record per converted case."""
    folder = tmp_path_factory.mktemp("remote-code")
    expected = save_tiny_model(folder)
    cases = [convert_fixture(case, folder) for case in FIXTURE_CASES]
    paths = f"EXPECTED = {str(folder / 'expected.pt')!r}\nDIRECTORY = {str(folder / 'model')!r}\nCASES = {cases!r}\n"
    script = paths + textwrap.dedent(SAVED_MODEL_SCRIPT) + textwrap.dedent(CONVERTED_SCRIPT)
    result = run_without_project(script, folder)
    assert result.returncode == 0, result.stderr
    saved, *converted = (json.loads(line) for line in result.stdout.strip().splitlines()[-1 - len(FIXTURE_CASES) :])
    return {"expected": expected, "saved": saved, "converted": dict(zip(FIXTURE_CASES, converted, strict=True))}


def test_a_saved_model_answers_through_remote_code_as_in_this_process(remote_code_run):
    expected, measured = remote_code_run["expected"], remote_code_run["saved"]
    assert all(module.startswith("transformers_modules.") for module in measured["modules"]), measured["modules"]
    assert measured["input_names"] == sorted(expected["inputs"])
    assert measured["inputs_that_differ"] == []
    assert measured["logits"] <= 1e-5
    assert measured["pipeline"] == measured["direct"] and len(measured["direct"]) > 0


@pytest.mark.parametrize("case", FIXTURE_CASES)
def test_a_converted_checkpoint_reproduces_the_released_outputs_through_remote_code(remote_code_run, case):
    measured, outputs = remote_code_run["converted"][case], load_fixture(case)["outputs"]
    assert measured["image"] <= 1e-5 and measured["text"] <= 1e-5
    assert measured["mask"] == outputs["keyframe_mask"].tolist()
    assert measured["logits"] <= 1e-5
    assert measured["tokens"] == outputs["generated_ids"].tolist()
