"""Attention family: cross-frame self-attention, object-centric token merging, and the
FateZero-style attention record and fusion.

Pure: ``cross_frame`` (frames of a batch, reference frames, attention over them),
``token_merge`` (bipartite soft matching with foreground protection, merge plans, record and
replay), ``fusion`` (attention record/fusion hooks, cross-attention mask).
ComfyUI glue: ``comfy_patches`` (the attn1/attn2 patches and installing them on clones; on a
video transformer, ``ocd.comfy_dit``'s block patches instead).
"""
