"""Small helpers shared by every role: atomic file writes, rate-limited log lines.
"""
