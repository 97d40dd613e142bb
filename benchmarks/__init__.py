"""Benchmarks of scoresde against exact solutions and against diffusers and k-diffusion.

Run each script as a module from the repository root, e.g. ``python -m benchmarks.exact_error``;
see ``benchmarks/README.md``.
"""
