"""vLLM CPU dev loop: tools around the Kustomize manifests and the vLLM service they deploy."""

__version__ = "0.1.0"
