"""Issue 13, a newcomer's first hour: the TUI faults it found, each pinned by the item it names."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_helpers import SIZE

from app.tui.app import TandemApp
from app.tui.widgets.prompt import PromptInput

pytestmark = pytest.mark.anyio

PASTE = "\x1b[200~A \x1b[0m \x0f B\x07\x1b[201~"


@pytest.mark.parametrize("chunk", [len(PASTE), 1, 3])
def test_keys_inside_a_bracketed_paste_are_one_paste_in_order(chunk, db_path):
    """Item 1: Textual replayed an ESC inside a paste, and what followed it (a ^O), as key presses
    ahead of the paste. The driver's parser must yield one Paste, its text in order, and no key."""
    TandemApp(db_path)  # installs the parser the terminal drivers use
    from textual.drivers import linux_driver

    parser = linux_driver.XTermParser(False)
    tokens = [t for i in range(0, len(PASTE), chunk) for t in parser.feed(PASTE[i : i + chunk])]
    assert [type(t).__name__ for t in tokens] == ["Paste"]
    assert tokens[0].text == "A \u241b[0m \x0f B\x07"
    after = list(parser.feed("x"))  # typing after the paste is keys again
    assert [getattr(t, "key", None) for t in after] == ["x"]


async def test_a_paste_shows_its_control_characters_and_changes_no_setting(make_app, store):
    """Item 1: control characters in a paste land in the prompt as visible symbols, in order,
    and neither the cloud opt-in nor the privacy mode moves."""
    from textual import events

    conversation = store.create_conversation(title="mine")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        prompt = app.chat.query_one(PromptInput)
        # As the driver delivers it: to the app, which hands it to the focused widget.
        app.post_message(events.Paste("A \x1b[0m \x0f B\x07\r\nC"))
        await pilot.pause()
        assert prompt.text == "A \u241b[0m \u240f B\u2407\nC"
        assert not store.get_conversation(conversation.id).cloud_opt_in
        assert app.settings.mode == "ask"


async def test_one_ctrl_g_from_ask_does_not_reach_auto(make_app, store):
    """Item 2: from the default ask, Ctrl+G asks before auto; Enter (on Cancel) or Esc moves on
    to offline, towards privacy; stepping out of auto needs no confirmation."""
    from app.settings import load_settings
    from app.tui.screens.confirm import ConfirmScreen

    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.press("ctrl+g")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.settings.mode == "ask" and load_settings(store).mode == "ask"
        await pilot.press("enter")
        assert app.settings.mode == "offline"
        await pilot.press("ctrl+g")  # offline -> ask: towards the cloud, but ask still asks
        assert app.settings.mode == "ask" and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+g", "escape")
        assert app.settings.mode == "offline"
        await pilot.press("ctrl+g", "ctrl+g", "y")
        assert app.settings.mode == "auto" and load_settings(store).mode == "auto"
        await pilot.press("ctrl+g")
        assert app.settings.mode == "offline" and not isinstance(app.screen, ConfirmScreen)


REPO_ROOT = Path(__file__).resolve().parents[2]


