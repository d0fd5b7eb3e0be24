"""
The `vilamp` command.

    vilamp ask [VIDEO] [QUESTION] [--model PATH_OR_HUB_ID] [--plot keyframes.png] [--json] ...
    vilamp convert --checkpoint SRC --output DIR [...]

`ask` answers a question about a video and shows what ViLAMP did with it: the keyframes it kept (with timestamps),
the frames it sampled, and the visual tokens spent against uniform encoding. Without `--model` it runs on the
embedded default, a tiny random-weight model built on the spot (its answers are noise), and the bundled clip.
"""

import argparse
import contextlib
import json
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from conversion.convert_vilamp_to_hf import DTYPES as WEIGHT_DTYPES
from processing.keyframe_plot import format_timestamp

from .tiny import BUNDLED_CLIP, tiny_model_and_processor


DEFAULT_QUESTION = "What happens in this video?"
DTYPES = {"auto": "auto", **WEIGHT_DTYPES}
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
EMBEDDED_DEFAULT_NOTE = "NOTE: embedded default = tiny random-weight model; the answer below is noise."


class CliError(Exception):
    """A problem the user can fix (a missing file, an unreadable video, an unknown model): one line, exit code 2."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for, but torch sees no CUDA device.")
    return torch.device(device)


def load_model_and_processor(model_id: str | None, device: torch.device, dtype: str):
    """The model and processor at `model_id` (directory or Hub id), or the embedded default when it is None."""
    if model_id is None:
        model, processor = tiny_model_and_processor()
        return model.to(device), processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not Path(model_id).is_dir() and not HUB_ID.fullmatch(model_id):
        raise CliError(f"no such model directory, and not a Hub id: {model_id}")
    try:
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True, dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CliError(f"cannot load model {model_id!r}: {first_line}") from error
    return model.to(device).eval(), processor


def check_video_file(video: str) -> None:
    path = Path(video)
    if not path.exists():
        raise CliError(f"no such video file: {video}")
    if not path.is_file():
        raise CliError(f"not a video file: {video}")


@contextlib.contextmanager
def encoding_progress(model, num_frames: int, enabled: bool) -> Iterator[None]:
    """A progress bar over the frames that pass through the vision tower, fed by a hook on it."""
    bar = tqdm(total=num_frames, desc="encoding frames", unit="frame", disable=not enabled)
    handle = model.get_submodule("model.vision_tower").register_forward_pre_hook(
        lambda _module, args: bar.update(args[0].shape[0])
    )
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def ask(
    model,
    processor,
    video: str,
    question: str,
    max_frames: int | None = None,
    num_keyframes: int | None = None,
    max_new_tokens: int = 64,
    show_progress: bool = True,
):
    """Runs one question through processor and model; returns the answer text and the processor's output."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    try:
        inputs = processor(
            text=prompt,
            videos=video,
            max_frames=max_frames,
            num_keyframes=num_keyframes,
            show_progress=show_progress,
        )
    except (OSError, RuntimeError, ValueError) as error:  # decord reports an undecodable file as a RuntimeError
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CliError(message if video in message else f"cannot read video {video}: {message}") from error
    num_frames = int(inputs["video_frame_counts"].sum())
    with torch.no_grad(), encoding_progress(model, num_frames, enabled=show_progress):
        output = model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.strip(), inputs


def summarize(processor, inputs, answer: str, video: str, question: str, model_id: str | None) -> dict:
    """The `--json` record: answer, keyframes with timestamps, frames sampled, and the token budget."""
    num_frames = int(inputs["video_frame_counts"][0])
    keyframes = inputs["keyframe_indices"].tolist()
    timestamps = inputs["frame_timestamps"].tolist()
    return {
        "answer": answer,
        "model": model_id,
        "embedded_default": model_id is None,
        "video": video,
        "question": question,
        "frames_sampled": num_frames,
        "keyframes": [
            {"frame": index, "seconds": round(timestamps[index], 3), "timestamp": format_timestamp(timestamps[index])}
            for index in keyframes
        ],
        "visual_tokens": processor.num_visual_tokens(num_frames, len(keyframes)),
        # LLaVA-OneVision-style uniform encoding: every frame a keyframe.
        "uniform_tokens": processor.num_visual_tokens(num_frames, num_frames),
    }


