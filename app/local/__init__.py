"""The local stack: ``actionq up`` (``up``, ``supervision``, ``data_folder``,
``attach``), the embedded server (``embedded``), the worker command line and
starting and stopping child processes (``processes``), and ``actionq demo``
(``demo``)."""
