"""The experiment configs that ship with frad (also reachable as ``configs/`` in a checkout)."""
