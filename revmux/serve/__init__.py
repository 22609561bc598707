"""Serving a saved adapter, below the workflow and the benchmark (it imports neither):

    inference  MuxClassifier: texts in, labels and probabilities out, in input order (the Python API)
    serving    ServingInfo: what serving an adapter needs, saved beside it (``revmux_serving.json``)
    predict    ``revmux predict``: a file of rows in, a file of predictions out (resumable, multi-process)
    batching   BatchPredictor: the requests one batch collected, validated, grouped into composites, answered
    app        ``revmux serve``: the HTTP endpoint on Ray Serve (``pip install 'revmux[serve]'``; imported only there)
    load       the open-loop load generator behind ``revmux bench serve``

``import revmux.serve`` does not import Ray.
"""

from revmux.serve.inference import MuxClassifier, Prediction
from revmux.serve.serving import ServingInfo, ServingInfoError

__all__ = ["MuxClassifier", "Prediction", "ServingInfo", "ServingInfoError"]
