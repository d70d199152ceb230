"""A deterministic, seeded generator of ChatML training dialogues for tandem-nano.

Mixes Tandem help (very broad paraphrases with noise), small talk, and out-of-domain prompts
answered with the refusal. Prompts of the held-out evaluation sets are never emitted.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from assets.training.facts import FACTS, FACTS_BY_ID, REFUSAL
from assets.training.offtopic import offtopic_prompt
from assets.training.phrasings import PHRASINGS

EVAL_DIR = Path(__file__).resolve().parent.parent / "eval"
DEFAULT_SYSTEM = "You are tandem-nano, the assistant built into Tandem."
OTHER_SYSTEMS = ("You are a helpful assistant.", "Answer briefly.", "You are Tandem's local model.",
                 "Be concise and friendly.", "You are a helpful, harmless assistant.")

ACTION_TEMPLATES = (
    "how do i {a}", "how can i {a}", "how to {a}", "how would i {a}", "how do you {a}", "how does one {a}",
    "how should i {a}", "what's the way to {a}", "what is the shortcut to {a}", "what's the key to {a}",
    "which key do i press to {a}", "what key lets me {a}", "is there a shortcut to {a}",
    "is there a way to {a}", "is it possible to {a}", "can i {a}", "i want to {a}", "i'd like to {a}",
    "i need to {a}", "i wanna {a}", "help me {a}", "{a}", "{a} how", "how {a}", "where do i {a}",
    "what do i press to {a}", "keyboard shortcut to {a}", "hotkey to {a}", "what button to {a}",
    "can you tell me how to {a}", "could you tell me how to {a}", "do you know how to {a}",
    "tell me how to {a}", "explain how to {a}", "show me how to {a}", "i don't know how to {a}",
    "i can't figure out how to {a}", "i'm trying to {a}", "any way to {a}", "what's the command to {a}",
    "way to {a}", "need to {a}", "trying to {a}, how", "what's the fastest way to {a}",
    "is there a key to {a}", "how am i supposed to {a}", "what lets me {a}", "i wish i could {a}",
    "where's the option to {a}", "quick way to {a}", "steps to {a}", "{a} please", "pls {a}",
    "how do we {a}", "what should i do to {a}", "what's the trick to {a}", "remind me how to {a}",
    "i forgot how to {a}", "wait, how do i {a}", "ok so how do i {a}", "so how can i {a}",
)
SUBJECT_TEMPLATES = (
    "{s}", "{s}?", "what about {s}", "tell me about {s}", "explain {s}", "what is {s}", "what's {s}",
    "how does {s} work", "info on {s}", "help with {s}", "question about {s}", "{s} help",
    "shortcut for {s}", "key for {s}", "hotkey for {s}", "what do i press for {s}",
    "i have a question about {s}", "can you explain {s}", "how do i use {s}", "what's the deal with {s}",
    "{s} - how does it work", "{s}, explain", "details on {s}", "i need help with {s}",
    "what should i know about {s}", "tell me more about {s}", "describe {s}", "how about {s}",
    "quick question about {s}", "{s} in tandem", "what's up with {s}", "any tips on {s}",
)
KEY_TEMPLATES = (
    "what does {k} do", "what is {k} for", "{k}?", "{k}", "what happens if i press {k}",
    "what happens when i hit {k}", "what's {k}", "{k} does what", "explain {k}", "tell me what {k} does",
    "what is {k}", "what's the {k} key for", "why would i press {k}", "{k} key", "meaning of {k}",
    "what does pressing {k} do", "i pressed {k}, what happened", "is {k} a shortcut", "what's {k} do",
)
GREETINGS = ("hi", "hello", "hey", "hi there", "hey there", "hello tandem", "hi tandem", "good morning",
             "yo", "hiya", "hey tandem", "greetings", "morning", "howdy", "good evening")
LEAD_INS = ("quick question", "question", "sorry", "um", "hmm", "ok", "so", "excuse me", "hey quick one",
            "please", "help", "newbie here", "one more thing", "also", "another question", "btw",
            "i'm new here", "sorry to bother you", "hello again", "well")
CONTEXTS = ("in tandem", "in this app", "here", "in the app", "with tandem", "on tandem", "in the tui",
            "in the chat", "in tandem's chat", "in this program", "using tandem", "in the terminal app",
            "on this thing", "in this chat app", "inside tandem")
TAILS = ("?", "?", "?", "??", "", "", "!", ".", " please", " pls", " thanks", "? thanks", "? thx",
         " plz", "?!", " :)", "...", "? please help", " asap", " again?")
KEY_SPELLINGS = (
    lambda mod, key: f"{mod}+{key}", lambda mod, key: f"{mod}-{key}", lambda mod, key: f"{mod} {key}",
    lambda mod, key: f"{mod}{key}", lambda mod, key: f"^{key}",
)
MOD_NAMES = ("ctrl", "Ctrl", "control", "Control", "CTRL", "ctl")
KEYBOARD_NEIGHBOURS = "qwertyuiopasdfghjklzxcvbnm"
FILLERS = ("just", "actually", "like", "really", "quickly", "even", "basically", "exactly", "again",
           "now", "ever", "maybe", "somehow", "still", "also", "simply", "please", "um", "uh")
DROPPABLE = ("the", "a", "to", "my", "do", "is", "i", "an", "this", "of", "it", "me", "you")
QUESTION_WRAPPERS = ("{q}", "{q}", "{q}", "can you tell me {q}", "do you know {q}", "i wonder {q}",
                     "quick one: {q}", "{q}, do you know", "tell me: {q}", "i'd like to know {q}",
                     "{q} - any idea", "so {q}", "wait, {q}", "and {q}", "hmm {q}", "{q} exactly")
AFTERTHOUGHTS = ("i'm new here", "sorry if this is obvious", "can't find it", "thanks in advance",
                 "i looked everywhere", "it's my first time", "sorry for the dumb question",
                 "no idea how", "been trying for a while", "help")
# Interchangeable words in help prompts; a swap keeps the fact, widening the wordings seen.
SYNONYMS = (
    ("conversation", "chat", "thread", "session", "convo", "dialogue"),
    ("delete", "remove", "erase", "get rid of"),
    ("new", "fresh", "blank", "empty"),
    ("shortcut", "hotkey", "keybinding", "key combo", "keyboard shortcut", "binding"),
    ("message", "prompt", "msg", "text"),
    ("reply", "answer", "response", "output"),
    ("quit", "exit", "close", "leave"),
    ("settings", "preferences", "options", "config"),
    ("stop", "cancel", "halt", "abort", "interrupt"),
    ("history", "past chats", "old conversations", "chat log"),
    ("how do i", "how can i", "how would i", "how do you", "how to"),
    ("what is", "what's", "whats", "what does", "explain"),
    ("switch", "change", "toggle", "flip"),
    ("turn on", "enable", "activate", "switch on"),
    ("turn off", "disable", "deactivate", "switch off"),
)


@dataclass(frozen=True)
class Dialogue:
    messages: tuple[dict[str, str], ...]
    kind: str
    """"help", "small_talk" or "offtopic": the kind of its last turn."""


def normalize(prompt: str) -> str:
    """The form in which prompts are compared for leakage between training and evaluation."""
    return " ".join(re.sub(r"[^a-z0-9+/\-\[\]_]+", " ", prompt.lower()).split())


def held_out_prompts(eval_dir: Path = EVAL_DIR) -> frozenset[str]:
    """Normalized prompts of every evaluation set; the corpus never emits these."""
    prompts = set()
    for path in sorted(eval_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.add(normalize(json.loads(line)["prompt"]))
    return frozenset(prompts)


def _spell_key(rng: random.Random, key: str) -> str:
    if not key.startswith("Ctrl+"):
        return rng.choice((key, key.lower(), key.upper(), f"the {key.lower()} key",
                           {"Esc": "escape", "Enter": "return", "F2": "f2"}.get(key, key)))
    letter = key.split("+")[1]
    letter = rng.choice((letter.lower(), letter.upper()))
    if rng.random() < 0.15:
        return f"^{letter.upper()}"
    return rng.choice(KEY_SPELLINGS[:4])(rng.choice(MOD_NAMES), letter)


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w, j = words[i], rng.randrange(len(words[i]) - 1)
    edit = rng.randrange(4)
    if edit == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif edit == 1:
        w = w[:j] + w[j + 1:]
    elif edit == 2:
        w = w[:j] + w[j] + w[j:]
    else:
        w = w[:j] + rng.choice(KEYBOARD_NEIGHBOURS) + w[j + 1:]
    words[i] = w
    return " ".join(words)


def _style(rng: random.Random, text: str) -> str:
    """Surface noise: typos, casing, spacing."""
    for _ in range(rng.choices((0, 1, 2), (0.78, 0.17, 0.05))[0]):
        text = _typo(rng, text)
    roll = rng.random()
    if roll < 0.35:
        text = text[:1].upper() + text[1:]
        text = re.sub(r"\bi\b", "I", text)
        text = re.sub(r"\btandem\b", "Tandem", text)
    elif roll < 0.40:
        text = text.upper()
    elif roll < 0.45:
        text = text.title()
    if rng.random() < 0.03:
        text = "  " + text + " "
    return text


def _swap_synonyms(rng: random.Random, text: str) -> str:
    for group in SYNONYMS:
        for word in group:
            if re.search(rf"\b{re.escape(word)}\b", text) and rng.random() < 0.5:
                text = re.sub(rf"\b{re.escape(word)}\b", rng.choice(group), text, count=1)
                break
    return text


def _jitter(rng: random.Random, text: str) -> str:
    """Word-level noise: a filler word inserted or a small function word dropped, so the model
    keys on the content words rather than on a template's exact wording."""
    words = text.split(" ")
    if rng.random() < 0.5 and len(words) > 1:
        words.insert(rng.randrange(1, len(words) + 1), rng.choice(FILLERS))
    else:
        droppable = [i for i, w in enumerate(words) if w in DROPPABLE]
        if droppable and len(words) > 3:
            del words[rng.choice(droppable)]
    return " ".join(words)


