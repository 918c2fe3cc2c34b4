"""frad: adversarial attacks on face recognition systems, and their detection.

Implements and extends Massoli et al., "Detection of Face Recognition Adversarial Attacks"
(CVIU 2021): face networks with taps after every residual block, classifier and
deep-features attacks, identification and verification, and trajectory-based detectors.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("frad")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
