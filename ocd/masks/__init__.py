"""Masks family: where the object is.

- ``ops``: mask tools on ``[F, H, W]`` (normalise any layout, resize, grow/shrink, blur and
  feather, threshold, invert, temporal smoothing, tubes);
- ``grid``: the one rule that turns a mask into weights on a grid of latent pixels or
  attention tokens, used by token merging, attention fusion and the dual-rate sampler;
- ``saliency``: a mask without a model (motion + spectral-residual saliency);
- ``sam_video``: Segment Anything on a video from clicks on a key frame.
"""
