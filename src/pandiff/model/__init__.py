"""pandiff.model"""
