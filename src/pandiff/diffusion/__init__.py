"""pandiff.diffusion"""
