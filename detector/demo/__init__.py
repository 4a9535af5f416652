"""The quick start (`ad-detector demo`) and its data generator, apart from the runtime.
"""
