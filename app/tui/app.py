"""TandemApp: paints the chat at once, opens the history store and then loads the local model in
background threads, while a status line shows their progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from app.errors import unexpected
from app.local_models import LocalModel, ModelUnavailable, chosen_model, open_model
from app.settings import THEMES, UserSettings, load_settings, save_settings
from app.turns import RouterFactory, TurnRunner, default_router_factory
from engine.errors import EngineError

if TYPE_CHECKING:  # the store, the engine and the router load after the first paint
    from app.store import Store
    from app.tui.screens.chat import ChatScreen
    from engine.api import Engine
    from offload.network import NetworkState
    from offload.router import Router

EngineOpener = Callable[[LocalModel, Callable[[str, float], None] | None], "Engine"]
"""(model, on_progress) -> Engine; tests inject the real engine through this."""


class NetworkChanged(Message):
    """offload.network's state changed (posted from whichever thread noticed)."""

    def __init__(self, state: NetworkState) -> None:
        self.state = state
        super().__init__()


class TandemApp(App[None]):
    CSS_PATH = Path(__file__).with_name("tandem.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "Tandem"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="quit", priority=True)]

    def __init__(
        self,
        db_path: Path | None = None,
        *,
        store: Store | None = None,
        offline: bool = False,
        open_engine: EngineOpener = open_model,
        make_router: RouterFactory = default_router_factory,
        load_engine: bool = True,
    ) -> None:
        super().__init__()
        from app.tui.paste import install

        install()  # before the driver starts: keys inside a bracketed paste must stay text
        self.db_path = db_path
        self.offline_flag = offline
        self.open_engine = open_engine
        self.make_router = make_router
        self.should_load_engine = load_engine
        self.store: Store | None = store
        """An open app.store.Store (the app closes it), or None to open db_path in the background."""
        self.settings = UserSettings()
        self.engine: Engine | None = None
        self.model: LocalModel | None = None
        self._unsubscribe_network: Callable[[], None] | None = None
        self._router: Router | None = None
        self._router_key: tuple[object, ...] = ()

    # --- start-up -----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        from app.tui.screens.chat import ChatScreen

        await self.push_screen(ChatScreen())
        if self.store is not None:
            await self._history_ready(self.store)
        else:
            # After the first frame: the worker's imports would hold the GIL while the screen paints.
            self.call_after_refresh(self.open_history)

    @work(thread=True, exclusive=True, group="history")
    def open_history(self) -> None:
        """Open the store off the UI thread: sqlite-utils and the migrations would delay the first paint."""
        from app.store import Store, StoreError

        try:
            store = Store.open(self.db_path)
        except StoreError as problem:
            self.call_from_thread(self.exit, return_code=1, message=f"tandem: {problem}")
            return
        # mypy cannot solve Textual's `R | Awaitable[R]` callback type for a coroutine function.
        self.call_from_thread(self._history_ready, store)  # type: ignore[arg-type]

    async def _history_ready(self, store: Store) -> None:
        self.store = store
        self.settings = load_settings(store)
        self.theme = self.settings.theme
        self.set_keymap(dict(self.settings.keymap))
        self._watch_network()
        await self.chat.show_history()
        if self.should_load_engine:
            self.load_engine(chosen_model(self.settings.model_dir, self.settings.backend))

    @property
    def chat(self) -> ChatScreen:
        from app.tui.screens.chat import ChatScreen

        return next(s for s in self.screen_stack if isinstance(s, ChatScreen))

    @property
    def offline(self) -> bool:
        """The hard switch: --offline, or the offline privacy mode."""
        return self.offline_flag or self.settings.mode == "offline"

    def _watch_network(self) -> None:
        from offload.network import NETWORK

        NETWORK.set_offline(self.offline)
        self._unsubscribe_network = NETWORK.subscribe(self._network_changed)
        self.chat.network_state(NETWORK.state)

    def _network_changed(self, state: NetworkState) -> None:
        """offload.network's listener, called from whichever thread saw the change."""
        self.post_message(NetworkChanged(state))

    def on_network_changed(self, message: NetworkChanged) -> None:
        self.chat.network_state(message.state)

    @work(thread=True, exclusive=True, group="engine")
    def load_engine(self, model: LocalModel) -> None:
        """Open the model off the UI thread; the status line follows its progress."""
        self.call_from_thread(self._set_engine_status, f"loading {model.label}…")

        def progress(stage: str, fraction: float) -> None:
            self.call_from_thread(self._set_engine_status, f"loading {model.label}… {stage} {fraction:.0%}")

        previous, self.engine = self.engine, None
        if previous is not None:
            previous.close()
        try:
            engine = self.open_engine(model, progress)
        except ModelUnavailable as problem:
            self.call_from_thread(self._set_engine_status, f"local model unavailable: {problem}")
            return
        except (EngineError, OSError) as problem:  # an engine error names its own fix
            self.call_from_thread(self._set_engine_status, f"{model.label} failed to load: {problem}")
            return
        except Exception as problem:  # last resort: logged, and said to be unexpected; the app stays up
            self.call_from_thread(self._set_engine_status, f"{model.label} failed to load: {unexpected(problem)}")
            return
        self.engine, self.model = engine, model
        self.turn_runner()  # build the router now (httpx, redaction, calibration), not on the first Enter
        self.call_from_thread(self._set_engine_status, f"⌂ {model.label} ready")

    def _set_engine_status(self, status: str) -> None:
        self.chat.engine_status(status)

    # --- what the chat screen asks of the app -------------------------------------------------

    def turn_runner(self) -> TurnRunner:
        """A runner over the current engine and settings. The router is kept while they stay the
        same: it holds each conversation's redaction placeholders, which must stay stable. Only
        once the model and the history are open (the chat waits for both before a turn)."""
        if self.engine is None or self.store is None:
            raise ModelUnavailable("The local model or the history is still opening; try again in a moment.")
        key = (id(self.engine), self.settings, self.offline_flag)
        if self._router is None or self._router_key != key:
            self._router, self._router_key = self.make_router(self.engine, self.settings, self.offline_flag), key
        return TurnRunner(self.store, self._router)

    def forget_router(self) -> None:
        """Build the next turn's router afresh (an API key changed: providers read keys when built)."""
        self._router = None

    def update_settings(self, settings: UserSettings) -> None:
        if self.store is None:
            return  # settings are saved in the history store, still opening (their screens wait for it)
        model_changed = (settings.model_dir, settings.backend) != (self.settings.model_dir, self.settings.backend)
        save_settings(self.store, settings)
        self.settings = settings
        self.theme = settings.theme
        from offload.network import NETWORK

        NETWORK.set_offline(self.offline)
        self.chat.refresh_privacy()
        if model_changed:
            self.load_engine(chosen_model(settings.model_dir, settings.backend))

    def action_theme(self) -> None:
        if self.store is None:
            return  # the choice is saved in the history store, still opening
        theme = THEMES[(THEMES.index(self.settings.theme) + 1) % len(THEMES)]
        self.update_settings(replace(self.settings, theme=theme))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        chat = self.chat
        for title, help_text, action in chat.COMMANDS_FOR_PALETTE:
            yield SystemCommand(title, help_text, getattr(chat, f"action_{action}"))

    def on_unmount(self) -> None:
        if self._unsubscribe_network is not None:
            self._unsubscribe_network()
        if self.engine is not None:
            self.engine.close()
        if self.store is not None:
            self.store.close()
