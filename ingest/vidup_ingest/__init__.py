"""vidup's ingest: a TUS 1.0.0 server that streams uploads to shared storage and hands every
finished upload to Kubernetes as a VideoTranscode. See ``app.create_app``."""
