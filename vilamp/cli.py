"""
The `vilamp` command.

    vilamp ask [VIDEO] [QUESTION] [--model PATH_OR_HUB_ID] [--plot keyframes.png] [--json] ...
    vilamp convert --checkpoint SRC --output DIR [...]
    vilamp train --data FILE --output DIR [--model PATH_OR_HUB_ID] [--video-folder DIR] [--parts ...] [...]

`ask` answers a question about a video and shows what ViLAMP did with it: the keyframes it kept (with timestamps),
the frames it sampled, and the visual tokens spent against uniform encoding. Without `--model` it runs on the
embedded default, a tiny random-weight model built on the spot (its answers are noise), and the bundled clip.
`train` fine-tunes with the released recipe's settings (docs/training.md); without `--model`, the embedded default.
"""

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from .conversion.arguments import DTYPE_NAMES, add_conversion_arguments
from .loading import (
    ModelLoadError,
    check_model_source,
    first_line,
    load_model_and_processor,
    resolve_device,
)


# Only the standard library and this package's light modules are imported up here: `vilamp --help` and a mistyped
# argument are answered at once. torch, transformers and the model load only once the arguments are checked.
DEFAULT_QUESTION = "What happens in this video?"
DTYPES = ("auto", *DTYPE_NAMES)
EMBEDDED_DEFAULT_NOTE = "NOTE: embedded default = tiny random-weight model; the answer below is noise."
EMBEDDED_TRAINING_NOTE = "NOTE: no --model: training the embedded default, a tiny random-weight model."


class CliError(Exception):
    """A problem the user can fix (a missing file, an unreadable video, an unknown model): one line, exit code 2."""


def check_video_file(video: str) -> None:
    """Fails in one line unless `video` is an existing file, or an http(s) URL (downloaded by the processor)."""
    if video.startswith(("http://", "https://")):
        return
    path = Path(video)
    if not path.exists():
        raise CliError(f"no such video file: {video}")
    if not path.is_file():
        raise CliError(f"not a video file: {video}")


def check_question(question: str) -> None:
    if not question.strip():
        raise CliError("the question is empty: ask something about the video, or leave QUESTION out for the default.")


def check_plot_path(plot: str) -> None:
    """Fails before any loading when the picture could not be written at the end."""
    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise CliError(f"--plot writes a PNG; give a path ending in .png, not {plot!r}.")
    if not path.parent.is_dir():
        raise CliError(f"--plot {plot}: no such directory {path.parent}")


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """
    Sends what C libraries write straight to file descriptor 2 (a video decoder's log lines about a damaged file) to
    /dev/null, while `sys.stderr` (progress bars, warnings) keeps writing to the real stderr through a duplicate of
    that descriptor. Python loggers that hold the previous `sys.stderr` are silenced too, until the block ends.
    """
    if not enabled:
        yield
        return
    python_stderr = sys.stderr
    python_stderr.flush()
    real_stderr = open(os.dup(2), "w", encoding=python_stderr.encoding, errors="backslashreplace")
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    sys.stderr = real_stderr
    try:
        yield
    finally:
        real_stderr.flush()
        os.dup2(real_stderr.fileno(), 2)
        real_stderr.close()
        sys.stderr = python_stderr


