"""vidup: resumable TUS uploads turned into adaptive-bitrate HLS on Kubernetes."""

__version__ = "0.1.0"
