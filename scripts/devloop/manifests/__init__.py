"""The Kustomize tree as the rest of the package sees it: rendered by the real kustomize
(`kustomize.py`), printed (`devloop render`) and validated against the API schemas
(`devloop validate`)."""
