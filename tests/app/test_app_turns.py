"""The turn runner the TUI and the CLI share, on a real store, driving the real router over the
real engine on the embedded model and, where a turn escalates, a real cloud on 127.0.0.1: what it
saves, when, and how."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
from app_helpers import FailsAfterFirstToken, KeptOpen

from app.errors import AppError
from app.turns import NEW_TITLE, TurnError, TurnRunner, default_router_factory, title_from
from engine.errors import EngineError
from offload.events import TurnDone
from offload.router import Preview

REFUSAL = "I can't answer that here: it needs a bigger model."
REFUSED = "the local model says this needs a bigger model"


@pytest.fixture
def local_router(nano_engine):
    """The real router with the default settings: no conversation here opts in, so all stays local."""
    from app.settings import UserSettings

    return default_router_factory(nano_engine, UserSettings(), offline=False)


def cloud_router(engine, settings, mode: str):
    return default_router_factory(engine, dataclasses.replace(settings, mode=mode), offline=False)


class Spy:
    """The real router, watched: it keeps each Turn it is given and can look at the store first."""

    def __init__(self, router, before=None) -> None:
        self.router, self.before, self.turns = router, before, []

    def run(self, turn, approve=None, cancel=None):
        self.turns.append(turn)
        if self.before is not None:
            self.before()
        yield from self.router.run(turn, approve, cancel)


def test_the_users_message_is_committed_before_the_router_runs(store, db_path, local_router):
    conversation = store.create_conversation(title="t")
    seen: list[list[tuple[str, str]]] = []

    def peek() -> None:
        from app.store import Store

        with Store.open(db_path) as other:  # another connection sees it: it is committed
            seen.append([(m.role, m.content) for m in other.messages(conversation.id) if m.role == "user"])

    TurnRunner(store, Spy(local_router, peek)).run(conversation.id, "What is Tandem?")
    assert seen == [[("user", "What is Tandem?")]]


def test_a_local_reply_is_stored_with_its_route_and_figures(store, local_router):
    conversation = store.create_conversation(title="t")
    result = TurnRunner(store, local_router).run(conversation.id, "What is Tandem?")
    user, reply = store.messages(conversation.id)
    assert (user.role, user.content) == ("user", "What is Tandem?")
    assert reply.parent_id == user.id
    assert "Tandem" in reply.content
    assert (reply.role, reply.content, reply.status) == ("assistant", result.reply, "complete")
    assert (reply.route, reply.model, reply.provider) == ("local", "tandem-nano", "tvm")
    assert 0.5 <= reply.confidence <= 1 and reply.confidence == pytest.approx(result.confidence)
    assert reply.tok_s > 0 and reply.tok_s == pytest.approx(result.tok_s)
    assert reply.escalation_reason == "the local model is confident"
    assert (result.route, result.status) == ("local", "complete")


def test_an_escalated_reply_replaces_the_local_draft_and_records_egress(
    store, nano_engine, loopback_cloud, cloud_settings
):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    loopback_cloud.reply = "From the cloud, [EMAIL_1]."
    events: list = []
    result = TurnRunner(store, cloud_router(nano_engine, cloud_settings, "auto")).run(
        conversation.id, "Mail ada@example.com: what is the capital of France?", on_event=events.append
    )
    reply = store.messages(conversation.id)[-1]
    assert reply.content == "From the cloud, ada@example.com."
    assert (reply.route, reply.provider, reply.model) == ("cloud", "loopback", "loopback-model")
    assert reply.escalation_reason == f"escalated: {REFUSED}; sent this message only"
    [egress] = store.egress()
    [sent] = loopback_cloud.bodies
    host = loopback_cloud.base_url.split("//")[1].split("/")[0]
    assert (egress.conversation_id, egress.host, egress.payload) == (conversation.id, host, sent)
    assert "[EMAIL_1]" in sent and "ada@example.com" not in sent
    assert egress.bytes_sent > len(sent) and dict(egress.redactions) == {"EMAIL": 1}
    assert result.notices == [f"local draft withdrawn: escalating to loopback: {REFUSED}"]
    assert isinstance(events[-1], TurnDone) and events[-1].route == "cloud"


def test_a_failing_cloud_keeps_the_local_answer_and_says_so(store, nano_engine, loopback_cloud, cloud_settings):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    loopback_cloud.status = 500
    result = TurnRunner(store, cloud_router(nano_engine, cloud_settings, "auto")).run(
        conversation.id, "What is the capital of France?"
    )
    reply = store.messages(conversation.id)[-1]
    assert (reply.route, reply.content, reply.status) == ("local", REFUSAL, "complete")
    assert reply.escalation_reason == f"kept local: {REFUSED}, but the cloud failed"
    assert any(note.startswith("The cloud failed") for note in result.notices)
    assert loopback_cloud.bodies  # it was tried; what left is on the ledger
    assert [e.payload for e in store.egress()] == loopback_cloud.bodies[:1]


def test_the_router_sees_the_history_and_the_conversation_policy(store, local_router):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    router = Spy(local_router)
    runner = TurnRunner(store, router)
    first = runner.run(conversation.id, "hello")
    runner.run(conversation.id, "/cloud What is Tandem?")
    turn = router.turns[-1]
    assert [m["content"] for m in turn.messages] == ["hello", first.reply, "What is Tandem?"]
    assert turn.policy.cloud_opt_in is True and turn.force == "cloud"


def test_a_failing_turn_keeps_the_question_and_marks_the_reply_error(store, nano_engine):
    from app.settings import UserSettings

    conversation = store.create_conversation(title="t")
    router = default_router_factory(FailsAfterFirstToken(nano_engine), UserSettings(), offline=False)
    with pytest.raises(TurnError, match="device lost.*your message is saved"):
        TurnRunner(store, router).run(conversation.id, "What is Tandem?")
    user, reply = store.messages(conversation.id)
    assert user.content == "What is Tandem?"
    assert reply.status == "error" and reply.content and reply.content in "I can help with Tandem"


class DeviceLost(EngineError):
    """An engine error defined outside engine/: its type, not its module, says it speaks to the user."""


class FailsWithAnEngineError(FailsAfterFirstToken):
    def generate(self, request, cancel=None):
        yield next(iter(self._engine.generate(request, cancel)))
        raise DeviceLost("The GPU went away; pick the CPU backend in settings (Ctrl+S).")


def test_the_users_message_is_chosen_by_the_errors_type_not_its_module(store, nano_engine):
    from app.settings import UserSettings

    conversation = store.create_conversation(title="t")
    router = default_router_factory(FailsWithAnEngineError(nano_engine), UserSettings(), offline=False)
    with pytest.raises(TurnError) as raised:
        TurnRunner(store, router).run(conversation.id, "What is Tandem?")
    assert str(raised.value) == "The GPU went away; pick the CPU backend in settings (Ctrl+S)."
    assert isinstance(raised.value, AppError) and store.messages(conversation.id)[-1].status == "error"


def test_every_error_app_raises_on_purpose_shares_one_base():
    from app.local_models import ModelUnavailable, UnknownModelName
    from app.models.catalog import ModelNameError, UnknownModel
    from app.models.hub import PullError
    from app.models.install import InstallError
    from app.models.transfer import TransferError
    from app.server.protocol import ApiError
    from app.settings import SettingsError
    from app.store import StoreError

    for error in (ModelUnavailable, UnknownModelName, ModelNameError, UnknownModel, PullError, InstallError,
                  TransferError, ApiError, SettingsError, StoreError, TurnError):
        assert issubclass(error, AppError), error
    assert issubclass(UnknownModelName, LookupError) and issubclass(SettingsError, ValueError)  # as before


def test_a_cancelled_turn_is_stored_as_interrupted(store, local_router):
    conversation = store.create_conversation(title="t")
    cancel = threading.Event()
    cancel.set()
    result = TurnRunner(store, local_router).run(conversation.id, "Explain local-first software in detail.", cancel=cancel)
    assert result.status == "interrupted"
    assert store.messages(conversation.id)[-1].status == "interrupted"


def test_approve_is_asked_with_the_preview_and_its_answer_decides(store, nano_engine, loopback_cloud, cloud_settings):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    asked: list[Preview] = []
    result = TurnRunner(store, cloud_router(nano_engine, cloud_settings, "ask")).run(
        conversation.id, "What is the capital of France?", approve=lambda p: asked.append(p) or False
    )
    [preview] = asked
    host = loopback_cloud.base_url.split("//")[1].split("/")[0]
    assert (preview.provider, preview.host) == ("loopback", host)
    assert json.loads(preview.payload)["messages"][-1]["content"] == "What is the capital of France?"
    assert (result.route, result.reply) == ("local", REFUSAL)
    assert store.egress() == [] and loopback_cloud.bodies == []


def test_a_new_conversation_is_titled_from_its_first_message(store, local_router):
    conversation = store.create_conversation(title=NEW_TITLE)
    TurnRunner(store, local_router).run(conversation.id, "How do I reverse a list?\nmore")
    assert store.get_conversation(conversation.id).title == "How do I reverse a list?"


def test_a_typed_prefix_is_read_once_and_kept_out_of_the_title_and_the_store(store, local_router):
    """The CLI's path (`tandem ask "/local ..."`): the runner titles the new conversation itself."""
    conversation = store.create_conversation(title=NEW_TITLE)
    spy = Spy(local_router)
    TurnRunner(store, spy).run(conversation.id, "/local How do I reverse a list?")
    assert store.get_conversation(conversation.id).title == "How do I reverse a list?"
    assert store.messages(conversation.id)[0].content == "How do I reverse a list?"
    [turn] = spy.turns
    assert turn.force == "local" and turn.messages[-1]["content"] == "How do I reverse a list?"


