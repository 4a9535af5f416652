"""The daemon and what only it uses: the orchestrator, capture threads, ring buffers, the
batcher, fault detection, thread watchdog, systemd notify, metrics and health.
"""
