"""The people's side of ViLAMP: an embedded default model for trying things out, and the demo command."""
