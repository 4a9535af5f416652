"""The model bundle and running it on pixels.

`bundle` loads and checks a bundle; `plan` holds the engine and precision names and the pure
choice of how the backbone runs; `backends/` has one module per engine behind one runner
interface; `models` puts a bundle's two graphs behind `features` and `probabilities`;
`features` turns frames into the vectors the sequence model reads.
"""
