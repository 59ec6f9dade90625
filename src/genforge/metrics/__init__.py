"""Offline evaluation of trained models.

- ``evaluate``: the one registry (``METRICS``) by kind of data and model capability, and what runs
  it: ``checkpoint_metrics``, ``final_metrics`` and ``write_report`` (training's end),
  ``evaluate_loaded`` (``genforge eval`` and the studio), ``evaluate_real`` (the real floor);
- ``features``: the classifier and pixel feature spaces, cached reference features, ``TrainingEval``;
- ``core``: FID, KID, precision/recall, class coverage on features; ``modes``: mode metrics on
  known mixtures; ``translation``: two-domain judges; ``classes``: the evaluation classifier's view;
- ``extractor``: the shipped MNIST / Fashion-MNIST extractors; ``nearest``: pixel neighbours.
"""

# SHA-256 of the shipped extractor weights (metrics/weights/NAME.safetensors), checked at load.
EXTRACTOR_SHA256: dict[str, str] = {
    "mnist": "c363a23313d40945cd03929fe39e7a70d34b3f48f3adc18f6d557056786dd8e0",
    "fashion-mnist": "3f2568cd79467f622536b4227f3485758c1b2180e7898c91e1a577fe05916139",
}
