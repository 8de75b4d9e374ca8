"""Command-line entry points: ``xstream-server`` (server.py) and ``xstream`` (client.py)."""
