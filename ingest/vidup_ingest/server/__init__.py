"""How the ingest holds up against slow clients: a connection costs a thread only once its request
head is in (``worker``, ``heads``), and a request body must keep a minimum pace (``bodypace``).

Measured with ``bench/slowclients``; the figures and the reasons for this design are in the README's
"Slow clients" section and in each module's docstring.
"""
