"""Compute backends behind one contract: forward(token_ids, state) -> (logits, new_state).

Everything above this package (sampler, generator, CLI) works through `Backend` and never
touches torch or onnxruntime directly. `select.py` chooses one at run time.
"""

from ai_writer.backends.base import Backend

__all__ = ["Backend"]
