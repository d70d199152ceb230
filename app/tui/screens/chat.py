"""The chat screen: sidebar, conversation header, streaming messages and the prompt. It owns every
chat action (the bindings and palette entries) and runs each turn in a thread worker."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from app.route_labels import describe_reply, describe_result
from app.tui.reply_pacing import PacedEvents
from app.tui.widgets.prompt import PromptInput
from app.tui.widgets.sidebar import Sidebar
from app.tui.widgets.status_bar import StatusBar
from app.turns import NEW_TITLE, PendingTurn, TurnError, TurnResult, open_turn

if TYPE_CHECKING:
    from app.local_models import LocalModel
    from app.settings import UserSettings
    from app.store import Store
    from app.store.records import Conversation
    from app.store.records import Message as StoredMessage
    from app.tui.app import TandemApp
    from app.tui.widgets.message import MessageView
    from offload.events import RouterEvent
    from offload.network import NetworkState
    from offload.privacy import Mode
    from offload.router import Approval, Preview

SHOWN_MESSAGES = 60
"""Messages mounted when a conversation opens; a button above them shows the earlier ones."""


class RepliesQueued(Message):
    """The turn worker queued events in the screen's PacedEvents (posted from its thread)."""


class TurnFinished(Message):
    def __init__(self, result: TurnResult | None, error: str | None) -> None:
        self.result = result
        self.error = error
        super().__init__()


