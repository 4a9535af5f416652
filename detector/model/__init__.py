"""The model bundle and running it on pixels: loading and checking the bundle, the inference
backends behind one interface, feature extraction.
"""
