"""The chatbot of ``examples/chatbot.py`` as a FastAPI service, one conversation per app id.

Run it with ``uvicorn --factory examples.fastapi_chat.app:create_app`` (see ``app.py``).
"""

from examples.fastapi_chat.app import create_app

__all__ = ["create_app"]
