"""vidup's FFmpeg worker: an RQ job that turns one upload into an adaptive-bitrate HLS ladder.

The pure parts (probe parsing, ladder choice, command building, progress parsing, master playlist
maths) are plain functions; :mod:`vidup_transcoder.job` and :mod:`vidup_transcoder.worker` are the
thin edges that run FFmpeg and talk to Redis.
"""
