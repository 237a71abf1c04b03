"""The TUS 1.0.0 protocol: header parsing, the pure upload rules, storage, locks, body streaming,
the handover of a finished upload to Kubernetes, and the ``/files/`` routes."""