@contextlib.contextmanager
def encoding_progress(model, frames_encoded: int, enabled: bool) -> Iterator[None]:
    """A progress bar over the frames that pass through the vision tower, fed by a hook on it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=frames_encoded, desc="encoding frames", unit="frame", disable=not enabled)

    def count_frames(_module, args) -> None:
        # Returns None on purpose: whatever a forward pre-hook returns replaces the module's inputs (and
        # `bar.update` returns True whenever the bar redraws).
        bar.update(args[0].shape[0])

    handle = model.get_submodule("model.vision_tower").register_forward_pre_hook(count_frames)
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
    show_decoder_logs: bool = False,
):
    """
    Runs one question through processor and model; returns the answer text and the processor's output. The video
    decoder's own log lines reach stderr only with `show_decoder_logs`; otherwise one error line names a bad file.
    """
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    # Options left out keep the processor's own settings (for max_frames, None would mean "no cap").
    options = {"max_frames": max_frames, "num_keyframes": num_keyframes}
    with native_stderr_silenced(enabled=not show_decoder_logs):
        try:
            inputs = processor(
                text=prompt,
                videos=video,
                show_progress=show_progress,
                return_metadata=True,
                **{name: value for name, value in options.items() if value is not None},
            )
        except (OSError, ValueError) as error:  # the question was checked: what fails here is reading the video
            message = first_line(error)
            raise CliError(message if video in message else f"cannot decode video {video}: {message}") from error
    # What the tower encodes: every sampled frame, and first the frames that others are compared against.
    frames_encoded = sum(model.model.vision_chunk_sizes(inputs["keyframe_mask"], inputs["video_frame_counts"]))
    import torch

    model_inputs = {name: value for name, value in inputs.to(model.device).items() if name != "video_metadata"}
    with torch.no_grad(), encoding_progress(model, frames_encoded, enabled=show_progress):
        output = model.generate(**model_inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.strip(), inputs


def summarize(processor, inputs, answer: str, video: str, question: str, model_id: str | None) -> dict:
    """The `--json` record: answer, keyframes with timestamps, frames sampled, and the token budget."""
    from .processing.keyframe_plot import format_timestamp

    num_frames = int(inputs["video_frame_counts"][0])
    keyframes = inputs["keyframe_mask"].nonzero()[:, 0].tolist()
    timestamps = inputs["video_metadata"][0].timestamps
    return {
        "answer": answer,
        "model": model_id,
        "embedded_default": model_id is None,
        "video": video,
        "question": question,
        "frames_sampled": num_frames,
        # The mean spacing of the sampled frames: 1 s at the default 1 fps, more where max_frames thinned them.
        "seconds_between_frames": (
            round((timestamps[num_frames - 1] - timestamps[0]) / (num_frames - 1), 3) if num_frames > 1 else None
        ),
        "keyframes": [
            {"frame": index, "seconds": round(timestamps[index], 3), "timestamp": format_timestamp(timestamps[index])}
            for index in keyframes
        ],
        "visual_tokens": processor.num_visual_tokens(num_frames, len(keyframes)),
        # LLaVA-OneVision-style uniform encoding: every frame a keyframe.
        "uniform_tokens": processor.num_visual_tokens(num_frames, num_frames),
    }


def sampling_rate_note(seconds_between_frames: float | None) -> str:
    """The note after the frame count: about 1 per second by default, the mean spacing where `--max-frames` thinned."""
    if seconds_between_frames is None:
        return ""
    if round(seconds_between_frames, 1) == 1.0:
        return " (about 1 per second)"
    return f" (about 1 every {seconds_between_frames:.3g} s)"


def print_summary(record: dict) -> None:
    if record["embedded_default"]:
        print(EMBEDDED_DEFAULT_NOTE)
    print(f"answer: {record['answer']}")
    for number, keyframe in enumerate(record["keyframes"], start=1):
        print(f"keyframe {number:3d}: frame {keyframe['frame']:6d} at {keyframe['timestamp']}")
    print(f"frames sampled: {record['frames_sampled']}{sampling_rate_note(record['seconds_between_frames'])}")
    saving = record["uniform_tokens"] / record["visual_tokens"]
    print(
        f"visual tokens: {record['visual_tokens']:,} (uniform 196 per frame would be {record['uniform_tokens']:,}; "
        f"{saving:.1f}x fewer)"
    )
    if record.get("plot"):
        print(f"keyframe timeline: {record['plot']}")


def run_ask(args: argparse.Namespace) -> int:
    if args.model is None and args.video is None:
        from .tiny import BUNDLED_CLIP

        args.video = str(BUNDLED_CLIP)
    if args.video is None:
        raise CliError("VIDEO is required with --model (the bundled clip is only the embedded default's).")
    check_video_file(args.video)
    check_question(args.question)
    if args.model:
        check_model_source(args.model)
    if args.plot:
        check_plot_path(args.plot)
    show_progress = not (args.quiet or args.json)
    if not show_progress:
        disable_library_progress_bars()
    model, processor = load_model_and_processor(
        args.model, resolve_device(args.device), args.dtype, trust_remote_code=args.trust_remote_code
    )
    answer, inputs = ask(
        model,
        processor,
        args.video,
        args.question,
        args.max_frames,
        args.keyframes,
        args.max_new_tokens,
        show_progress=show_progress,
        show_decoder_logs=args.debug,
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
    from .conversion.convert_vilamp_to_hf import run
    from .conversion.original_checkpoint import ConversionError

    if args.quiet:
        disable_library_progress_bars()  # the conversion's verification loads the model back
    try:
        return run(args, log=(lambda _message: None) if args.quiet else print)
    except ConversionError as error:
        raise CliError(str(error)) from error


def check_data_file(data: str) -> None:
    """Fails in one line unless `data` is a file (what it holds is read once the model is loaded)."""
    if not Path(data).is_file():
        raise CliError(f"no such data file: {data}")


def check_folder(option: str, folder: str) -> None:
    if not Path(folder).is_dir():
        raise CliError(f"{option} {folder}: no such directory")


def run_train(args: argparse.Namespace) -> int:
    check_data_file(args.data)
    if args.video_folder:
        check_folder("--video-folder", args.video_folder)
    if args.model:
        check_model_source(args.model)
    if args.quiet:
        disable_library_progress_bars()
    from .training.recipe import TrainingRecipe, check_output_directory, train

    settings = {
        "video_folder": args.video_folder,
        "parts": args.parts,
        "learning_rate": args.learning_rate,
        "vision_tower_learning_rate": args.vision_tower_learning_rate,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "gradient_accumulation": args.gradient_accumulation,
        "bf16": args.bf16,
        "gradient_checkpointing": args.gradient_checkpointing,
        "label_masking": args.label_masking,
        "max_frames": args.max_frames,
        "skip_broken": args.skip_broken,
        "resume": args.resume,
        "save_steps": args.save_steps,
        "num_workers": args.num_workers,
        "seed": args.seed,
    }
    log = (lambda _message: None) if args.quiet else print
    try:
        # Options left out keep the recipe's defaults.
        recipe = TrainingRecipe(
            args.data, args.output, **{name: value for name, value in settings.items() if value is not None}
        )
        check_output_directory(recipe.output_dir, recipe.resume)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.model is None:
        log(EMBEDDED_TRAINING_NOTE)
    model, processor = load_model_and_processor(args.model, resolve_device("cpu"), "float32")
    try:
        train(model, processor, recipe, log=log, show_progress=not args.quiet)
    except (OSError, ValueError) as error:  # a broken example, a full disk: named in the message
        raise CliError(first_line(error)) from error
    return 0


def disable_library_progress_bars() -> None:
    """Turns off the bars transformers draws itself (loading weights), for `--quiet` and `--json`."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def positive_int(text: str) -> int:
    """argparse type for counts (frames, keyframes, tokens): a whole number of at least 1."""
    if not text.strip().isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """argparse type for counts that may be 0 (DataLoader workers) or any seed: a whole number of at least 0."""
    if not text.strip().isdecimal():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """argparse type for learning rates and epochs: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """`vilamp train`'s options; left out, each keeps the released recipe's value (TrainingRecipe's default)."""
    parser.add_argument("--data", required=True, help="training examples: a .json, .jsonl or .yaml mixture file")
    parser.add_argument("--output", required=True, help="directory for checkpoints and the final model")
    parser.add_argument("--video-folder", help="the directory the examples' video paths are relative to")
    parser.add_argument(
        "--model", help="converted ViLAMP to start from: a directory or Hub id (default: embedded tiny)"
    )
    parser.add_argument(
        "--parts",
        help="what trains, comma-separated: language_model, projector, vision_tower, feature_merger (or the "
        "original's mm_tunable_parts names; default: language_model,projector)",
    )
    parser.add_argument("--learning-rate", type=positive_float, help="default: 1e-5")
    parser.add_argument("--vision-tower-learning-rate", type=positive_float, help="default: 2e-6")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_float, help="passes over the data (default: 1)")
    length.add_argument("--max-steps", type=positive_int, help="optimizer steps to run, instead of --epochs")
    parser.add_argument("--batch-size", type=positive_int, help="examples per device and step (default: 1)")
    parser.add_argument("--gradient-accumulation", type=positive_int, help="micro-batches per step (default: 4)")
    parser.add_argument(
        "--label-masking",
        metavar="MASKING",
        help="the targets: 'released' (the released recipe's, default) or 'assistant' (the answers only)",
    )
    parser.add_argument("--max-frames", type=positive_int, help="cap on frames sampled per video (default: none)")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bfloat16 mixed precision (default: on where a CUDA GPU supports it)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute activations in the backward pass (default: on)",
    )
    parser.add_argument("--skip-broken", action="store_true", help="skip unreadable examples with a warning")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    parser.add_argument("--save-steps", type=positive_int, help="steps between checkpoints (default: 1000)")
    parser.add_argument("--num-workers", type=non_negative_int, help="DataLoader workers decoding videos (default: 0)")
    parser.add_argument("--seed", type=non_negative_int, help="default: 42")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vilamp", description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ask,convert,train}")

    ask_parser = commands.add_parser("ask", parents=[common], help="answer a question about a video")
    ask_parser.add_argument(
        "video", nargs="?", help="video file or http(s) URL (default: the bundled clip, embedded default only)"
    )
    ask_parser.add_argument("question", nargs="?", default=DEFAULT_QUESTION, help=f"default: {DEFAULT_QUESTION!r}")
    ask_parser.add_argument("--model", help="converted ViLAMP: a directory or Hub id (default: embedded tiny model)")
    ask_parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python code that the --model directory or repository ships (only for sources you trust; "
        "this project's own classes need none)",
    )
    ask_parser.add_argument("--max-frames", type=positive_int, help="cap on sampled frames (processor default: 600)")
    ask_parser.add_argument("--keyframes", type=positive_int, help="K, the keyframes kept (processor default: 32)")
    ask_parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ask_parser.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (default: as saved)")
    ask_parser.add_argument("--max-new-tokens", type=positive_int, default=64)
    ask_parser.add_argument("--plot", metavar="PNG", help="write the keyframe timeline picture here")
    ask_parser.add_argument("--json", action="store_true", help="print one JSON record instead of text")
    ask_parser.set_defaults(handler=run_ask)

    convert_parser = commands.add_parser(
        "convert", parents=[common], help="convert the original checkpoint (see docs/conversion.md)"
    )
    add_conversion_arguments(convert_parser).set_defaults(handler=run_convert)

    train_parser = commands.add_parser(
        "train", parents=[common], help="fine-tune with the released recipe (see docs/training.md)"
    )
    add_training_arguments(train_parser)
    train_parser.set_defaults(handler=run_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CliError, ModelLoadError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"vilamp: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
