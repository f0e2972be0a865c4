"""Archive storage: the tree ``manifest_hybrid.json``, ``tensors/``, ``predictors/`` as a single
ZIP file (stored members, default) or as a directory."""
