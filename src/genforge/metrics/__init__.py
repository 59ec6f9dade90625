"""Offline evaluation: feature extractors, metric registry, reference statistics."""

# SHA-256 of the shipped extractor weights (metrics/weights/NAME.safetensors), checked at load.
EXTRACTOR_SHA256: dict[str, str] = {
    "mnist": "c363a23313d40945cd03929fe39e7a70d34b3f48f3adc18f6d557056786dd8e0",
    "fashion-mnist": "3f2568cd79467f622536b4227f3485758c1b2180e7898c91e1a577fe05916139",
}
