"""pandiff.evaluation"""
