"""FLUX.2 image editing and generation on Ray Serve."""
