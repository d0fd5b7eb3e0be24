"""
`python -m vilamp.demo [VIDEO] [QUESTION]`: answers a question about a video with the embedded default (a tiny
random-weight ViLAMP; the bundled clip when VIDEO is omitted) and shows what ViLAMP did: the keyframes it kept, the
frames it merged, and the tokens that saved.
"""

import argparse

import torch

from .tiny import BUNDLED_CLIP, tiny_model_and_processor


def format_timestamp(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(BUNDLED_CLIP), help="video file (default: bundled clip)")
    parser.add_argument("question", nargs="?", default="What happens in this video?")
    args = parser.parse_args(argv)

    model, processor = tiny_model_and_processor()
    messages = [
        {"role": "user", "content": [{"type": "video", "path": args.video}, {"type": "text", "text": args.question}]}
    ]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    num_frames = int(inputs["video_frame_counts"][0])
    keyframes = inputs["keyframe_indices"].tolist()
    visual_tokens = processor.num_visual_tokens(num_frames, len(keyframes))
    print("NOTE: embedded default = tiny random-weight model; the answer below is noise.")
    print(f"answer: {answer!r}")
    print(f"frames sampled: {num_frames} (about 1 per second)")
    for index in keyframes:
        timestamp = float(inputs["frame_timestamps"][index])
        print(f"keyframe {index:4d} at {format_timestamp(timestamp)}")
    uniform = processor.tokens_per_keyframe * num_frames + 1
    print(f"visual tokens: {visual_tokens} (uniform 196 per frame would be {uniform})")


if __name__ == "__main__":
    main()
