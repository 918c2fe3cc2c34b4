"""Adversarial detection from feature-distance trajectories (MLP and LSTM detectors)."""