def on_a_terminal(args: list[str], answer: bytes | None, timeout: float = 300) -> tuple[int, str]:
    """Run `tandem ARGS` with a pseudo-terminal as its controlling terminal (so /dev/tty opens, as
    in a real one); type `answer` at the first [y/N]. Returns the exit code and all it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes tandem at once
        os.chdir(REPO_ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "app", *args])
    output, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"tandem did not finish on the terminal; it printed {output!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if answer is not None and not answered and b"[y/N]" in output:
                os.write(fd, answer + b"\r")
                answered = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", errors="replace")


def test_ask_cloud_in_ask_mode_can_be_approved_on_a_terminal(cloud_settings, loopback_cloud):
    """Item 5: /dev/tty was opened "r+" in text mode, which Python refuses on a terminal, so
    `tandem ask --cloud` could never be approved. Typing y at the prompt must send it."""
    code, printed = on_a_terminal(["ask", "--cloud", "Write to me today"], b"y")
    assert code == 0, printed
    assert "[y/N]" in printed and "needs a terminal" not in printed
    assert len(loopback_cloud.bodies) == 1
    assert "☁ cloud" in printed and "I will write to" in printed


def test_ask_without_a_terminal_does_not_say_declined(cloud_settings, loopback_cloud):
    """Item 5: with no terminal to ask on, the user read "you declined"; they were never asked."""
    done = subprocess.run(
        [sys.executable, "-m", "app", "ask", "--cloud", "Write to me today"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot open
    )
    assert done.returncode == 0, done.stderr
    assert "needs a terminal" in done.stderr and "declined" not in done.stderr
    assert loopback_cloud.bodies == []


def _preview():
    from offload.outgoing import OutgoingRequest
    from offload.router import Preview

    return Preview(OutgoingRequest("loopback", "127.0.0.1:9", '{"messages": [{"role": "user", "content": "hi [EMAIL_1]"}]}'))


async def test_the_approval_dialog_says_how_to_send(make_app):
    """Item 6: the dialog starts on "Keep local" and its hint named only Esc, so the natural Enter
    declined. The hint must name every key it takes; Ctrl+S sends, Enter presses the focused button."""
    from app.tui.screens.approve import ApproveScreen

    from offload.router import Approval

    async with make_app().run_test(size=SIZE) as pilot:
        answers: list[Approval | None] = []
        await pilot.app.push_screen(ApproveScreen(_preview()), answers.append)
        await pilot.pause()
        hint = str(pilot.app.screen.query_one("#hint").render())
        for key in ("Ctrl+S", "Esc", "Tab", "Enter"):
            assert key in hint
        await pilot.press("ctrl+s")
        assert answers == [Approval.SEND]
        await pilot.app.push_screen(ApproveScreen(_preview()), answers.append)
        await pilot.pause()
        assert pilot.app.screen.focused.id == "keep"  # the cancelling choice stays the default
        await pilot.press("enter")
        assert answers == [Approval.SEND, Approval.KEEP_LOCAL]


async def test_the_preview_and_the_ledger_count_the_same_bytes(make_app, store):
    """Item 13: the preview said "913 bytes" and the ledger 1185 for the same request (headers
    included). Both now show the request body under that name; the ledger adds the wire figure."""
    from app.tui.screens.approve import ApproveScreen
    from app.tui.screens.egress import EgressScreen
    from offload.events import Egress
    from offload.outgoing import Exchange

    preview = _preview()
    body = len(preview.payload.encode())
    conversation = store.create_conversation(title="t")
    store.record_egress(Egress(Exchange(preview.request, body + 250, 99)), conversation_id=conversation.id)
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.app.push_screen(ApproveScreen(preview))
        await pilot.pause()
        assert f"The request body, exactly as below: {body} bytes" in str(pilot.app.screen.query_one("#size").render())
        pilot.app.screen.dismiss(False)
        await pilot.app.push_screen(EgressScreen(store.egress()))
        await pilot.pause()
        row = pilot.app.screen.query_one("#ledger").get_row_at(0)
        assert row[4:6] == [str(body), str(body + 250)]
        assert f"{body} bytes of request body" in str(pilot.app.screen.query_one("#summary").render())


def test_a_cloud_reply_cut_off_keeps_its_route_and_provider(store, nano_engine, cloud_settings, loopback_cloud):
    """Item 8: after kill -9 during a cloud stream, the recovered partial reply read "⌂ local ·
    interrupted": route and provider were written only when the reply finished. They must be on
    the row from the cloud's first token, and survive an interrupted end."""
    from dataclasses import replace

    from app.route_labels import describe_reply
    from app.turns import TurnRunner, default_router_factory
    from offload.events import Token

    settings = replace(cloud_settings, mode="auto")
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    runner = TurnRunner(store, default_router_factory(nano_engine, settings, False))
    seen_mid_stream = []

    def crash_at_the_first_cloud_token(event) -> None:
        if isinstance(event, Token) and event.route == "cloud":
            reply = store.messages(conversation.id)[-1]  # what a kill -9 now would leave behind
            seen_mid_stream.append((reply.status, reply.route, reply.provider, reply.model))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(conversation.id, "Write to me", force="cloud", on_event=crash_at_the_first_cloud_token)
    assert seen_mid_stream == [("partial", "cloud", "loopback", "loopback-model")]
    reply = store.messages(conversation.id)[-1]
    assert (reply.status, reply.route, reply.provider) == ("interrupted", "cloud", "loopback")
    label = describe_reply(route=reply.route, provider=reply.provider, model=reply.model,
                           confidence=reply.confidence, tok_s=reply.tok_s, reason=reply.escalation_reason,
                           status=reply.status)
    assert label.startswith("☁ cloud · loopback") and "interrupted" in label


