"""The face-recognition system: similarity, verification (1:1) and identification (1:N)."""
