"""The pure per-channel logic that live, offline and train share: sampling, windows,
decision, boundary placement, segments. No I/O, no threads, so it is tested without video or sockets.
"""