class ChatScreen(Screen[None]):
    # Priority so they work while the prompt (a TextArea with its own ctrl keys) has focus.
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New", id="new_chat", priority=True),
        Binding("ctrl+f", "search", "Search", id="search", priority=True),
        Binding("f2", "rename", "Rename", id="rename", priority=True),
        Binding("ctrl+d", "delete_chat", "Delete", id="delete_chat", priority=True),
        Binding("ctrl+o", "toggle_cloud", "Cloud", id="toggle_cloud", priority=True),
        Binding("ctrl+g", "cycle_mode", "Mode", id="cycle_mode", priority=True),
        Binding("f4", "cycle_context", "Context", id="cycle_context", priority=True, show=False),
        Binding("ctrl+e", "egress", "Egress", id="egress", priority=True),
        Binding("ctrl+s", "settings", "Settings", id="settings", priority=True, show=False),
        Binding("ctrl+k", "keys", "Keys", id="keys", priority=True, show=False),
        Binding("ctrl+l", "models", "Models", id="models", priority=True, show=False),
        Binding("ctrl+t", "app.theme", "Theme", id="theme", priority=True, show=False),
        Binding("ctrl+y", "copy", "Copy reply", id="copy", priority=True, show=False),
        Binding("f7", "mark_good", "Good reply", id="mark_good", priority=True, show=False),
        Binding("f8", "mark_bad", "Not good enough", id="mark_bad", priority=True, show=False),
        Binding("escape", "cancel", "Cancel", id="cancel", priority=True),
    ]

    COMMANDS_FOR_PALETTE: tuple[tuple[str, str, str], ...] = (
        ("New conversation", "Start a new conversation (Ctrl+N)", "new_chat"),
        ("Search history", "Full-text search over every conversation (Ctrl+F)", "search"),
        ("Rename conversation", "Give this conversation a new title (F2)", "rename"),
        ("Delete conversation", "Delete this conversation for good, after confirming (Ctrl+D)", "delete_chat"),
        ("Archive conversation", "Hide this conversation from the list; its history stays", "archive"),
        ("Show or hide archived", "List archived conversations too, or not", "toggle_archived"),
        ("Toggle cloud for this conversation", "Allow or forbid escalation to the cloud here (Ctrl+O)", "toggle_cloud"),
        ("Lock conversation to local", "Forbid the cloud here whatever the mode, or lift the lock", "toggle_local_lock"),
        ("Cloud context", "What a cloud request carries of this conversation: this message, recent turns, or all (F4)", "cycle_context"),
        ("Cycle privacy mode", "offline → ask → auto; auto asks you first (Ctrl+G)", "cycle_mode"),
        ("Egress ledger", "Every request that left this machine (Ctrl+E)", "egress"),
        ("Settings", "Providers, models, thresholds, redaction terms (Ctrl+S)", "settings"),
        ("API keys", "Keys in the system keyring (Ctrl+K)", "keys"),
        ("Model picker", "Pick the local model (Ctrl+L)", "models"),
        ("Copy last reply", "Copy the last reply to the clipboard (Ctrl+Y)", "copy"),
        ("Mark last reply good", "Teach the router this local answer was right (F7; needs learn from use)", "mark_good"),
        ("Mark last reply not good enough", "Teach the router this local answer was wrong (F8)", "mark_bad"),
        ("Cancel reply", "Stop the reply that is streaming (Esc)", "cancel"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.conversation_id: int | None = None
        self.show_archived = False
        self.cancel_event: threading.Event | None = None
        self.reply_view: MessageView | None = None
        self.reply_events: PacedEvents | None = None
        """The streaming reply's events on their way from the worker, paced for the screen."""
        self._hidden: list[StoredMessage] = []

    @property
    def tandem(self) -> TandemApp:
        return self.app  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        """The open history store. Actions wait for it (check_action), so it is there when they run."""
        store = self.tandem.store
        if store is None:
            raise RuntimeError("the history store is still opening")  # a caller skipped history_open
        return store

    @property
    def history_open(self) -> bool:
        return self.tandem.store is not None

    @property
    def busy(self) -> bool:
        return self.cancel_event is not None

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield Static(id="header")
                yield VerticalScroll(id="messages")
                yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.engine_status("opening history…")
        self.query_one(PromptInput).focus()

    async def show_history(self) -> None:
        """The store is open: list the conversations and open the latest."""
        conversations = self.store.list_conversations()
        await self.open_conversation(conversations[0].id if conversations else None)
        self.engine_status("history ready")

    # --- what the app pushes down -------------------------------------------------------------

    def engine_status(self, status: str) -> None:
        self.query_one(StatusBar).engine_status = status

    def network_state(self, state: NetworkState) -> None:
        """offload.network's NetworkState: online, or why not."""
        status = self.query_one(StatusBar)
        status.network_detail = state.detail
        status.offline = not state.online

    def refresh_privacy(self) -> None:
        """Redraw the header and the status bar's mode badge."""
        settings = self.tandem.settings
        status = self.query_one(StatusBar)
        status.mode = "offline" if self.tandem.offline_flag else settings.mode
        conversation = self.store.get_conversation(self.conversation_id) if self.conversation_id else None
        title = conversation.title if conversation else NEW_TITLE
        cloud = "[b]on[/b]" if conversation and conversation.cloud_opt_in else "off"
        lock = "   🔒 local only" if conversation and conversation.local_only else ""
        self.query_one("#header", Static).update(
            f"[b]{escape(title)}[/b]  "
            f"[@click=screen.toggle_cloud]cloud: {cloud}[/] (Ctrl+O){lock}  "
            f"[@click=screen.cycle_context]sends: {self._context_label(conversation, short=True)}[/] (F4)  "
            f"[@click=screen.cycle_mode]mode: {status.mode}[/] (Ctrl+G)"
        )

    def _context_label(self, conversation: Conversation | None, short: bool = False) -> str:
        """What a cloud request from this conversation carries (its own policy or the default)."""
        from offload.privacy import describe_context

        settings = self.tandem.settings
        policy = (conversation.cloud_context if conversation else None) or settings.context_policy
        return describe_context(policy, settings.context_turns, short)

    def action_cycle_context(self) -> None:
        """This conversation's cloud-context policy: this message only -> recent turns -> whole."""
        from app.settings import CONTEXT_POLICIES

        if self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(title=NEW_TITLE).id
        conversation = self.store.get_conversation(self.conversation_id)
        current = conversation.cloud_context or self.tandem.settings.context_policy
        policy = CONTEXT_POLICIES[(CONTEXT_POLICIES.index(current) + 1) % len(CONTEXT_POLICIES)]
        conversation = self.store.update_conversation(self.conversation_id, cloud_context=policy)
        self.notify(f"A cloud request from this conversation now carries: {self._context_label(conversation)}.")
        self.refresh_privacy()

    async def refresh_sidebar(self) -> None:
        conversations = self.store.list_conversations(include_archived=self.show_archived)
        await self.query_one(Sidebar).show(conversations, self.conversation_id)

    # --- conversations ------------------------------------------------------------------------

    async def open_conversation(self, conversation_id: int | None, focus_message: int | None = None) -> None:
        """Show a conversation: its latest messages (a long one opens fast), or from a search hit on."""
        self.conversation_id = conversation_id
        pane = self.query_one("#messages", VerticalScroll)
        await pane.remove_children()
        messages = self.store.messages(conversation_id) if conversation_id else []
        ids = [m.id for m in messages]
        start = max(0, len(messages) - SHOWN_MESSAGES)
        if focus_message in ids:
            start = min(start, max(0, ids.index(focus_message) - 2))
        views = [self._view_of(m) for m in messages[start:]]
        if start:
            await pane.mount(Button(f"Show {start} earlier messages", id="earlier", variant="default"))
        await pane.mount_all(views)
        self._hidden = messages[:start]
        await self.refresh_sidebar()
        self.refresh_privacy()
        target = next((v for v in views if v.message_id == focus_message), None)
        if target is not None:
            target.add_class("-found")
            target.focus()
            pane.scroll_to_widget(target, animate=False)
        else:
            pane.scroll_end(animate=False)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "earlier":
            event.stop()
            pane = self.query_one("#messages", VerticalScroll)
            first = pane.query("MessageView").first()
            await pane.mount_all([self._view_of(m) for m in self._hidden], before=first)
            self._hidden = []
            await event.button.remove()

    def _view_of(self, message: StoredMessage) -> MessageView:
        # Imported here, as in on_prompt_input_submitted: Markdown is slow to import, and the first
        # frame (painted before the history opens) has no message to show.
        from app.tui.widgets.message import MessageView

        if message.role != "assistant":
            return MessageView(message.role, message.content, message_id=message.id)
        meta = describe_reply(
            route=message.route,
            provider=message.provider,
            model=message.model,
            confidence=message.confidence,
            tok_s=message.tok_s,
            reason=message.escalation_reason,
            status=message.status,
        )
        return MessageView("assistant", message.content, meta=meta, message_id=message.id)

    def _ensure_conversation(self) -> int:
        """The open conversation, or a new one (open_turn titles it from its first message)."""
        if self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(title=NEW_TITLE).id
        return self.conversation_id

    async def on_sidebar_selected(self, event: Sidebar.Selected) -> None:
        if self.busy:
            self.notify("A reply is still streaming; press Esc to cancel it first.", severity="warning")
            return
        await self.open_conversation(event.conversation_id)
        self.query_one(PromptInput).focus()

    async def action_new_chat(self) -> None:
        if self.busy:
            self.notify("A reply is still streaming; press Esc to cancel it first.", severity="warning")
            return
        conversation = self.store.create_conversation(title=NEW_TITLE)
        await self.open_conversation(conversation.id)
        self.query_one(PromptInput).focus()

    def action_rename(self) -> None:
        if self.conversation_id is None:
            self.notify("No conversation to rename yet.", severity="warning")
            return
        from app.tui.screens.rename import RenameScreen

        conversation_id = self.conversation_id

        async def renamed(title: str | None) -> None:
            if title:
                self.store.update_conversation(conversation_id, title=title)
                await self.refresh_sidebar()
                self.refresh_privacy()

        self.app.push_screen(RenameScreen(self.store.get_conversation(conversation_id).title), renamed)

    def action_delete_chat(self) -> None:
        if self.conversation_id is None or self.busy:
            self.notify("No conversation to delete here.", severity="warning")
            return
        from app.tui.screens.confirm import ConfirmScreen

        conversation_id = self.conversation_id
        title = self.store.get_conversation(conversation_id).title

        async def confirmed(yes: bool | None) -> None:
            if yes:
                self.store.delete_conversation(conversation_id)
                self.notify(f"Deleted “{title}”.")
                remaining = self.store.list_conversations(include_archived=self.show_archived)
                await self.open_conversation(remaining[0].id if remaining else None)

        self.app.push_screen(
            ConfirmScreen(f"Delete “{escape(title)}” and all its messages? This cannot be undone."), confirmed
        )

    async def action_archive(self) -> None:
        if self.conversation_id is None or self.busy:
            return
        conversation = self.store.get_conversation(self.conversation_id)
        self.store.update_conversation(self.conversation_id, archived=not conversation.archived)
        self.notify(f"{'Unarchived' if conversation.archived else 'Archived'} “{conversation.title}”.")
        remaining = self.store.list_conversations(include_archived=self.show_archived)
        await self.open_conversation(remaining[0].id if remaining else None)

    async def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        await self.refresh_sidebar()

    # --- search ---------------------------------------------------------------------------------

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def on_sidebar_search_submitted(self, event: Sidebar.SearchSubmitted) -> None:
        from app.tui.screens.search import SearchScreen

        hits = self.store.search(event.query)

        async def jump(target: tuple[int, int] | None) -> None:
            if target is not None:
                await self.open_conversation(target[0], focus_message=target[1])

        self.app.push_screen(SearchScreen(event.query, hits), jump)

    # --- privacy --------------------------------------------------------------------------------

    def action_toggle_cloud(self) -> None:
        if self.conversation_id is None:
            self.conversation_id = self.store.create_conversation(title=NEW_TITLE).id
        conversation = self.store.get_conversation(self.conversation_id)
        if conversation.local_only and not conversation.cloud_opt_in:
            self.notify("This conversation is locked to local; lift the lock from the palette first.", severity="warning")
            return
        self.store.update_conversation(self.conversation_id, cloud_opt_in=not conversation.cloud_opt_in)
        self.notify(f"Cloud {'allowed' if not conversation.cloud_opt_in else 'off'} for this conversation.")
        self.refresh_privacy()
        self.run_worker(self.refresh_sidebar())

    def action_toggle_local_lock(self) -> None:
        if self.conversation_id is None:
            return
        conversation = self.store.get_conversation(self.conversation_id)
        locking = not conversation.local_only
        self.store.update_conversation(
            self.conversation_id, local_only=locking, **({"cloud_opt_in": False} if locking else {})
        )
        self.refresh_privacy()
        self.run_worker(self.refresh_sidebar())

    def action_cycle_mode(self) -> None:
        if self.tandem.offline_flag:
            self.notify("Started with --offline: nothing leaves this machine until you restart without it.")
            return
        current = self.tandem.settings
        if not current.next_mode_needs_confirmation():
            self._set_mode(current.next_mode().mode)
            return
        from app.tui.screens.confirm import ConfirmScreen

        def confirmed(yes: bool | None) -> None:
            # Declining moves on past auto, to offline: the cycle never sticks, and only towards privacy.
            self._set_mode("auto" if yes else "offline", "" if yes else " (auto not confirmed)")

        provider = current.provider
        self.app.push_screen(
            ConfirmScreen(
                f"Switch to [b]auto[/b]? Turns the local model is unsure of will go to {escape(provider)} "
                "without asking you first (only in conversations that opted in, still redacted).\n"
                "Cancel moves on to offline.",
                yes="Switch to auto",
            ),
            confirmed,
        )

    def _set_mode(self, mode: Mode, note: str = "") -> None:
        settings = replace(self.tandem.settings, mode=mode)
        self.tandem.update_settings(settings)
        self.notify(f"Privacy mode: {settings.mode}{note}.")

    # --- screens --------------------------------------------------------------------------------

    def action_egress(self) -> None:
        from app.tui.screens.egress import EgressScreen

        self.app.push_screen(EgressScreen(self.store.egress()))

    def action_settings(self) -> None:
        from app.local_models import chosen_model
        from app.tui.screens.settings import SAMPLING_NAMES, SettingsScreen

        def saved(settings: UserSettings | None) -> None:
            if settings is not None:
                self.tandem.update_settings(settings)
                self.notify("Settings saved.")

        # The sampling override is keyed by the model's name, as the router looks it up (EngineInfo.model_id).
        from app.feedback import summary

        engine, settings = self.tandem.engine, self.tandem.settings
        info = getattr(engine, "info", None)  # None until the model is open (or a snapshot's stand-in)
        name = info.model_id if info is not None else chosen_model(settings.model_dir, settings.backend).path.name
        defaults = info.generation_defaults if info is not None else None
        shown = {key: getattr(defaults, key) for key in SAMPLING_NAMES} if defaults is not None else None
        # The router's running totals of the hybrid route, once there is a model to route for.
        totals = self.tandem.turn_runner().router.hybrid_totals if engine is not None and self.history_open else None
        hybrid = totals.summary() if totals is not None else None
        self.app.push_screen(SettingsScreen(settings, name, shown, summary(self.store), hybrid), saved)

    def action_keys(self) -> None:
        from app.tui.screens.keys import KeysScreen

        self.app.push_screen(
            KeysScreen([p.name for p in self.tandem.settings.providers]), lambda _: self.tandem.forget_router()
        )

    def action_models(self) -> None:
        from app.local_models import chosen_model, discover_models, embedded_model
        from app.tui.screens.models import ModelPickerScreen

        if self.busy:  # switching closes the engine the reply is streaming from
            self.notify("A reply is still streaming; press Esc to cancel it first.", severity="warning")
            return
        settings = self.tandem.settings

        def picked(model: LocalModel | None) -> None:
            if model is not None:
                model_dir = None if model.path == embedded_model().path else str(model.path)
                self.tandem.update_settings(replace(settings, model_dir=model_dir, backend=model.backend))

        current = chosen_model(settings.model_dir, settings.backend)
        self.app.push_screen(ModelPickerScreen(discover_models(), current), picked)

    def action_copy(self) -> None:
        from app.tui.widgets.message import MessageView

        replies = [v for v in self.query(MessageView) if v.role == "assistant" and v.content]
        if not replies:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(replies[-1].content)
        self.notify("Copied the last reply.")

    def action_mark_good(self) -> None:
        self._mark_last_reply(True)

    def action_mark_bad(self) -> None:
        self._mark_last_reply(False)

    def _mark_last_reply(self, good: bool) -> None:
        """A label for the router's calibration of this model, kept only in the history store."""
        from app.feedback import learning_enabled

        if not self.history_open or self.conversation_id is None:
            return
        if not learning_enabled(self.store):
            self.notify("Turn on \"learn from use\" in settings (Ctrl+S) to teach the router.", severity="warning")
            return
        replies = [m for m in self.store.messages(self.conversation_id) if m.role == "assistant"]
        if not replies or not self.store.label_reply(replies[-1].id, good, "explicit"):
            self.notify("Only a local reply given while learning was on can be marked.", severity="warning")
            return
        self.notify("Marked the last reply good." if good else "Marked the last reply not good enough.")

    # --- a turn ---------------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if not self.history_open:
            self.notify("The history is still opening; send again in a moment.", severity="warning")
            self.query_one(PromptInput).text = event.text
            return
        if self.busy:
            self.notify("A reply is still streaming; press Esc to cancel it.", severity="warning")
            return
        if self.tandem.engine is None:
            self.notify("The local model is not ready yet; see the status line.", severity="warning")
            self.query_one(PromptInput).text = event.text
            return
        conversation_id = self._ensure_conversation()
        pane = self.query_one("#messages", VerticalScroll)
        from app.tui.widgets.message import MessageView

        pending: PendingTurn | None = None
        try:
            # Saves the message and titles a new conversation; a /cloud or /local is read off here.
            pending = open_turn(self.store, conversation_id, event.text)
        except TurnError as error:
            problem = str(error)
        self.reply_view = MessageView("assistant", meta="⌂ local · thinking…")
        await pane.mount_all([MessageView("user", pending.content if pending else event.text), self.reply_view])
        pane.anchor()
        if pending is None:
            self.post_message(TurnFinished(None, problem))  # nothing was saved: the reply says why
            return
        self.cancel_event = threading.Event()
        self.reply_events = PacedEvents(lambda: self.post_message(RepliesQueued()))
        self.refresh_bindings()  # Esc now cancels: the footer shows it
        self.run_turn(pending, self.cancel_event, self.reply_events)

    @work(thread=True, exclusive=True, group="turn")
    def run_turn(self, pending: PendingTurn, cancel: threading.Event, events: PacedEvents) -> None:
        try:
            result = self.tandem.turn_runner().answer(
                pending, approve=self._approve_from_worker, cancel=cancel, on_event=events.push
            )
        except TurnError as error:
            self.post_message(TurnFinished(None, str(error)))
        else:
            self.post_message(TurnFinished(result, None))

    def _approve_from_worker(self, preview: Preview) -> Approval | bool:
        """The router's approve callback: show the payload in a modal and wait for the answer
        (an offload.router.Approval, or False). Runs on the worker thread; a cancelled turn
        answers no."""
        from app.tui.screens.approve import ApproveScreen

        decided = threading.Event()
        answer: list[Approval | bool] = [False]
        screen = ApproveScreen(preview)

        def on_answer(choice: Approval | None) -> None:
            answer[0] = choice or False
            decided.set()

        self.app.call_from_thread(self.app.push_screen, screen, on_answer)
        while not decided.wait(0.05):
            if self.cancel_event is None or self.cancel_event.is_set():
                self.app.call_from_thread(screen.dismiss, False)
                decided.wait(1.0)
                return False
        return answer[0]

    async def on_replies_queued(self, message: RepliesQueued) -> None:
        await self._show_queued_events()

    async def _show_queued_events(self) -> None:
        """What the worker queued, a frame at most after the last (PacedEvents keeps the pace)."""
        events = self.reply_events
        if events is None:
            return
        wait = events.wait_s()
        if wait > 0:
            await asyncio.sleep(wait)
        for event in events.take():
            await self._show(event)

    async def _show(self, event: RouterEvent) -> None:
        from offload.events import Decision, Discard, Notice, Token

        view = self.reply_view
        if view is None:
            return
        if isinstance(event, Token):
            await view.write(event.text)
        elif isinstance(event, Discard):
            await view.restart()
            view.add_note(f"local draft withdrawn: {event.reason}")
        elif isinstance(event, Decision):
            where = {"cloud": "☁ cloud", "hybrid": "⇄ hybrid"}.get(event.route, "⌂ local")
            view.set_meta(f"{where} · {event.reason}")
        elif isinstance(event, Notice):
            view.add_note(event.text)

    async def on_turn_finished(self, message: TurnFinished) -> None:
        await self._show_queued_events()  # nothing the worker queued is left behind
        self.reply_events = None
        view, self.reply_view, self.cancel_event = self.reply_view, None, None
        self.refresh_bindings()  # nothing to cancel now: "esc Cancel" leaves the footer
        if view is None:
            return
        result = message.result
        if result is None:
            await view.finish()
            view.set_meta(f"⚠ error · {message.error}")
            view.add_class("-error")
        else:
            await view.finish(result.reply)
            view.set_meta(describe_result(result))
        await self.refresh_sidebar()
        self.refresh_privacy()

    def on_unmount(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()  # quitting mid-reply: stop the worker before the engine closes

    def action_cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.notify("Cancelling the reply…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.busy  # Esc falls through to other widgets when nothing streams
        return self.history_open  # the rest wait for the history to open
