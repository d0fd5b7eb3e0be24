"""The people's side of ViLAMP: the `vilamp` command and the embedded default model it runs without `--model`."""
