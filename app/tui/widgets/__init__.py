"""Widgets the chat screen is built from: sidebar, message, prompt input, status bar."""
