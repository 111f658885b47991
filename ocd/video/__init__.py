"""Video family: clips in and out (``codec``: PyAV and OpenCV, no ComfyUI)."""