def test_an_empty_forced_message_is_refused(store, local_router):
    conversation = store.create_conversation(title="t")
    with pytest.raises(TurnError, match="empty"):
        TurnRunner(store, local_router).run(conversation.id, "/cloud")
    assert store.messages(conversation.id) == []


def test_title_from_cuts_at_a_word():
    assert title_from("word " * 30).endswith("…") and len(title_from("word " * 30)) <= 49
    assert title_from("  ") == NEW_TITLE


def test_turn_done_is_the_last_event_the_runner_passes_on(store, local_router):
    conversation = store.create_conversation(title="t")
    events: list = []
    TurnRunner(store, local_router).run(conversation.id, "hello", on_event=events.append)
    assert isinstance(events[-1], TurnDone)


def test_the_default_router_escalates_to_the_chosen_provider_at_the_chosen_threshold():
    from app.settings import ProviderSettings, UserSettings
    from app.turns import default_router_factory

    settings = UserSettings(
        providers=(ProviderSettings("onprem", "openai-compatible", "http://127.0.0.1:9/v1", "llama-70b"),),
        provider="onprem",
        escalate_below=0.3,
    )
    router = default_router_factory(None, settings, offline=False)
    assert (router.provider.name, router.cloud_model) == ("onprem", "llama-70b")
    assert router.threshold.risk == pytest.approx(0.7)
    assert router.settings.mode == "ask"
    assert default_router_factory(None, settings, offline=True).settings.mode == "offline"


