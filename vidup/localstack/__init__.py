"""The local stack: a real control plane, Redis and vidup's own processes, for people and tests alike."""
