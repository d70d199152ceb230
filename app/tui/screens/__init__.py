"""One screen per file: the chat, and the modal screens it opens."""
