"""
A directory that `save_pretrained` wrote, loaded through remote code in a fresh Python where this project cannot be
imported, as a Hub user loads it: the processor's outputs and the model's logits equal this process's, and
transformers' image-text-to-text pipeline answers a chat message that holds a video as `generate` does. One fresh
process checks all of it (each spends about 10 s importing torch and transformers). Converted checkpoints against
the released model's outputs, the same way: tests/test_conversion.py.
"""

import json
import textwrap

import torch

from conftest import CLIP_PATH, run_without_project
from vilamp.tiny import tiny_model_and_processor


MESSAGES = [
    {
        "role": "user",
        "content": [{"type": "video", "path": str(CLIP_PATH)}, {"type": "text", "text": "What is the rabbit doing?"}],
    }
]


def test_a_saved_model_answers_through_remote_code_in_a_fresh_process(tmp_path):
    model, processor = tiny_model_and_processor(seed=3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    inputs = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save({"messages": MESSAGES, "inputs": dict(inputs), "logits": logits}, tmp_path / "expected.pt")
    script = f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
        directory = {str(tmp_path / "model")!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        messages = expected["messages"]

        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        with torch.no_grad():
            logits = model(**inputs).logits
        output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        direct = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

        pipe = pipeline("image-text-to-text", model=directory, trust_remote_code=True)
        answer = pipe(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)
        print(json.dumps({{
            "modules": [type(processor).__module__, type(model).__module__, type(pipe.model).__module__],
            "input_names": sorted(inputs.keys()),
            "inputs_that_differ": [name for name, value in expected["inputs"].items()
                                   if not (torch.equal(inputs[name], value) if torch.is_tensor(value)
                                           else inputs[name] == value)],
            "logits": (logits - expected["logits"]).abs().max().item(),
            "direct": direct,
            "pipeline": answer[0]["generated_text"],
        }}))
    """
    result = run_without_project(textwrap.dedent(script), tmp_path)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in measured["modules"]), measured["modules"]
    assert measured["input_names"] == sorted(inputs.keys())
    assert measured["inputs_that_differ"] == []
    assert measured["logits"] <= 1e-5
    assert measured["pipeline"] == measured["direct"] and len(measured["direct"]) > 0
