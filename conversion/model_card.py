"""The README.md (Hub model card) that the converter writes beside the converted weights."""

from ..modeling_vilamp import VilampModel
from ..processing import VilampProcessor


ORIGINAL_REPO_ID = "orange-sk/ViLAMP-llava-qwen"
PAPER_URL = "https://arxiv.org/abs/2504.02438"
ORIGINAL_CODE_URL = "https://github.com/steven-ccq/ViLAMP"
CITATION = """@article{cheng2025vilamp,
  title={Scaling Video-Language Models to 10K Frames via Hierarchical Differential Distillation},
  author={Cheng, Chuanqi and Guan, Jian and Wu, Wei and Yan, Rui},
  journal={arXiv preprint arXiv:2504.02438},
  year={2025}
}"""


def _metadata(source_repo_id: str | None, license_id: str | None) -> str:
    lines = ["---"]
    if license_id:
        lines.append(f"license: {license_id}")
    else:
        # The original release names no license; "other" plus a link is the honest Hub metadata for that.
        lines += [
            "license: other",
            "license_name: vilamp-original",
            f"license_link: https://huggingface.co/{ORIGINAL_REPO_ID}",
        ]
    lines += ["library_name: transformers", "pipeline_tag: video-text-to-text"]
    if source_repo_id:
        lines += ["base_model:", f"- {source_repo_id}"]
    lines += ["tags:", "- vilamp", "- long-video", "- video-question-answering", "- custom_code", "---"]
    return "\n".join(lines) + "\n"


def token_arithmetic(processor: VilampProcessor, num_frames: int = 10_000) -> str:
    """One sentence with the visual-token budget of `num_frames` sampled frames against uniform encoding."""
    keyframes, per_keyframe = processor.num_keyframes, processor.tokens_per_keyframe
    vilamp = processor.num_visual_tokens(num_frames, keyframes)
    uniform = processor.num_visual_tokens(num_frames, num_frames)
    return (
        f"{num_frames:,} sampled frames cost {keyframes} x {per_keyframe} (keyframes) + "
        f"{num_frames - keyframes:,} x 1 (merged frames) + 1 (newline) = {vilamp:,} visual tokens, against "
        f"{num_frames:,} x {per_keyframe} + 1 = {uniform:,} when every frame keeps its {per_keyframe} tokens "
        f"({uniform / vilamp:.0f}x fewer)."
    )


def render_model_card(
    model: VilampModel,
    processor: VilampProcessor,
    source_repo_id: str | None = None,
    license_id: str | None = None,
    repo_id: str = "PATH_OR_REPO_ID",
) -> str:
    """
    The model card: metadata, what ViLAMP is, usage (Python and the `vilamp` command), limits, citation. `model` is
    the converted base model (its sizes are quoted; a meta-device instance will do), `processor` its processor (the
    keyframe settings and token arithmetic).
    """
    config, tokens_per_keyframe = model.config, processor.tokens_per_keyframe
    text = config.text_config
    vision = config.vision_config
    source = (
        f"[{source_repo_id}](https://huggingface.co/{source_repo_id})" if source_repo_id else "the original checkpoint"
    )
    license_text = (
        f"Released under `{license_id}`."
        if license_id
        else (
            f"The original release ([{ORIGINAL_REPO_ID}](https://huggingface.co/{ORIGINAL_REPO_ID}), "
            f"[code]({ORIGINAL_CODE_URL})) names no license; its terms apply to these weights. Its components are "
            "Qwen2 (Apache-2.0), SigLIP (Apache-2.0) and OpenAI CLIP (MIT). The code files in this repository are "
            "Apache-2.0."
        )
    )
    return f"""{_metadata(source_repo_id, license_id)}
# ViLAMP for transformers

ViLAMP ([paper]({PAPER_URL}), ICML 2025) is a video language model for long videos: it answers questions about
hour-long footage by keeping full detail only in a few frames that matter to the question. This repository holds the
weights of {source} converted to safetensors, with code that runs them in Hugging Face transformers
(`trust_remote_code=True`).

## How it works

- **Differential keyframe selection** (in the processor): a CLIP model scores every sampled frame (about one per
  second) against the question; up to {processor.num_keyframes} frames are kept that are relevant and not redundant
  with each other (CLIP similarity below {processor.keyframe_similarity_threshold}).
- **Differential feature merging** (in the model): every other frame becomes one token, a softmax-weighted sum of its
  {(vision.image_size // vision.patch_size) ** 2} SigLIP patches that favours patches relevant to the question and
  different from its context keyframe.

{token_arithmetic(processor)}

| part | size |
| --- | --- |
| language model | Qwen2, {text.num_hidden_layers} layers, hidden size {text.hidden_size} |
| vision tower | SigLIP, {vision.num_hidden_layers} layers, {vision.image_size} px, patch {vision.patch_size} |
| frame scorer | CLIP (open_clip layout, `frame_scorer.safetensors`), used by the processor |
| keyframes | {processor.num_keyframes} x {tokens_per_keyframe} tokens; other frames 1 token each |

## Usage

```python
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

repo = "{repo_id}"
device = "cuda" if torch.cuda.is_available() else "cpu"
model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True, dtype="auto").to(device)
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)

question = "What happens at the end?"
messages = [{{"role": "user", "content": [{{"type": "video"}}, {{"type": "text", "text": question}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=prompt, videos="movie.mp4", max_frames=10000).to(device)
output = model.generate(**inputs, max_new_tokens=128)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
```

From a terminal, with this project installed (`pip install` from its repository):

```bash
vilamp ask movie.mp4 "What happens at the end?" --model {repo_id} --max-frames 10000 --plot keyframes.png
```

It prints the answer, the keyframes with their timestamps and the token budget; `--plot` draws the question's
relevance over time with the keyframes marked.

Needs `open_clip_torch` and `av` (PyAV) for the processor (frame scoring and decoding) besides `transformers` and
`torch`.

## Limitations

- The processor samples one frame per second and, by default, at most 600 frames as the released evaluation did; pass
  `max_frames` for longer videos (a longer video is sampled uniformly down to the cap).
- Keyframes are chosen by CLIP similarity to the question: a question that names nothing visible gets keyframes
  spread by the gap-filling rule rather than by relevance.
- Video only: no images, no audio. Answers are in the style of the training data (short answers, multiple choice).
- Converted from the released weights without retraining; the conversion was checked tensor by tensor against the
  source. Benchmarks quoted in the paper were not re-run here.

## License

{license_text}

## Citation

```bibtex
{CITATION}
```
"""
