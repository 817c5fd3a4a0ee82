"""The HTTP layer: the Flask app, its blueprints, the chat page and the server."""
