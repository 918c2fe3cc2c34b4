"""Adversarial attacks on face classifiers and on the FR system's deep features."""