async def test_text_and_enter_arriving_in_one_write_are_sent(nano_app):
    """Item 9: `tmux send-keys "text" Enter`, or a paste ending in a newline, delivers the keys in
    one burst; the Enter binding ran before the prompt had taken the text, so nothing was sent."""
    from textual import events

    from app_helpers import until_ready

    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await until_ready(pilot)
        for char in "hi there":  # one burst: no pause between the keys, as the driver posts them
            app.post_message(events.Key("space" if char == " " else char, char))
        app.post_message(events.Key("enter", "\r"))
        for _ in range(500):  # wait on the store, not a fixed time
            if app.chat.conversation_id and app.store.messages(app.chat.conversation_id):
                break
            await pilot.pause(0.01)
        assert [m.content for m in app.store.messages(app.chat.conversation_id)][:1] == ["hi there"]
        assert app.chat.query_one(PromptInput).text == ""


@pytest.mark.parametrize("how", ["argv", "stdin"])
def test_a_prompt_that_is_not_utf8_is_stored_and_answered(how, store):
    """Item 10: invalid UTF-8 or a lone surrogate in the prompt crashed `tandem ask` with a
    UnicodeEncodeError traceback. What cannot be encoded is replaced; the turn is stored and answered."""
    question = b"What is caf\xe9 \xff\xfe Tandem?"
    args = [sys.executable.encode(), b"-m", b"app", b"ask", b"--local", b"--json"]
    done = subprocess.run(
        [*args, question] if how == "argv" else [*args, b"-"],
        input=b"" if how == "argv" else question, capture_output=True, cwd=REPO_ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    [conversation] = store.list_conversations()
    user = store.messages(conversation.id)[0]
    assert user.content == "What is caf\ufffd \ufffd\ufffd Tandem?"
    assert store.messages(conversation.id)[1].status == "complete"


def test_as_text_replaces_lone_surrogates_and_restores_escaped_bytes():
    """Item 10, the helper: argv that Python decoded with surrogateescape gets its bytes back."""
    from app.commands.ask import as_text

    assert as_text("caf\udcc3\udca9") == "café"  # UTF-8 bytes of é, escaped by a non-UTF-8 locale
    assert as_text("a\ud800b") == "a\ufffd\ufffd\ufffdb"
    assert as_text("plain") == "plain"


def test_history_list_and_search_print_no_raw_control_characters(store, db_path):
    """Item 11: `tandem history list` and `search` printed stored NUL, BEL and ESC[31m raw, which
    the terminal obeyed. They come out as visible symbols."""
    conversation = store.create_conversation(title="bell\x07 nul\x00 \x1b[31mred")
    store.add_message(conversation.id, "user", "zebra \x1b[2J\x07 crossing \x9b31m")
    store.close()
    for args in (["history", "list"], ["history", "search", "zebra"]):
        done = subprocess.run([sys.executable, "-m", "app", "--db", str(db_path), *args],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        assert not any(c in done.stdout for c in "\x00\x07\x1b\x9b"), repr(done.stdout)
        assert "\u241b[31mred" in done.stdout
    assert "«zebra» \u241b[2J\u2407 crossing \\x9b31m" in done.stdout


def test_the_markdown_export_says_escalated_only_for_cloud_replies(store):
    """Item 12: every assistant reply was labelled "escalated: …" in the Markdown export, local
    ones included ("escalated: the local model is confident")."""
    conversation = store.create_conversation(title="t")
    store.add_message(conversation.id, "user", "q")
    store.add_message(conversation.id, "assistant", "local answer", route="local", model="tandem-nano",
                      escalation_reason="the local model is confident")
    store.add_message(conversation.id, "assistant", "cloud answer", route="cloud", model="gpt",
                      escalation_reason="escalated: low confidence (0.20 < 0.50)")
    markdown = store.export_markdown(conversation.id)
    local_heading = next(line for line in markdown.splitlines() if "tandem-nano" in line)
    cloud_heading = next(line for line in markdown.splitlines() if "· gpt" in line)
    assert "escalated" not in local_heading and local_heading.endswith("the local model is confident")
    assert cloud_heading.endswith("escalated: low confidence (0.20 < 0.50)")


def _as_a_terminal_shows(written: str) -> list[str]:
    """The lines a terminal displays for `written`: \\r returns to the line's start, ESC[K clears
    to its end, other characters overwrite."""
    lines, line, col, i = [], [], 0, 0
    while i < len(written):
        if written.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        char = written[i]
        if char == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif char == "\r":
            col = 0
        else:
            line[col : col + 1] = [char]
            col += 1
        i += 1
    return lines + (["".join(line)] if line else [])


@pytest.mark.parametrize("tty", [True, False])
def test_serve_progress_lines_do_not_print_over_each_other(tty, monkeypatch):
    """Item 14: `tandem serve` printed its progress over itself ("ready: 100%ghts:  85% 72%")."""
    import io

    from app.commands import serve

    class Stderr(io.StringIO):
        def isatty(self) -> bool:  # a terminal, as far as the progress printer can tell
            return tty

    err = Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    for stage, fraction in (("repacking weights", 0.72), ("repacking weights", 0.85), ("ready", 1.0)):
        serve._show_progress(stage, fraction)
    expected = ["repacking weights:  85%", "ready: 100%"] if tty else ["ready: done"]
    assert _as_a_terminal_shows(err.getvalue()) == expected


async def test_the_footer_drops_esc_cancel_once_an_approved_turn_ends(nano_app, store, cloud_settings, loopback_cloud):
    """Item 14: the footer kept "esc Cancel" after an approval flow had ended: nothing asked the
    footer to look at the bindings again when the turn finished."""
    from textual.widgets._footer import FooterKey

    from app.tui.screens.approve import ApproveScreen

    store.create_conversation(title="opted in", cloud_opt_in=True)
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        from app_helpers import until_ready

        await until_ready(pilot)
        await pilot.press(*"/cloud hi", "enter")
        for _ in range(500):
            if isinstance(app.screen, ApproveScreen):
                break
            await pilot.pause(0.02)
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not app.chat.busy and loopback_cloud.bodies
        shown = [key.description for key in app.chat.query(FooterKey)]
        assert "Send" in shown and "Cancel" not in shown


class Recording:
    """The session's real engine, lent and watched: it keeps the messages of every request."""

    def __init__(self, engine) -> None:
        self._engine, self.requests = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, request, cancel=None):
        self.requests.append(list(request.messages))
        return self._engine.generate(request, cancel)


def test_a_conversation_twice_the_window_long_gets_a_local_answer(store, nano_engine):
    """Item 17: a conversation longer than the local context window failed every turn. Its oldest
    turns are left out (the system prompt kept), and the reply says so once."""
    from app.settings import UserSettings
    from app.turns import TurnRunner, default_router_factory

    window = nano_engine.info.context_window
    conversation = store.create_conversation(title="long")
    filler = "Tell me about Tandem and its history, the privacy modes and the keys. " * 3
    while nano_engine.count_prompt_tokens(
        [{"role": m.role, "content": m.content} for m in store.messages(conversation.id)]
    ) < 2 * window:
        store.add_message(conversation.id, "user", filler)
        store.add_message(conversation.id, "assistant", "Tandem answers on your machine first. " * 4)
    engine = Recording(nano_engine)
    runner = TurnRunner(store, default_router_factory(engine, UserSettings(), False))
    result = runner.run(conversation.id, "How do I quit Tandem?", system="Answer briefly.")
    assert result.status == "complete" and result.route == "local" and result.reply.strip()
    assert sum("left out" in notice for notice in result.notices) == 1
    sent = engine.requests[-1]
    assert sent[0] == {"role": "system", "content": "Answer briefly."}
    assert sent[-1] == {"role": "user", "content": "How do I quit Tandem?"}
    assert sent[1]["role"] == "user"  # whole exchanges left out: no reply without its question
    assert nano_engine.count_prompt_tokens(sent) < window
    assert store.messages(conversation.id)[-1].status == "complete"


def _ask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "ask", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, stdin=subprocess.DEVNULL, start_new_session=True)


