"""The local stack: ``actionq up`` (``up``, ``supervision``, ``data_folder``,
``attach``), the embedded server (``embedded``), the worker command line
(``processes``) and ``actionq demo`` (``demo``)."""
