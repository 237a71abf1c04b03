"""The vidup Kopf operator: turns each VideoTranscode into one RQ transcode job and owns its status.

Layout: pure decisions (:mod:`decisions`, :mod:`status`) under thin edges (:mod:`jobs` for RQ and
Redis, :mod:`kube` for the API server, :mod:`handlers` for Kopf, :mod:`leader` for the replica guard).
"""
