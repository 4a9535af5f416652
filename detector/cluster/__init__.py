"""The pipeline on a Ray cluster (the `cluster` config section, extra `[cluster]`).

What runs where (README "Multi-node Ray"):
- the driver (`ad-detector run`, detector.cluster.driver): config, the one publisher (PUB,
  snapshot, journal, CURVE), the one metrics endpoint, systemd; it owns the Ray session and,
  with `address: local`, the local cluster it started;
- channel workers (detector.cluster.worker): Ray actors, one per `channels_per_worker`
  channels, each running capture -> ring -> cross-channel batch -> window -> decision, the
  same classes as the single-process daemon; their events and metrics go back to the driver;
- the backbone (detector.cluster.backbone): a Ray Serve deployment whose replicas batch the
  frames of every worker (`@serve.batch`) through ONNX Runtime.

Nothing here is imported unless the config has a `cluster` section, so a single-machine
install without Ray never loads it.
"""