def test_ask_continue_and_conversation_add_to_an_existing_conversation(store):
    """Item 16: `tandem ask -c` continues the latest conversation, `--conversation ID` a named one,
    as llm users expect; the history they carry reaches the model."""
    first = _ask("--local", "--json", "What is Tandem?")
    assert first.returncode == 0, first.stderr
    conversation_id = json.loads(first.stdout.splitlines()[-1])["conversation_id"]
    again = _ask("-c", "--local", "--json", "How do I quit?")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["conversation_id"] == conversation_id
    named = _ask("--conversation", str(conversation_id), "--local", "--json", "How do I search?")
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout.splitlines()[-1])["conversation_id"] == conversation_id
    assert [m.role for m in store.messages(conversation_id)] == ["user", "assistant"] * 3
    assert len(store.list_conversations()) == 1


def test_ask_conversation_that_does_not_exist_says_so_without_a_traceback(store):
    """Item 16: a wrong id, or -c with no history, is a usage error naming the fix."""
    missing = _ask("--conversation", "999", "hello")
    assert missing.returncode == 2 and "no conversation 999" in missing.stderr and "Traceback" not in missing.stderr
    nothing = _ask("-c", "hello")
    assert nothing.returncode == 2 and "no conversation to continue" in nothing.stderr
    both = _ask("-c", "--conversation", "1", "hello")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_ask_system_reaches_the_model_before_the_question(store, cloud_settings, loopback_cloud):
    """Item 16: `--system TEXT` is the system prompt for the question (seen here in what the
    loopback cloud received, in auto mode)."""
    from dataclasses import replace

    from app.settings import save_settings

    save_settings(store, replace(cloud_settings, mode="auto"))
    done = _ask("--cloud", "--system", "Answer in one line.", "--json", "Write to me")
    assert done.returncode == 0, done.stderr
    [body] = loopback_cloud.bodies
    messages = json.loads(body)["messages"]
    assert messages[0] == {"role": "system", "content": "Answer in one line."}
    assert messages[-1]["role"] == "user" and messages[-1]["content"] == "Write to me"


