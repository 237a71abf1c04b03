"""The videos API, read from VideoTranscode resources: status documents, live progress (WebSocket,
SSE) and HLS serving behind playback tokens."""
