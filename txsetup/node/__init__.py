"""What runs on a node: payload decoding, checks, configuration, the daemon, the step tables."""
