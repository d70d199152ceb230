"""Builds the general eval set from the fact tables and the generators of computed kinds, and
splits it into calibrate and held-out halves by topic: `python -m assets.eval.general.generate`.

Deterministic (a fixed seed, stable hashes), so the committed JSONL files can be checked against
a fresh build. An item whose accepted answer already appears in its prompt is left out: it would
be graded correct for echoing the question.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from assets.eval.general import tables
from assets.eval.general.records import Item
from assets.eval.general.scoring import mentions

HERE = Path(__file__).resolve().parent
SEED = 14
DAYS = tuple(calendar.day_name)
MONTHS = tuple(calendar.month_name)[1:]


def _item(kind: str, topic: str, prompt: str, accept: tuple[str, ...] | list[str],
          choices: tuple[str, ...] = ()) -> Item:
    return Item(id="", kind=kind, topic=topic, prompt=prompt, accept=tuple(str(a) for a in accept),
                choices=choices)


def facts() -> Iterator[Item]:
    for n, (country, capitals, continent) in enumerate(tables.COUNTRIES):
        topic = f"country:{country.removeprefix('the ')}"
        yield _item("facts", topic, f"What is the capital of {country}?", capitals)
        if not country.startswith("the ") and n % 2 == 0:
            yield _item("facts", topic, f"{capitals[0]} is the capital of which country?", (country,))
        continents = {"Turkey": ("Asia", "Europe"), "Russia": ("Europe", "Asia"),
                      "Egypt": ("Africa",)}.get(country, (continent,))
        if continent == "Oceania":
            continents = ("Oceania", "Australia")
        if country in ("Honduras", "Cuba", "Jamaica"):
            continents = ("North America", "Central America", "Caribbean")
        if n % 2 == 1:
            yield _item("facts", topic, f"On which continent is {country}?", continents)
        if country in tables.CURRENCIES:
            yield _item("facts", topic, f"What is the currency of {country} called?", tables.CURRENCIES[country])
    for n, (name, symbol, number) in enumerate(tables.ELEMENTS):
        topic = f"element:{name}"
        if len(symbol) == 2:  # a one-letter symbol would match any stray "I" or "a"
            yield _item("facts", topic, f"What is the chemical symbol for {name}?", (symbol,))
        yield _item("facts", topic, f"Which chemical element has the symbol {symbol}?",
                    (name, "aluminum") if name == "aluminium" else (name, "sulphur") if name == "sulfur" else (name,))
        if number <= 20 or n % 3 == 0:
            yield _item("facts", topic, f"What is the atomic number of {name}?", (str(number),))
    for title, authors in tables.BOOKS:
        yield _item("facts", f"book:{title}", f"Who wrote {title}?", authors)
    for question, accept, topic in tables.MISC_FACTS:
        yield _item("facts", topic, question, accept)
    for question, year in tables.HISTORY_YEARS:
        yield _item("facts", f"year:{year}", question, (str(year),))


def arithmetic(rng: random.Random) -> Iterator[Item]:
    def number(digits: int) -> int:
        return rng.randint(10 ** (digits - 1) if digits > 1 else 2, 10**digits - 1)

    for digits in (1, 2, 3, 4):
        for i in range(14):
            a, b = number(digits), number(digits)
            yield _item("arithmetic", f"add:{min(a, b)}+{max(a, b)}",
                        (f"What is {a} + {b}?", f"What is {a} plus {b}?", f"Add {a} and {b}.")[i % 3], (a + b,))
            a, b = max(a, b), min(a, b)
            if a != b:
                yield _item("arithmetic", f"sub:{a}-{b}",
                            (f"What is {a} - {b}?", f"What is {a} minus {b}?", f"Subtract {b} from {a}.")[i % 3],
                            (a - b,))
            a, b = number(digits), rng.randint(2, 9 if digits > 1 else 9)
            yield _item("arithmetic", f"mul:{min(a, b)}x{max(a, b)}",
                        (f"What is {a} times {b}?", f"What is {a} × {b}?", f"Multiply {a} by {b}.")[i % 3],
                        (a * b,))
            if i % 2 == 0:
                q, d = number(digits), rng.randint(2, 9)
                yield _item("arithmetic", f"div:{q * d}/{d}",
                            (f"What is {q * d} divided by {d}?", f"What is {q * d} / {d}?")[i % 4 // 2], (q,))
        if digits == 2:
            for _ in range(10):
                a, b = number(2), number(2)
                yield _item("arithmetic", f"mul:{min(a, b)}x{max(a, b)}", f"What is {a} times {b}?", (a * b,))


# (from unit, to unit, factor, values): "How many <to> are in <n> <from>?"
_CONVERSIONS = (
    ("kilometres", "metres", 1000, (2, 3, 5, 7, 12)),
    ("metres", "centimetres", 100, (2, 4, 6, 9, 15)),
    ("centimetres", "millimetres", 10, (3, 7, 8, 25, 42)),
    ("kilograms", "grams", 1000, (2, 3, 4, 6, 11)),
    ("litres", "millilitres", 1000, (2, 5, 8, 9, 13)),
    ("hours", "minutes", 60, (2, 3, 5, 8, 10)),
    ("minutes", "seconds", 60, (2, 4, 7, 9, 15)),
    ("days", "hours", 24, (2, 3, 5, 7, 10)),
    ("weeks", "days", 7, (3, 4, 6, 8, 12)),
    ("years", "months", 12, (2, 3, 5, 6, 9)),
    ("feet", "inches", 12, (2, 3, 4, 6, 10)),
    ("yards", "feet", 3, (4, 5, 7, 11, 20)),
    ("hours", "seconds", 3600, (2, 3, 5)),
    ("dozen", "items", 12, (2, 3, 5, 7)),
)


def units() -> Iterator[Item]:
    for source, target, factor, values in _CONVERSIONS:
        for n, value in enumerate(values):
            if source == "dozen":
                prompt = f"How many eggs are in {value} dozen?"
            else:
                prompt = f"How many {target} are in {value} {source}?"
            yield _item("units", f"unit:{source}>{target}:{value}", prompt, (value * factor,))
            if n % 2 == 0 and source != "dozen":
                prompt = f"How many {source} are {value * factor} {target}?"
                yield _item("units", f"unit:{source}>{target}:{value}", prompt, (value,))
    for celsius, fahrenheit in ((100, 212), (0, 32), (10, 50), (20, 68), (30, 86), (-40, -40)):
        if celsius != fahrenheit:
            yield _item("units", f"temp:{celsius}C", f"What is {celsius} degrees Celsius in Fahrenheit?", (fahrenheit,))


def dates(rng: random.Random) -> Iterator[Item]:
    for i, day in enumerate(DAYS):
        after, before = DAYS[(i + 1) % 7], DAYS[(i - 1) % 7]
        yield _item("dates", f"weekday:{after}", f"What day of the week comes after {day}?", (after,))
        yield _item("dates", f"weekday:{before}", f"What day of the week comes before {day}?", (before,))
        shift = 2 + i % 4
        later = DAYS[(i + shift) % 7]
        yield _item("dates", f"weekday:{later}", f"If today is {day}, what day will it be in {shift} days?", (later,))
    for i, month in enumerate(MONTHS):
        following, previous = MONTHS[(i + 1) % 12], MONTHS[(i - 1) % 12]
        yield _item("dates", f"month:{following}", f"Which month comes after {month}?", (following,))
        yield _item("dates", f"month:{previous}", f"Which month comes before {month}?", (previous,))
        days = calendar.monthrange(2023, i + 1)[1]
        accept = ("28", "29") if month == "February" else (str(days),)
        yield _item("dates", f"length:{month}", f"How many days are there in {month}?", accept)
        shift = 3 + i % 5
        yield _item("dates", f"month:{MONTHS[(i + shift) % 12]}",
                    f"Which month is {shift} months after {month}?", (MONTHS[(i + shift) % 12],))
        yield _item("dates", f"number:{month}", f"What number is the month of {month} in the year?", (str(i + 1),))
    for _ in range(12):
        day = dt.date(rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28))
        yield _item("dates", f"date:{day.isoformat()}",
                    f"What day of the week was {day.day} {MONTHS[day.month - 1]} {day.year}?",
                    (DAYS[day.weekday()],))
    for question, accept, topic in (
        ("How many days are there in a leap year?", ("366",), "count:leap"),
        ("How many days are there in a normal year?", ("365",), "count:year"),
        ("How many weeks are there in a year?", ("52",), "count:weeks"),
        ("How many months are there in a year?", ("12", "twelve"), "count:months"),
        ("How many hours are there in a day?", ("24",), "count:hours"),
        ("How many days are there in a week?", ("7",), "count:days"),
        ("What date is New Year's Day?", ("1 January", "January 1", "January 1st", "1st January"), "holiday:new_year"),
        ("On what date is Christmas Day?", ("25 December", "December 25", "December 25th", "25th December"), "holiday:christmas"),
        ("Is 2024 a leap year? Answer yes or no.", ("yes",), "leap:2024"),
        ("Is 2023 a leap year? Answer yes or no.", ("no",), "leap:2023"),
        ("Is 1900 a leap year? Answer yes or no.", ("no",), "leap:1900"),
        ("Is 2000 a leap year? Answer yes or no.", ("yes",), "leap:2000"),
    ):
        yield _item("dates", topic, question, accept, ("yes", "no") if "yes or no" in question else ())


def language() -> Iterator[Item]:
    for word, french, spanish, german in tables.WORDS:
        topic = f"word:{word}"
        yield _item("translation", topic, f"What is the French word for '{word}'?", french)
        yield _item("translation", topic, f"How do you say '{word}' in Spanish?", spanish)
        yield _item("translation", topic, f"What is '{word}' in German?", german)
    for singular, plurals in tables.PLURALS:
        yield _item("plurals", f"noun:{singular}", f"What is the plural of '{singular}'?", plurals)
    for verb, pasts in tables.PAST_TENSES:
        yield _item("tenses", f"verb:{verb}", f"What is the past tense of '{verb}'?", pasts)
    for word, opposites in tables.ANTONYMS:
        yield _item("antonyms", f"antonym:{word}", f"What is the opposite of '{word}'?", opposites)


def code() -> Iterator[Item]:
    for question, accept, topic in tables.CODE_TRIVIA:
        yield _item("code", topic, question, accept)


_NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jack",
          "Kira", "Liam", "Maya", "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Victor")
_COMPARE = (("taller", "tallest", "shortest"), ("older", "oldest", "youngest"),
            ("faster", "fastest", "slowest"), ("heavier", "heaviest", "lightest"))
_THINGS = ("apples", "books", "marbles", "stickers", "coins", "pencils", "cookies", "cards")


def reasoning(rng: random.Random) -> Iterator[Item]:
    for i in range(24):
        a, b, c = rng.sample(_NAMES, 3)
        more, most, least = _COMPARE[i % len(_COMPARE)]
        if i % 2 == 0:
            prompt, answer = f"{a} is {more} than {b}, and {b} is {more} than {c}. Who is the {most}?", a
        else:
            prompt, answer = f"{a} is {more} than {b}, and {b} is {more} than {c}. Who is the {least}?", c
        yield _item("reasoning", f"order:{a}>{b}>{c}", prompt, (answer,), (a, b, c))
    for i in range(30):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        if i % 3 == 2:
            terms = [start * 2**k for k in range(4)] if start < 10 else [step * 3**k for k in range(4)]
            following = terms[-1] * (terms[1] // terms[0])
        else:
            terms = [start + step * k for k in range(4)]
            following = terms[-1] + step
        yield _item("reasoning", f"sequence:{terms}",
                    f"What number comes next in the sequence {', '.join(map(str, terms))}, ...?", (following,))
    for i in range(30):
        name, thing = rng.choice(_NAMES), _THINGS[i % len(_THINGS)]
        have, change = rng.randint(5, 30), rng.randint(2, 9)
        if i % 3 == 0:
            prompt, answer = f"{name} has {have} {thing} and gives away {change}. How many {thing} does {name} have left?", have - change
        elif i % 3 == 1:
            prompt, answer = f"{name} has {have} {thing} and gets {change} more. How many {thing} does {name} have now?", have + change
        else:
            prompt, answer = f"{name} buys {change} bags with {have % 7 + 3} {thing} in each. How many {thing} is that in total?", change * (have % 7 + 3)
        yield _item("reasoning", f"story:{prompt}", prompt, (answer,))
    for _ in range(16):
        x, y = rng.randint(1, 99) / 100, rng.randint(1, 9) / 10
        if x == y:
            continue
        a, b = f"{x:g}", f"{y:g}"
        yield _item("reasoning", f"compare:{min(a, b)}:{max(a, b)}", f"Which is larger, {a} or {b}?",
                    (a if x > y else b,), (a, b))


# (fact, accepted answers, phrasings)
_TANDEM_HELP = (
    ("send", ("Enter", "Return"), ("Which key sends my message in Tandem?", "How do I submit what I typed in Tandem?")),
    ("newline", ("Ctrl+J", "Control+J"), ("In Tandem, which key adds a new line without sending?",
                                           "How do I type a line break in Tandem's prompt?")),
    ("cancel", ("Esc", "Escape"), ("How do I stop a reply that Tandem is still writing?", "Which key cancels a reply in Tandem?")),
    ("new_chat", ("Ctrl+N", "Control+N"), ("Which shortcut starts a new conversation in Tandem?",)),
    ("rename", ("F2",), ("Which key renames the current conversation in Tandem?",)),
    ("delete", ("Ctrl+D", "Control+D"), ("How do I delete a conversation in Tandem?",)),
    ("search", ("Ctrl+F", "Control+F"), ("Which shortcut searches my history in Tandem?", "How do I search old chats in Tandem?")),
    ("cloud_opt_in", ("Ctrl+O", "Control+O"), ("Which key lets a Tandem conversation use the cloud?",)),
    ("privacy_mode", ("Ctrl+G", "Control+G"), ("Which key cycles Tandem's privacy mode?", "How do I switch between offline, ask and auto in Tandem?")),
    ("egress", ("Ctrl+E", "Control+E"), ("Which key opens Tandem's egress ledger?",)),
    ("settings", ("Ctrl+S", "Control+S"), ("How do I open the settings in Tandem?",)),
    ("keys", ("Ctrl+K", "Control+K"), ("Which key opens the API keys screen in Tandem?",)),
    ("models", ("Ctrl+L", "Control+L"), ("Which key opens Tandem's model picker?", "How do I choose another local model in Tandem?")),
    ("copy", ("Ctrl+Y", "Control+Y"), ("How do I copy the last reply in Tandem?",)),
    ("theme", ("Ctrl+T", "Control+T"), ("Which key changes the theme in Tandem?",)),
    ("palette", ("Ctrl+P", "Control+P"), ("Which key opens the command palette in Tandem?",)),
    ("quit", ("Ctrl+Q", "Control+Q"), ("Which key quits Tandem?", "How do I exit Tandem?")),
    ("slash_cloud", ("/cloud",), ("What do I type at the start of a message to send it to the bigger remote model in Tandem?",)),
    ("slash_local", ("/local",), ("What prefix keeps a Tandem message off the cloud?",)),
    ("default_mode", ("ask",), ("What is Tandem's default privacy mode?",)),
    ("db_file", ("tandem.db",), ("What is the name of the SQLite file where Tandem keeps history?",)),
    ("list_models", ("tandem models",), ("Which command lists the local models Tandem can use?",)),
    ("keys_cli", ("tandem keys set",), ("Which command stores an API key for Tandem from the shell?",)),
    ("export", ("tandem history export",), ("Which command exports a Tandem conversation?",)),
    ("ask_cli", ("tandem ask",), ("Which command asks Tandem a question from the shell without opening the chat?",)),
)


def tandem_help() -> Iterator[Item]:
    for fact, accept, phrasings in _TANDEM_HELP:
        for prompt in phrasings:
            yield _item("tandem", f"tandem:{fact}", prompt, accept)


OPEN_ENDED = (
    "Write a short poem about the sea.", "Write a haiku about autumn leaves.",
    "Summarise the plot of a fairy tale you like in three sentences.",
    "Give me three tips for sleeping better.", "Write a friendly email inviting a colleague to lunch.",
    "Describe your ideal weekend.", "Tell me a joke about computers.",
    "Explain why the sky is blue to a child.", "Write a limerick about a cat.",
    "Suggest a name for a bakery.", "Write two sentences that open a mystery story.",
    "What are some good habits for learning a language?", "Describe a sunset in one paragraph.",
    "Write a thank-you note to a teacher.", "Give me ideas for a birthday party.",
    "Write a short product description for a water bottle.", "Summarise the benefits of exercise.",
    "Write a motivational message for someone starting a new job.", "Invent a new ice cream flavour and describe it.",
    "Explain what a database is in simple terms.", "Write a tweet announcing a new app.",
    "Describe a city you would like to visit.", "Give me a recipe idea with potatoes.",
    "Write a short dialogue between a robot and a child.", "List some ways to reduce stress.",
    "Write an apology for missing a meeting.", "Explain recursion with an everyday example.",
    "Write a four-line song chorus about summer.", "Suggest three board games for a family evening.",
    "Describe the smell of rain.", "Write a bedtime story about a brave mouse in five sentences.",
    "Give feedback on this sentence: 'Me and him goes to the shop yesterday.'",
    "Write a short review of an imaginary restaurant.", "What should I pack for a weekend hike?",
    "Explain the difference between weather and climate.", "Write a riddle and give its answer.",
    "Describe how to make a cup of tea.", "Write a welcome message for a new club member.",
    "Brainstorm five names for a pet turtle.", "Write a paragraph about why reading matters.",
)


def build() -> list[Item]:
    """Every graded item, with ids and splits assigned; those that echo their answer left out."""
    rng = random.Random(SEED)
    raw = [*facts(), *arithmetic(rng), *units(), *dates(rng), *language(), *code(), *reasoning(rng),
           *tandem_help()]
    kept = [i for i in raw if i.choices or not any(mentions(i.prompt, a) for a in i.accept)]
    unique = list({item.prompt: item for item in kept}.values())
    return _split(unique)


def _split(items: list[Item]) -> list[Item]:
    """Whole topics go to one half; within each kind, topics alternate by a stable hash, so both
    halves cover every kind."""
    by_kind: dict[str, set[str]] = defaultdict(set)
    for item in items:
        by_kind[item.kind].add(item.topic)
    half: dict[str, str] = {}
    for kind, topics in by_kind.items():
        ordered = sorted(topics, key=lambda t: hashlib.sha256(f"{kind}|{t}".encode()).hexdigest())
        for n, topic in enumerate(ordered):
            half[topic] = "calibrate" if n % 2 == 0 else "heldout"
    counters: dict[str, int] = defaultdict(int)
    result = []
    for item in items:
        counters[item.kind] += 1
        result.append(Item(id=f"{item.kind}-{counters[item.kind]:03d}", kind=item.kind, topic=item.topic,
                           prompt=item.prompt, accept=item.accept, choices=item.choices, split=half[item.topic]))
    return result


def write(directory: Path = HERE) -> dict[str, int]:
    items = build()
    counts = {}
    for split in ("calibrate", "heldout"):
        chosen = [i for i in items if i.split == split]
        lines = [json.dumps(i.to_json(), ensure_ascii=False) for i in chosen]
        (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(chosen)
    lines = [json.dumps({"prompt": p}, ensure_ascii=False) for p in OPEN_ENDED]
    (directory / "open_ended.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts["open_ended"] = len(OPEN_ENDED)
    return counts


if __name__ == "__main__":
    print(write())