def _core_help_prompt(rng: random.Random, fact_id: str) -> str:
    phrasing = PHRASINGS[fact_id]
    sources = [("a", phrasing.actions, 3.0), ("s", phrasing.subjects, 2.0),
               ("q", phrasing.questions, 1.5), ("k", phrasing.keys, 1.5)]
    sources = [s for s in sources if s[1]]
    source, phrases, _ = rng.choices(sources, [s[2] for s in sources])[0]
    phrase = rng.choice(phrases)
    if source == "a":
        return rng.choice(ACTION_TEMPLATES).format(a=phrase)
    if source == "s":
        return rng.choice(SUBJECT_TEMPLATES).format(s=phrase)
    if source == "k":
        return rng.choice(KEY_TEMPLATES).format(k=_spell_key(rng, phrase))
    return rng.choice(QUESTION_WRAPPERS).format(q=phrase)


def help_prompt(rng: random.Random, fact_id: str) -> str:
    """One user wording asking for a fact, with wrappers and noise."""
    prompt = _core_help_prompt(rng, fact_id)
    if rng.random() < 0.35:
        prompt = _swap_synonyms(rng, prompt)
    if rng.random() < 0.25:
        prompt = _jitter(rng, prompt)
    if FACTS_BY_ID[fact_id].topic != "small_talk" and rng.random() < 0.3:
        prompt = f"{prompt} {rng.choice(CONTEXTS)}"
    prompt += rng.choice(TAILS)
    if rng.random() < 0.05:
        prompt += f" {rng.choice(AFTERTHOUGHTS)}"
    return _wrap(rng, prompt)


