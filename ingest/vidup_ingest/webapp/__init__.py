"""The browser page: upload, watch and play. Its source is the npm project in ``ingest/webapp``;
``make webapp`` (and the ingest image build) bundles it into ``static/``, which this package serves."""
