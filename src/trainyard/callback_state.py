"""State of trainyard's ExportableState callbacks, carried in each checkpoint's trainer_state.json.

The Trainer saves every ExportableState callback's `state()` under
`stateful_callbacks[<class name>]` at each checkpoint and loads it back on resume (without
handing it to the callback: `restore_callback_states_from_checkpoint` stays off). The
callbacks read it themselves in on_train_begin, through these two functions.
"""

from __future__ import annotations

from typing import Any


def saved_attributes(callback, state) -> dict[str, Any]:
    """What the checkpoint being resumed saved for `callback` ({} on a fresh run, or from a
    checkpoint written before the callback existed)."""
    saved = state.stateful_callbacks.get(type(callback).__name__) if state.global_step else None
    attributes = saved.get("attributes") if isinstance(saved, dict) else None
    return attributes if isinstance(attributes, dict) else {}


def register(callback, state) -> None:
    """Put the callback's current state in the trainer state now: the Trainer's checkpoint
    save looks each ExportableState callback's entry up and fails where it is missing (a
    run resumed from a checkpoint written before the callback existed)."""
    state.stateful_callbacks[type(callback).__name__] = callback.state()
