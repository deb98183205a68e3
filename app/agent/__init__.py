"""The agent side: what an agent is (``base``), the messages a model sees
(``view``), and the agents (``scripted``, ``llm``). Pure: no store, no Celery."""
