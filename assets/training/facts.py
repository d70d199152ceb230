"""Tandem's own help facts, each with the one canonical answer tandem-nano gives.

The texts follow the user-facing facts of the product exactly; the corpus teaches these answers
word for word, and the evaluation counts an answer correct when it is the fact's canonical text.
"""

from __future__ import annotations

from dataclasses import dataclass

REFUSAL = "I can't answer that here: it needs a bigger model."


@dataclass(frozen=True)
class Fact:
    id: str
    topic: str
    """One of: keys, commands, privacy, escalation, cloud_keys, models, history, small_talk."""
    answer: str


FACTS: tuple[Fact, ...] = (
    # Key bindings of the chat screen.
    Fact("send", "keys", "Press Enter to send your message."),
    Fact("newline", "keys", "Press Ctrl+J to start a new line without sending."),
    Fact("cancel", "keys", "Press Esc to cancel the reply while it is being written."),
    Fact("new_chat", "keys", "Press Ctrl+N to start a new conversation."),
    Fact("search", "keys", "Press Ctrl+F to search your conversation history."),
    Fact("rename", "keys", "Press F2 to rename the current conversation."),
    Fact("delete_chat", "keys",
         "Press Ctrl+D to delete the current conversation; Tandem asks you to confirm first."),
    Fact("toggle_cloud", "privacy",
         "Press Ctrl+O to turn cloud opt-in on or off for this conversation. "
         "Every conversation starts with it off."),
    Fact("cycle_mode", "privacy",
         "Press Ctrl+G to cycle the privacy mode: offline, then ask, then auto."),
    Fact("egress", "privacy",
         "Press Ctrl+E to open the egress ledger: it lists everything that left your machine "
         "and where it went."),
    Fact("settings", "keys", "Press Ctrl+S to open the settings."),
    Fact("keys_screen", "cloud_keys", "Press Ctrl+K to open your API keys."),
    Fact("models", "models", "Press Ctrl+L to open the model picker and choose a local model."),
    Fact("theme", "keys", "Press Ctrl+T to switch between the light and the dark theme."),
    Fact("copy", "keys", "Press Ctrl+Y to copy the last reply."),
    Fact("palette", "keys", "Press Ctrl+P to open the command palette."),
    Fact("quit", "keys", "Press Ctrl+Q to quit Tandem."),
    Fact("shortcuts", "keys",
         "Enter sends, Ctrl+J adds a new line, Esc cancels, Ctrl+N starts a new conversation, "
         "Ctrl+F searches and Ctrl+Q quits. Ctrl+P opens the command palette with the rest."),
    # Message prefixes.
    Fact("slash_cloud", "commands",
         "Start your message with /cloud to send it to the cloud model, if your privacy "
         "settings allow it."),
    Fact("slash_local", "commands",
         "Start your message with /local to keep it on the local model."),
    # Privacy.
    Fact("modes", "privacy",
         "Tandem has three privacy modes: offline, ask and auto. The default is ask; "
         "press Ctrl+G to switch."),
    Fact("mode_offline", "privacy",
         "In offline mode nothing leaves your machine: no connection is made beyond loopback."),
    Fact("mode_ask", "privacy",
         "In ask mode each cloud request is shown to you, redacted and with its destination, "
         "and is sent only if you approve it."),
    Fact("mode_auto", "privacy",
         "In auto mode Tandem escalates to the cloud without asking, but only for "
         "conversations you opted in."),
    Fact("local_only", "privacy",
         "A local-only lock forbids the cloud for that conversation, whatever the privacy mode."),
    Fact("redaction", "privacy",
         "Redaction is on by default: emails, phones, cards, IBANs, IDs, IPs, API keys and your "
         "own terms become placeholders like [EMAIL_1], and are restored in the reply."),
    # Escalation.
    Fact("escalation", "escalation",
         "Every turn starts on the local model. If its confidence is low, the prompt is too long "
         "for its context window, or the question is outside its skills, Tandem hands the turn "
         "to the cloud (only if allowed) and says why on the message."),
    # The command line.
    Fact("cli_tui", "commands", "Run `tandem` with no arguments to open the chat screen."),
    Fact("cli_ask", "commands",
         "Run `tandem ask \"your question\"` for a one-off answer. It reads stdin too and "
         "takes --local, --cloud, --offline and --json."),
    Fact("cli_history", "history",
         "Use `tandem history list`, `tandem history search`, `tandem history export` or "
         "`tandem history import`."),
    Fact("cli_serve", "commands",
         "Run `tandem serve --host 127.0.0.1 --port N` to serve Tandem on your own machine."),
    Fact("cli_version", "commands", "Run `tandem --version` to see which version you have."),
    Fact("cli_offline", "privacy",
         "Start Tandem with --offline and nothing leaves your machine for that run."),
    Fact("cli_db", "history", "Pass --db PATH to use another history database file."),
    Fact("cli_models", "models", "Run `tandem models` to list your local models."),
    # Cloud keys.
    Fact("add_key", "cloud_keys",
         "Press Ctrl+K, or run `tandem keys set PROVIDER`. "
         "Use `tandem keys list` to see your keys and `tandem keys remove PROVIDER` to delete one."),
    Fact("key_storage", "cloud_keys",
         "Keys live in your system keyring under the service tandem. The OPENAI_API_KEY and "
         "ANTHROPIC_API_KEY environment variables override them."),
    # Models and history.
    Fact("bigger_model", "models",
         "Download any Llama or Qwen2 checkpoint from Hugging Face, run `tandem models convert "
         "HF_DIR OUT_DIR --quantization q4f16_1`, then pick it with Ctrl+L."),
    Fact("history_location", "history",
         "Your history is a SQLite file, tandem.db, in your data directory: ~/.local/share/tandem "
         "on Linux, ~/Library/Application Support/tandem on macOS, or TANDEM_HOME if it is set."),
    # Greetings and small talk.
    Fact("greeting", "small_talk", "Hello! How can I help you with Tandem?"),
    Fact("how_are_you", "small_talk", "I'm doing well, thanks! What can I help you with in Tandem?"),
    Fact("thanks", "small_talk", "You're welcome! Anything else about Tandem?"),
    Fact("goodbye", "small_talk", "Goodbye! Come back any time."),
    Fact("identity", "small_talk",
         "I'm tandem-nano, the small model built into Tandem. I run on your machine."),
    Fact("capabilities", "small_talk",
         "I can help with Tandem itself: key bindings, commands, privacy modes, cloud keys, "
         "models and history. Bigger questions go to a bigger model."),
    Fact("acknowledge", "small_talk", "Glad to help. Just ask if you need anything else."),
)

FACTS_BY_ID: dict[str, Fact] = {fact.id: fact for fact in FACTS}
