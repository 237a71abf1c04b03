"""The chaos soak: many resumable uploads while ingest replicas, workers, the operator and Redis
are killed and restarted at random, then a strict audit of what the stack left behind.

Shared by the bounded test (``tests/soak/test_chaos_soak.py``) and the longer benchmark
(``bench/soak``), so both exercise and judge exactly the same thing:

* :mod:`vidup.soak.media` -- generated, cached test videos of varied sizes;
* :mod:`vidup.soak.client` -- a TUS client that drops, stalls and resets its own connections and
  resumes with HEAD + PATCH, often on another replica;
* :mod:`vidup.soak.chaos` -- the loop that SIGKILLs and restarts components (and restarts any that
  crashed on their own, counting them);
* :mod:`vidup.soak.watch` -- every phase each VideoTranscode goes through, from a watch;
* :mod:`vidup.soak.state` and :mod:`vidup.soak.audit` -- reading the stack at the end, and the end
  checks (checksums, one Completed video and one package per upload, no orphans, nothing stuck);
* :mod:`vidup.soak.run` -- starts a :class:`~vidup.localstack.stack.Stack`, drives the rest;
  :mod:`vidup.soak.figures` prints the figures.
"""
