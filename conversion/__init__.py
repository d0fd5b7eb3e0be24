"""Turning the original ViLAMP checkpoint (LLaVA-NeXT layout) into this project's layout."""
