"""
ViLAMP for Hugging Face transformers.

- `vilamp.modeling_vilamp`: `VilampConfig` and the model (importing it registers them with the Auto classes);
- `vilamp.processing`: a video from file to model inputs, `VilampProcessor` (registered with `AutoProcessor`);
- `vilamp.conversion`: the converter from the released checkpoint;
- `vilamp.cli`: the `vilamp` command, and `vilamp.tiny` the embedded default model it runs without `--model`.

Importing `vilamp` itself loads nothing heavy, so that the command answers `--help` at once.
"""

from pathlib import Path


# In a source checkout the parts are folders beside this one (the repository's layout); the wheel installs them
# inside it. Either way they are imported as `vilamp.<part>`.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "modeling_vilamp" / "__init__.py").is_file():
    __path__.append(str(_checkout))
