"""`classify`, `evaluate` and `bench`: a recording through the same engine, and the files
media centres read.
"""
