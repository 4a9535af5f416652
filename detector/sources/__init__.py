"""Where frames come from: one module per input kind behind one interface, the scheme table
and credential redaction, and the file decoder the offline path uses.
"""
