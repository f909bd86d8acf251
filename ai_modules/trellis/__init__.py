"""TRELLIS-image-large (Microsoft, MIT) in plain PyTorch: image -> sparse structure -> structured latent -> 3D
Gaussians, loading the published checkpoints unchanged (no spconv, xformers, flash-attn or custom CUDA).

Modules (each checked against the original code's golden vectors in ``../shared/trellis``):

    preprocess.py    the RGBA cutout -> 518 px premultiplied RGB, as TRELLIS prepares it
    conditioner.py   DINOv2 ViT-L/14 with 4 registers -> the 1374-token condition
    modules.py       shared blocks: timestep embedding, absolute position embedding, attention, DiT blocks
    ss_flow.py       SparseStructureFlowModel (dense DiT over the 16^3 x 8 latent)
    sampler.py       the Euler flow-matching sampler with classifier-free guidance on an interval
    sparse.py        sparse tensors as (coords, feats) and their ops in dense torch
    ss_decoder.py    SparseStructureDecoder (3-D convs) -> 64^3 occupancy -> coordinates
    slat_flow.py     SLatFlowModel (sparse DiT over 8 features per occupied voxel)
    gs_decoder.py    SLatGaussianDecoder -> 32 Gaussians per voxel
    pipeline.py      all of it end to end, in TRELLIS's order of calls and random draws
    loading.py       the hub's layout (pipeline.json, ckpts/*.json + .safetensors) and DINOv2's .pth -> the networks

SPEC: ``../shared/trellis/SPEC.md``.
"""