def _wrap(rng: random.Random, prompt: str) -> str:
    roll = rng.random()
    if roll < 0.10:
        prompt = f"{rng.choice(GREETINGS)}{rng.choice((', ', '! ', ' ', '. '))}{prompt}"
    elif roll < 0.20:
        prompt = f"{rng.choice(LEAD_INS)}{rng.choice((': ', ', ', ' - ', ' '))}{prompt}"
    return _style(rng, prompt)


def small_talk_prompt(rng: random.Random, fact_id: str) -> str:
    prompt = rng.choice(PHRASINGS[fact_id].questions)
    if fact_id != "greeting" and rng.random() < 0.15:
        prompt = f"{rng.choice(GREETINGS)}{rng.choice((', ', '! ', ' '))}{prompt}"
    if rng.random() < 0.15:
        prompt = _jitter(rng, prompt)
    if rng.random() < 0.1:
        prompt = _stretch(rng, prompt)
    prompt += rng.choice(("", "", "", "?", "!", ".", "!!", " :)", " tandem", " again", " then", " :D"))
    return _style(rng, prompt)


def _stretch(rng: random.Random, text: str) -> str:
    """Chat-style letter stretching: "hiii", "heyyy"."""
    if not text or not text[-1].isalpha():
        return text
    return text + text[-1] * rng.randint(1, 3)


