"""The quick start (`ad-detector demo`) and its data generator, apart from the runtime.

`command` is the quick start; `data` lays out a demo set from a seed; `write` turns drawings
into labelled clips and broadcasts; `football`, `commercials` and `paint` draw them.
"""