class RequestsSeen(KeptOpen):
    """The real engine, noting each GenerationRequest the router gives it."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.requests = []

    def generate(self, request, cancel=None):
        self.requests.append(request)
        return self._engine.generate(request, cancel)


def test_the_local_model_samples_with_its_own_settings_unless_the_user_overrode_them(store, nano_engine):
    from app.settings import SamplingOverride, UserSettings
    from engine.api import SETTING_NAMES

    seen = RequestsSeen(nano_engine)
    conversation = store.create_conversation(title="t")

    def ask(settings):
        TurnRunner(store, default_router_factory(seen, settings, offline=False)).run(conversation.id, "What is Tandem?")
        return seen.requests[-1]

    assert all(getattr(ask(UserSettings()), name) is None for name in SETTING_NAMES)  # the model decides
    elsewhere = UserSettings().with_sampling("another-model", SamplingOverride(temperature=1.5))
    assert ask(elsewhere).temperature is None
    mine = elsewhere.with_sampling(nano_engine.info.model_id, SamplingOverride(temperature=0.0, top_k=5))
    request = ask(mine)
    assert (request.temperature, request.top_k, request.top_p, request.min_p) == (0.0, 5, None, None)
def test_the_default_router_opens_its_cloud_provider_only_when_a_turn_needs_it():
    """A local answer never pays for the HTTP stack and the keyring (a second of start-up)."""
    from app.settings import ProviderSettings, UserSettings

    settings = UserSettings(
        providers=(ProviderSettings("onprem", "openai-compatible", "http://127.0.0.1:9/v1", "llama-70b"),),
        provider="onprem",
    )
    provider = default_router_factory(None, settings, offline=False).provider
    assert provider.name == "onprem" and not provider.opened
    assert provider.host == "127.0.0.1:9"
    assert provider.opened
