"""The ``actionq`` command line: ``main`` (the group and the server-side
commands), ``conversations`` (client commands over the HTTP API) and
``api_client`` (the small HTTP client they use)."""
