"""The model files: torch modules, each with its config (a spec ``Section``: the job
spec's ``model:`` section is that config plus the family tag) and its ``sample``."""

from typing import Literal

ImageSize = Literal[8, 16, 32, 64]
"""image sides the convolutional image models build (a 4x4 base, doubled per stage)"""
