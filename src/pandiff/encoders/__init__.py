"""pandiff.encoders"""
