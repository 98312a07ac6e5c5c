"""pandiff.training"""
