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
    "could you explain how i can {a}", "would you mind telling me how to {a}", "how might i {a}",
    "what is the procedure to {a}", "please advise how to {a}", "is there any way i can {a}",
    "what's the easiest way to {a}", "does tandem let me {a}", "how do i {a} here", "where can i {a}",
    "what do i need to do to {a}", "what's the keybind to {a}", "how do u {a}", "how 2 {a}",
    "i'd love to {a}", "is there an easy way to {a}", "how would someone {a}", "need help to {a}",
    "i want to {a}, how", "how can you {a}", "what's the keyboard shortcut to {a}", "let me {a}",
    "how does a person {a}", "can tandem {a}", "am i able to {a}", "i would like to {a}",
    "kindly tell me how to {a}", "what key do i hit to {a}", "what do i do to {a}", "how can one {a}",
)
SUBJECT_TEMPLATES = (
    "{s}", "{s}?", "what about {s}", "tell me about {s}", "explain {s}", "what is {s}", "what's {s}",
    "how does {s} work", "info on {s}", "help with {s}", "question about {s}", "{s} help",
    "shortcut for {s}", "key for {s}", "hotkey for {s}", "what do i press for {s}",
    "i have a question about {s}", "can you explain {s}", "how do i use {s}", "what's the deal with {s}",
    "{s} - how does it work", "{s}, explain", "details on {s}", "i need help with {s}",
    "what should i know about {s}", "tell me more about {s}", "describe {s}", "how about {s}",
    "quick question about {s}", "{s} in tandem", "what's up with {s}", "any tips on {s}",
    "anything on {s}", "{s} question", "info about {s}", "can you tell me about {s}",
    "i'm confused about {s}", "i don't understand {s}", "help me understand {s}", "{s}: how?",
    "what's the story with {s}", "a question on {s}", "could you explain {s}", "how do i do {s}",
    "give me the lowdown on {s}", "{s}??", "hmm, {s}", "so, {s}", "about {s}", "re: {s}",
    "what do i need to know about {s}", "how is {s} done", "how does tandem handle {s}",
)
KEY_TEMPLATES = (
    "what does {k} do", "what is {k} for", "{k}?", "{k}", "what happens if i press {k}",
    "what happens when i hit {k}", "what's {k}", "{k} does what", "explain {k}", "tell me what {k} does",
    "what is {k}", "what's the {k} key for", "why would i press {k}", "{k} key", "meaning of {k}",
    "what does pressing {k} do", "i pressed {k}, what happened", "is {k} a shortcut", "what's {k} do",
    "what would {k} do", "what's {k} for", "does {k} do anything", "what does {k} do here",
    "what's the point of {k}", "what does hitting {k} do", "if i press {k} what happens",
    "what's bound to {k}", "what is bound to {k}", "what action is {k}", "i accidentally pressed {k}",
    "what did {k} just do", "what's {k} mapped to", "what does {k} trigger", "purpose of {k}",
    "what is {k} used for", "what's {k} supposed to do", "{k} - what is it", "{k} meaning",
    "what does {k} mean", "what happens with {k}", "and {k}", "and what about {k}",
    "is {k} bound to anything", "what does the {k} shortcut do", "{k} does what exactly",
)
_KEY_PHRASE = re.compile(r"^(the |holding )|( key| shortcut| combo| button| hotkey| keys| keybinding)$")
KEY_TEMPLATES_FOR_PHRASES = tuple(t for t in KEY_TEMPLATES if "the {k}" not in t and "{k} key" not in t)
"""Templates that read well when the key is already a phrase such as "the escape key"."""
KEY_TEMPLATES_FOR_GESTURES = tuple(t for t in KEY_TEMPLATES_FOR_PHRASES
                                   if not re.search(r"press|hit|bound|mapped|meaning|\{k\}$", t))
"""Templates that fit a gesture such as "holding ctrl and pressing e"."""
GREETINGS = ("hi", "hello", "hey", "hi there", "hey there", "hello tandem", "hi tandem", "good morning",
             "yo", "hiya", "hey tandem", "greetings", "morning", "howdy", "good evening", "hey hey",
             "good afternoon", "hello there", "heya", "evening", "sup", "hi again")
LEAD_INS = ("quick question", "question", "sorry", "um", "hmm", "ok", "so", "excuse me", "hey quick one",
            "please", "help", "newbie here", "one more thing", "also", "another question", "btw",
            "i'm new here", "sorry to bother you", "hello again", "well", "right", "quick q",
            "random question", "newbie question", "dumb question", "silly question", "ok next",
            "one thing", "real quick", "hmm ok", "alright", "just wondering", "curious")
CONTEXTS = ("in tandem", "in this app", "here", "in the app", "with tandem", "on tandem", "in the tui",
            "in the chat", "in tandem's chat", "in this program", "using tandem", "in the terminal app",
            "on this thing", "in this chat app", "inside tandem")
TAILS = ("?", "?", "?", "??", "", "", "!", ".", " please", " pls", " thanks", "? thanks", "? thx",
         " plz", "?!", " :)", "...", "? please help", " asap", " again?")