async def test_keys_list_and_ctrl_k_list_the_same_providers(make_app, store, monkeypatch):
    """Item 15: `tandem keys list` omitted onprem (and any provider the settings add) while Ctrl+K
    listed it. Both show the same rows."""
    from app.settings import ProviderSettings, UserSettings, save_settings
    from app.tui.screens.keys import KeysScreen

    settings = UserSettings()
    settings = UserSettings(providers=(*settings.providers,
                                       ProviderSettings("my-vllm", "openai-compatible", "http://127.0.0.1:9/v1", "m")))
    save_settings(store, settings)
    monkeypatch.setenv("MY_VLLM_API_KEY", "sk-from-env-0123456789")
    listed = subprocess.run([sys.executable, "-m", "app", "keys", "list"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert listed.returncode == 0, listed.stderr
    cli_rows = [tuple(line.split(None, 1)) for line in listed.stdout.splitlines()]
    async with make_app().run_test(size=SIZE) as pilot:
        from app_helpers import until

        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(pilot.app.screen, KeysScreen), "the keys screen")
        table = pilot.app.screen.query_one("#sources")
        tui_rows = [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]
    assert cli_rows == tui_rows
    assert [name for name, _ in cli_rows] == ["openai", "anthropic", "onprem", "my-vllm"]
    assert ("my-vllm", "environment (MY_VLLM_API_KEY)") in cli_rows


async def test_a_named_openai_compatible_provider_is_added_in_settings(make_app, store, loopback_cloud):
    """Item 15: settings offered three fixed providers while the README said to "add an
    OpenAI-compatible provider". A named one (base URL, model, key, timeouts) can be added, and
    the read timeout the error message tells users to raise is a setting."""
    import keyring

    from app.settings import load_settings
    from app.tui.screens.settings import SettingsScreen
    from app.turns import default_router_factory
    from app_helpers import until

    async with make_app().run_test(size=(110, 44)) as pilot:
        app = pilot.app
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen")
        screen = app.screen
        for field, value in (("name", "My VLLM"), ("base_url", loopback_cloud.base_url), ("model", "qwen-7b")):
            screen.query_one(f"#new-{field}").value = value
        screen.query_one("#add-provider").press()
        await until(pilot, lambda: str(screen.query_one("#error").render()), "the name to be refused")
        assert "not a provider name" in str(screen.query_one("#error").render())
        screen.query_one("#new-name").value = "my-vllm"
        screen.query_one("#new-key").value = "sk-vllm-0123456789abcdef"
        screen.query_one("#add-provider").press()
        await until(pilot, lambda: screen.query("#my-vllm-read_timeout"), "the new provider's fields")
        screen.query_one("#provider").value = "my-vllm"
        screen.query_one("#my-vllm-read_timeout").value = "7.5"
        screen.query_one("#save").press()
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen), "the settings to close")
    saved = load_settings(store)
    added = saved.active_provider()
    assert (added.name, added.kind, added.base_url, added.model) == (
        "my-vllm", "openai-compatible", loopback_cloud.base_url, "qwen-7b")
    assert (added.connect_timeout, added.read_timeout) == (5.0, 7.5)
    assert keyring.get_password("tandem", "my-vllm") == "sk-vllm-0123456789abcdef"
    router = default_router_factory(None, saved, offline=False)
    assert router.provider.name == "my-vllm" and router.cloud_model == "qwen-7b"
    assert router.provider.provider()._timeouts.read == 7.5  # what a ReadTimeout's advice now points to
