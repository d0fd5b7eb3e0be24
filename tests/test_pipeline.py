"""transformers' image-text-to-text pipeline answers a chat message that holds a video, through remote code."""

import json
import textwrap

from conftest import CLIP_PATH, run_without_project
from vilamp.tiny import tiny_model_and_processor


def test_pipeline_answers_a_video_chat_in_a_fresh_process(tmp_path):
    model, processor = tiny_model_and_processor(seed=3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    script = f"""
        import json, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
        directory = {str(tmp_path / "model")!r}
        messages = [{{"role": "user", "content": [
            {{"type": "video", "path": {str(CLIP_PATH)!r}}},
            {{"type": "text", "text": "What is the rabbit doing?"}},
        ]}}]
        pipe = pipeline("image-text-to-text", model=directory, trust_remote_code=True)
        answer = pipe(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)

        model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        expected = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        print(json.dumps({{"pipeline": answer[0]["generated_text"], "direct": expected,
                           "model_module": type(pipe.model).__module__}}))
    """
    result = run_without_project(textwrap.dedent(script), tmp_path)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["model_module"].startswith("transformers_modules.")
    assert measured["pipeline"] == measured["direct"] and len(measured["direct"]) > 0
