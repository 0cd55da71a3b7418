"""Burr's documented chatbot, as Burr has it (burr_chatbot.py) and on burr_async (chatbot.py)."""
