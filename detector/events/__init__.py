"""What leaves the daemon: the wire schema, the outputs (ZeroMQ publisher with its journal,
replay and CURVE), and the `subscribe` client.
"""
