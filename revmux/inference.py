"""``from revmux.inference import MuxClassifier`` keeps working: the serving API lives in ``revmux.serve.inference``."""

from revmux.serve.inference import DEFAULT_MAX_LENGTH, MuxClassifier, Prediction

__all__ = ["DEFAULT_MAX_LENGTH", "MuxClassifier", "Prediction"]
