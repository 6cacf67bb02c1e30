"""Recipe registry. A recipe is one module with

    def train(spec: RunSpec, ctx: RunContext) -> dict[str, float]

that builds one TRL / transformers trainer, trains, evaluates and saves ``final/``; it
returns flat final metrics (names per ARCHITECTURE.md: "train/loss", "eval/<set>/loss", ...).
Modules are imported lazily so validating a matrix never imports torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RECIPES: dict[str, str] = {
    "sft": "trainyard.recipes.sft",
    "dpo": "trainyard.recipes.dpo",
}


def load_recipe(name: str) -> ModuleType:
    return importlib.import_module(RECIPES[name])
