"""
The converter's command-line options, shared by `python -m vilamp.conversion.convert_vilamp_to_hf` and `vilamp
convert`. Kept apart from the converter so that building the `vilamp` command's parser imports nothing heavy.
"""

import argparse


DTYPE_NAMES = ("bfloat16", "float16", "float32")
# Verification reloads and runs the converted model; above this size it is opt-in.
VERIFY_BY_DEFAULT_MAX_PARAMETERS = 1_000_000_000


def add_conversion_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The converter's options, shared by this module's command line and `vilamp convert`."""
    parser.add_argument("--checkpoint", required=True, help="original checkpoint: a local directory or a Hub id")
    parser.add_argument("--output", required=True, help="directory to write the converted repository into")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output when it is not empty, deleting what it holds"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the result to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="bfloat16", help="weight dtype (default bfloat16)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest weight file, e.g. 5GB or 500MB (default 5GB)")
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reload the result with the Auto classes and compare with the source "
        f"(default: on up to {VERIFY_BY_DEFAULT_MAX_PARAMETERS / 1e9:.0f}B parameters)",
    )
    parser.add_argument("--source-repo-id", help="Hub id of the original, for the model card's base_model")
    parser.add_argument("--license", dest="license_id", help="SPDX-style license id for the model card metadata")
    return parser