KEY_SPELLINGS = (
    lambda mod, key: f"{mod}+{key}", lambda mod, key: f"{mod}-{key}", lambda mod, key: f"{mod} {key}",
    lambda mod, key: f"{mod}{key}", lambda mod, key: f"{mod} + {key}", lambda mod, key: f"{mod} and {key}",
    lambda mod, key: f"{mod} plus {key}", lambda mod, key: f"holding {mod} and pressing {key}",
)
MOD_NAMES = ("ctrl", "ctrl", "Ctrl", "Ctrl", "control", "Control", "CTRL", "ctl", "Ctl", "CONTROL")
KEY_PHRASES = ("the {k} shortcut", "the {k} combo", "the {k} hotkey", "{k} shortcut", "the {k} keys",
               "the {k} keybinding")
PLAIN_KEY_SPELLINGS = {
    "Esc": ("Esc", "esc", "ESC", "escape", "Escape", "ESCAPE", "the escape key", "the esc key",
            "the esc button", "escape key", "esc key"),
    "Enter": ("Enter", "enter", "ENTER", "return", "Return", "the return key", "the enter key",
              "enter key", "return key", "the enter button"),
    "F2": ("F2", "f2", "the f2 key", "the F2 key", "function key 2", "fn+f2", "fn f2", "F-2",
           "f2 key", "the f2 button"),
}
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
    ("shortcut", "hotkey", "keybinding", "key combo", "keyboard shortcut", "binding", "keybind"),
    ("message", "prompt", "msg", "text"),
    ("reply", "answer", "response", "output"),
    ("quit", "exit", "close", "leave"),
    ("settings", "preferences", "options", "config"),
    ("stop", "cancel", "halt", "abort", "interrupt"),
    ("history", "past chats", "old conversations", "chat log"),
    ("how do i", "how can i", "how would i", "how do you", "how to", "how do u", "how might i"),
    ("what is", "what's", "whats", "what does", "explain"),
    ("switch", "change", "swap"),
    ("toggle", "flip", "switch"),
    ("turn on", "enable", "activate", "switch on"),
    ("turn off", "disable", "deactivate", "switch off"),
    ("start a", "begin a", "open a", "create a", "make a"),
    ("start", "begin"),
    ("find a", "locate a", "look up a", "dig up a", "track down a"),
    ("find an", "locate an", "look up an", "dig up an", "track down an"),
    ("find my", "locate my", "look up my", "dig up my", "track down my"),
    ("see", "view", "look at", "check"),
    ("pick", "choose", "select"),
    ("api key", "api token", "access key", "secret key"),
    ("api keys", "api tokens", "credentials", "access keys"),
    ("model", "llm", "ai model", "language model"),
    ("cloud model", "remote model", "online model", "hosted model"),
    ("computer", "machine", "laptop", "pc", "device"),
    ("app", "program", "application", "tool"),
    ("press", "hit", "tap"),
    ("bot", "assistant", "chatbot", "ai"),
    ("colors", "colours"),
    ("color", "colour"),
    ("customize", "customise"),
    ("personal data", "personal info", "private data", "personal details", "sensitive data"),
    ("old", "previous", "earlier", "past", "older"),
    ("want to", "wanna", "would like to", "need to"),
    ("tell me", "let me know"),
    ("where is", "where's", "wheres"),
    ("terminal", "command line", "shell", "console", "cli"),
    ("folder", "directory"),
    ("stored", "saved", "kept"),
    ("screen", "window", "page", "panel"),
    ("can i", "could i"),
    ("is there a", "do you have a", "does tandem have a"),
    ("go to", "get to", "navigate to", "jump to"),
    ("safe", "secure"),
)
_SYNONYM_PATTERNS = tuple(
    (re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(group, key=len, reverse=True))) + r")\b"),
     group)
    for group in SYNONYMS)


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
    """A key as people type it: "ctrl+e", "Control-E", "^E", "the ctrl e shortcut", "escape"."""
    if not key.startswith("Ctrl+"):
        return rng.choice(PLAIN_KEY_SPELLINGS.get(key, (key, key.lower())))
    letter = key.split("+")[1]
    letter = rng.choice((letter.lower(), letter.lower(), letter.upper()))
    if rng.random() < 0.1:
        spelled = f"^{letter.upper()}"
    else:
        spelled = rng.choice(KEY_SPELLINGS)(rng.choice(MOD_NAMES), letter)
    if rng.random() < 0.2 and not _KEY_PHRASE.search(spelled):
        spelled = rng.choice(KEY_PHRASES).format(k=spelled)
    return spelled


def _key_prompt(rng: random.Random, key: str) -> str:
    spelled = _spell_key(rng, key)
    if spelled.startswith("holding "):
        templates = KEY_TEMPLATES_FOR_GESTURES
    elif _KEY_PHRASE.search(spelled):
        templates = KEY_TEMPLATES_FOR_PHRASES
    else:
        templates = KEY_TEMPLATES
    return rng.choice(templates).format(k=spelled)


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
    for pattern, group in _SYNONYM_PATTERNS:
        match = pattern.search(text)
        if match and rng.random() < 0.5:
            text = text[:match.start()] + rng.choice(group) + text[match.end():]
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
        return _key_prompt(rng, phrase)
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
                 offtopic_share: float = 0.18, small_talk_share: float = 0.14) -> None:
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