def print_summary(record: dict) -> None:
    if record["embedded_default"]:
        print(EMBEDDED_DEFAULT_NOTE)
    print(f"answer: {record['answer']}")
    for number, keyframe in enumerate(record["keyframes"], start=1):
        print(f"keyframe {number:3d}: frame {keyframe['frame']:6d} at {keyframe['timestamp']}")
    print(f"frames sampled: {record['frames_sampled']} (about 1 per second)")
    saving = record["uniform_tokens"] / record["visual_tokens"]
    print(
        f"visual tokens: {record['visual_tokens']:,} (uniform 196 per frame would be {record['uniform_tokens']:,}; "
        f"{saving:.1f}x fewer)"
    )
    if record.get("plot"):
        print(f"keyframe timeline: {record['plot']}")


def run_ask(args: argparse.Namespace) -> int:
    if args.model is None and args.video is None:
        args.video = str(BUNDLED_CLIP)
    if args.video is None:
        raise CliError("VIDEO is required with --model (the bundled clip is only the embedded default's).")
    check_video_file(args.video)
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise CliError(f"--plot writes a PNG; give a path ending in .png, not {args.plot!r}.")
    show_progress = not (args.quiet or args.json)
    if not show_progress:
        from transformers.utils import logging

        logging.disable_progress_bar()
    model, processor = load_model_and_processor(args.model, resolve_device(args.device), args.dtype)
    answer, inputs = ask(
        model,
        processor,
        args.video,
        args.question,
        args.max_frames,
        args.keyframes,
        args.max_new_tokens,
        show_progress,
    )
    record = summarize(processor, inputs, answer, args.video, args.question, args.model)
    if args.plot:
        record["plot"] = str(processor.plot_keyframes(inputs, args.plot, question=args.question))
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print_summary(record)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from conversion.convert_vilamp_to_hf import run

    return run(args, log=(lambda _message: None) if args.quiet else print)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from conversion.convert_vilamp_to_hf import add_conversion_arguments

    parser = argparse.ArgumentParser(
        prog="vilamp", description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ask,convert}")

    ask_parser = commands.add_parser("ask", parents=[common], help="answer a question about a video")
    ask_parser.add_argument("video", nargs="?", help="video file (default: the bundled clip, embedded default only)")
    ask_parser.add_argument("question", nargs="?", default=DEFAULT_QUESTION, help=f"default: {DEFAULT_QUESTION!r}")
    ask_parser.add_argument("--model", help="converted ViLAMP: a directory or Hub id (default: embedded tiny model)")
    ask_parser.add_argument("--max-frames", type=positive_int, help="cap on sampled frames (processor default: 600)")
    ask_parser.add_argument("--keyframes", type=positive_int, help="K, the keyframes kept (processor default: 32)")
    ask_parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ask_parser.add_argument("--dtype", choices=sorted(DTYPES), default="auto", help="model dtype (default: as saved)")
    ask_parser.add_argument("--max-new-tokens", type=positive_int, default=64)
    ask_parser.add_argument("--plot", metavar="PNG", help="write the keyframe timeline picture here")
    ask_parser.add_argument("--json", action="store_true", help="print one JSON record instead of text")
    ask_parser.set_defaults(handler=run_ask)

    convert_parser = commands.add_parser(
        "convert", parents=[common], help="convert the original checkpoint (see docs/conversion.md)"
    )
    add_conversion_arguments(convert_parser).set_defaults(handler=run_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from conversion.original_checkpoint import ConversionError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CliError, ConversionError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"vilamp: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