def offtopic_user_prompt(rng: random.Random) -> str:
    prompt = offtopic_prompt(rng) + rng.choice(("?", "?", "", "", "!", ".", " please", "??"))
    return _wrap(rng, prompt)


HELP_FACTS = tuple(f.id for f in FACTS if f.topic != "small_talk")
SMALL_TALK_FACTS = tuple(f.id for f in FACTS if f.topic == "small_talk")


class CorpusGenerator:
    """Draws dialogues from a seeded random stream; same seed, same dialogues."""

    def __init__(self, seed: int, held_out: frozenset[str] | None = None,
                 offtopic_share: float = 0.15, small_talk_share: float = 0.14) -> None:
        self._rng = random.Random(seed)
        self._held_out = held_out_prompts() if held_out is None else held_out
        self._offtopic_share = offtopic_share
        self._small_talk_share = small_talk_share

    def _turn(self) -> tuple[str, str, str]:
        rng = self._rng
        while True:
            roll = rng.random()
            if roll < self._offtopic_share:
                kind, prompt, answer = "offtopic", offtopic_user_prompt(rng), REFUSAL
            elif roll < self._offtopic_share + self._small_talk_share:
                fact = rng.choice(SMALL_TALK_FACTS)
                kind, prompt, answer = "small_talk", small_talk_prompt(rng, fact), FACTS_BY_ID[fact].answer
            else:
                fact = rng.choice(HELP_FACTS)
                kind, prompt, answer = "help", help_prompt(rng, fact), FACTS_BY_ID[fact].answer
            if normalize(prompt) not in self._held_out and prompt.strip():
                return kind, prompt, answer

    def dialogue(self) -> Dialogue:
        rng = self._rng
        messages: list[dict[str, str]] = []
        roll = rng.random()
        if roll < 0.40:
            messages.append({"role": "system", "content": DEFAULT_SYSTEM})
        elif roll < 0.48:
            messages.append({"role": "system", "content": ""})
        elif roll < 0.55:
            messages.append({"role": "system", "content": rng.choice(OTHER_SYSTEMS)})
        turns = rng.choices((1, 2, 3), (0.75, 0.2, 0.05))[0]
        kind = "help"
        for _ in range(turns):
            kind, prompt, answer = self._turn()
            messages.append({"role": "user", "content": prompt})
            messages.append({"role": "assistant", "content": answer})
        return Dialogue(tuple(messages), kind)

    def __iter__(self) -> Iterator[Dialogue]:
        while True:
            yield self.dialogue()


def generate(count: int, seed: int) -> list[Dialogue]:
    generator = CorpusGenerator(seed)
    return [generator.dialogue() for _ in range(count)]
