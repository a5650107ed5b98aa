"""Rendering: camera conventions and a differentiable rasteriser (pure PyTorch; nvdiffrast optional).

Room: images from meshes. See ``camera.py`` for the frames every part of the suite shares.
"""
