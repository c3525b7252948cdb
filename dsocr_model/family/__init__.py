"""Torch-free facts about each architecture: specs, tile geometry and the registry."""
