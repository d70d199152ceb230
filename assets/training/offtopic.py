"""A diverse generator of out-of-domain prompts, which tandem-nano answers with its refusal.

Near-domain hard negatives come first: how-tos for other apps that share Tandem's vocabulary
(new chat, quit, search, dark mode, API keys), so the model learns that the app matters.
"""

from __future__ import annotations

import random
from collections.abc import Callable

OTHER_APPS = (
    "vim", "neovim", "emacs", "nano", "vscode", "vs code", "sublime text", "intellij", "pycharm",
    "slack", "discord", "teams", "microsoft teams", "zoom", "skype", "whatsapp", "telegram", "signal",
    "excel", "word", "powerpoint", "outlook", "google docs", "google sheets", "gmail", "notion",
    "obsidian", "evernote", "trello", "jira", "figma", "photoshop", "gimp", "blender", "spotify",
    "chrome", "firefox", "safari", "edge", "windows", "macos", "ubuntu", "linux", "android",
    "iphone", "ios", "git", "github", "gitlab", "docker", "kubernetes", "tmux", "bash", "zsh",
    "the terminal", "iterm", "chatgpt", "claude", "ollama", "lm studio", "jupyter", "python",
    "npm", "pip", "conda", "aws", "azure", "netflix", "youtube", "facebook", "instagram",
    "twitter", "tiktok", "linkedin", "reddit", "steam", "minecraft", "finder", "file explorer",
    "libreoffice", "thunderbird", "dropbox", "onedrive", "postgres", "mysql", "sqlite browser",
)
APP_ACTIONS = (
    "start a new chat", "quit", "exit", "search my messages", "rename a file", "delete a message",
    "switch to dark mode", "change the theme", "copy text", "paste", "undo", "save a file",
    "open settings", "add an api key", "change my password", "export my data", "create a new document",
    "split the screen", "close a tab", "open a new tab", "mute notifications", "share my screen",
    "insert a table", "make a chart", "merge cells", "freeze the top row", "add a line break",
    "cancel a download", "clear the cache", "install a plugin", "change the font size",
    "find and replace", "select all", "go to line 10", "record a macro", "block someone",
    "leave a group", "delete my account", "log out", "change my username", "enable two factor auth",
    "back up my files", "restore a backup", "commit my changes", "undo the last commit",
    "create a branch", "resolve a merge conflict", "list containers", "restart the service",
    "update everything", "change the language", "turn off autocorrect", "pin a message",
    "send a file", "schedule a meeting", "set a reminder", "use a different model", "stop a process",
    "start a new conversation", "delete a conversation", "rename a conversation", "search old conversations",
    "clear my history", "find my history", "turn on privacy mode", "go offline", "add a new line",
    "cancel a reply", "copy the last message", "see my shortcuts", "open the command palette",
    "change the keyboard shortcuts", "store my password", "export my chats", "import contacts",
    "check the version", "run it as a server", "switch accounts", "go incognito",
)
APP_TEMPLATES = (
    "{app} - {a}?", "on {app} i want to {a}", "using {app}: {a}", "{a} on {app}", "{a} with {app}",
    "i'm in {app}, how do i {a}", "how do i {a} in the {app} app", "where is the option to {a} in {app}",
    "how do i {a} in {app}", "how to {a} in {app}", "{app}: how do i {a}", "in {app}, how do i {a}",
    "what's the shortcut to {a} in {app}", "how can i {a} on {app}", "{a} in {app}?",
    "what key do i press to {a} in {app}", "{app} {a}", "how do you {a} with {app}",
    "is there a way to {a} in {app}", "i can't {a} in {app}, help", "how to {a} using {app}",
)
APP_KEY_TEMPLATES = (
    "what does {key} do in {app}", "{key} in {app}", "what is {key} for in {app}",
    "how do i remap {key} in {app}",
)
KEYS = ("ctrl+c", "ctrl+v", "ctrl+z", "ctrl+x", "ctrl+a", "ctrl+w", "ctrl+r", "ctrl+b", "ctrl+h",
        "alt+tab", "cmd+q", "cmd+space", "ctrl+shift+t", "ctrl+alt+del", "f5", "f11", "ctrl+n",
        "ctrl+f", "ctrl+q", "esc", "ctrl+d", "ctrl+k", "ctrl+l", "ctrl+e")

COUNTRIES = ("france", "japan", "brazil", "canada", "australia", "egypt", "india", "germany",
             "kenya", "mexico", "norway", "peru", "spain", "italy", "china", "chile", "vietnam",
             "poland", "turkey", "argentina", "iceland", "nigeria", "thailand", "sweden")
PEOPLE = ("einstein", "shakespeare", "napoleon", "marie curie", "cleopatra", "gandhi",
          "mozart", "ada lovelace", "alan turing", "picasso", "lincoln", "newton", "darwin",
          "frida kahlo", "beyonce", "elon musk", "taylor swift", "socrates", "tesla", "da vinci")
THINGS = ("photosynthesis", "black holes", "inflation", "the stock market", "quantum computing",
          "dna", "the roman empire", "gravity", "climate change", "blockchain", "vaccines",
          "the french revolution", "machine learning", "the internet", "volcanoes", "democracy",
          "evolution", "relativity", "the immune system", "electricity", "rainbows", "tides",
          "the moon landing", "world war 2", "the big bang", "neural networks", "bitcoin",
          "the pyramids", "earthquakes", "the cold war", "dinosaurs", "the renaissance",
          "a mortgage", "compound interest", "recursion", "a transformer model", "kubernetes",
          "tcp/ip", "dns", "rust ownership", "a hash map", "sql joins", "docker volumes")
KNOWLEDGE_TEMPLATES = (
    "what is the capital of {country}", "how many people live in {country}", "what language do they speak in {country}",
    "who was {person}", "when was {person} born", "what did {person} invent", "tell me about {person}",
    "explain {thing}", "what is {thing}", "how does {thing} work", "why is {thing} important",
    "give me a summary of {thing}", "explain {thing} like i'm five", "what are the causes of {thing}",
    "history of {thing}", "pros and cons of {thing}", "write an essay about {thing}",
    "what currency does {country} use", "best time to visit {country}", "what should i eat in {country}",
    "is {country} safe to travel", "what's the weather like in {country}",
)
LANGS = ("python", "javascript", "java", "c++", "rust", "go", "sql", "bash", "typescript", "ruby",
         "php", "haskell", "c#", "kotlin", "swift", "r", "html", "css", "lua", "perl")
CODE_TASKS = ("reverse a string", "sort a list", "read a csv file", "parse json", "make an http request",
              "find prime numbers", "compute fibonacci numbers", "connect to a database",
              "write a web server", "handle exceptions", "merge two dictionaries", "remove duplicates",
              "read a file line by line", "split a string", "use regex", "write unit tests",
              "create a class", "sort by a key", "flatten a list", "count words in a file",
              "implement binary search", "make a linked list", "use async await", "format a date")
CODE_TEMPLATES = (
    "write a {lang} function to {task}", "how do i {task} in {lang}", "{lang} code to {task}",
    "show me how to {task} with {lang}", "can you {task} in {lang}", "what's the best way to {task} in {lang}",
    "why does my {lang} code crash", "fix my {lang} code", "explain this {lang} error",
    "what is a closure in {lang}", "how do pointers work in {lang}", "is {lang} better than {lang2}",
    "convert this {lang} to {lang2}", "debug this: {snippet}", "what does this do: {snippet}",
)
SNIPPETS = ("for i in range(10): print(i)", "x = [1, 2, 3]; x.append(4)", "SELECT * FROM users;",
            "console.log('hi')", "def f(x): return x * 2", "int main() { return 0; }",
            "git rebase -i HEAD~3", "ls -la | grep py", "TypeError: 'NoneType' object is not subscriptable",
            "IndexError: list index out of range", "segmentation fault (core dumped)",
            "KeyError: 'name'", "npm ERR! code ERESOLVE", "import numpy as np")
LANGUAGES = ("french", "spanish", "german", "japanese", "italian", "chinese", "korean", "arabic",
             "russian", "portuguese", "dutch", "hindi", "greek", "swedish", "latin")
PHRASES = ("good morning", "where is the train station", "i love you", "thank you very much",
           "how much does this cost", "the weather is nice today", "my name is anna", "see you tomorrow",
           "i would like a coffee", "happy birthday", "where is the bathroom", "nice to meet you")
TRANSLATION_TEMPLATES = (
    "translate '{phrase}' into {language}", "how do you say {phrase} in {language}",
    "what is {phrase} in {language}", "{phrase} in {language}", "translate to {language}: {phrase}",
    "what does '{phrase}' mean in {language}",
)
OPINION_TOPICS = ("pineapple on pizza", "cats or dogs", "the best movie ever", "remote work",
                  "social media", "electric cars", "the meaning of life", "god", "politics",
                  "the next election", "crypto", "vim or emacs", "tabs or spaces", "mac or windows",
                  "ai taking jobs", "the best programming language", "marvel movies", "nuclear power")
OPINION_TEMPLATES = (
    "what do you think about {topic}", "what's your opinion on {topic}", "do you like {topic}",
    "which is better: {topic}", "is {topic} good or bad", "convince me about {topic}",
    "give me your honest take on {topic}", "debate {topic}",
)
TASKS = (
    "write a poem about the sea", "tell me a joke", "tell me a story", "write a haiku about autumn",
    "write a cover letter for a barista job", "summarize this article", "write an email to my boss",
    "give me a recipe for pancakes", "how do i bake bread", "plan a trip to rome",
    "recommend a good book", "recommend a movie", "what should i cook tonight",
    "how do i lose weight", "what are the symptoms of flu", "should i see a doctor for a headache",
    "how do i fix a flat tire", "how do i tie a tie", "write a limerick", "generate a password",
    "write a business plan", "help me with my homework", "what's the weather tomorrow",
    "what time is it", "what day is it today", "what's the news today", "who won the game last night",
    "what's the price of bitcoin", "book me a flight", "set an alarm for 7am", "call my mom",
    "play some music", "order a pizza", "what's trending on twitter", "draw a cat",
    "make me a workout plan", "how do i meditate", "how do i learn guitar", "write song lyrics",
    "name ideas for my dog", "give me a riddle", "what's a good gift for my dad",
    "how do i get a job in tech", "how do i negotiate salary", "rewrite this sentence to sound formal",
    "proofread my essay", "make this text shorter", "write a tweet about coffee",
    "explain the rules of chess", "how do i do my taxes", "is it going to rain",
    "how far is the moon", "how tall is mount everest", "how many bones are in the body",
    "what is the speed of light", "what's the population of earth", "who is the president",
    "what is love", "tell me something interesting", "can you keep a secret", "do you dream",
    "sing me a song", "what's your favorite color", "are you conscious", "do you have feelings",
    "play a game with me", "let's play 20 questions", "roleplay as a pirate",
    "write a sql query to find duplicate emails", "design a database schema for a shop",
    "explain big o notation", "how do i center a div", "what is the difference between tcp and udp",
    "how does https work", "how do i install python", "how do i update ubuntu",
    "my wifi is slow, what do i do", "my laptop won't turn on", "how do i clean my keyboard",
    "how do i reset my router", "what's the best laptop for programming",
)
MATH_TEMPLATES = (
    "what is {a} + {b}", "what is {a} times {b}", "what's {a} minus {b}", "{a} * {b}", "{a}+{b}=",
    "calculate {a} divided by {b}", "what is {a} squared", "square root of {c}", "what is {a}% of {c}",
    "solve {a}x + {b} = {c}", "is {c} a prime number", "convert {a} miles to km",
    "convert {a} celsius to fahrenheit", "how many days until christmas", "what day was {a} march {y}",
    "what is the derivative of x^{a}", "integrate {a}x dx", "what is {a} factorial",
    "how many seconds in {a} hours", "what's {c} in binary", "{a} apples minus {b} apples",
    "if i have {a} cats and get {b} more how many do i have",
)
HOWTO_VERBS = ("fix", "clean", "build", "cook", "paint", "learn", "install", "repair", "grow", "train",
               "bake", "sell", "buy", "plant", "wash", "sharpen", "organize", "draw", "knit", "replace",
               "set up", "update", "reset", "unlock", "charge", "make", "find", "cancel", "renew", "start")
HOWTO_OBJECTS = ("a bike", "my garden", "a website", "spanish", "a bookshelf", "a cake", "my car",
                 "a leaky faucet", "tomatoes", "my dog", "a knife", "my closet", "a portrait", "a scarf",
                 "a light bulb", "a printer", "my router", "my phone", "my laptop battery", "a passport",
                 "a business", "a podcast", "a youtube channel", "a mobile app", "a raspberry pi",
                 "a wordpress blog", "my gym membership", "a new hobby", "sourdough", "a smart tv",
                 "an excel spreadsheet", "a zoom meeting", "a slack channel", "a github repo", "a vpn")
HOWTO_TEMPLATES = ("how do i {v} {o}", "how to {v} {o}", "what's the best way to {v} {o}",
                   "can you help me {v} {o}", "i need to {v} {o}", "tips to {v} {o}",
                   "steps to {v} {o}", "how can i {v} {o} quickly")
NON_BINDING_KEY_TEMPLATES = ("what does {key} do", "what is {key} for", "{key}?", "what happens if i press {key}")
NON_BINDING_KEYS = ("ctrl+a", "ctrl+b", "ctrl+c", "ctrl+h", "ctrl+i", "ctrl+m", "ctrl+r", "ctrl+u",
                    "ctrl+v", "ctrl+w", "ctrl+x", "ctrl+z", "f1", "f3", "f5", "f12", "alt+f4",
                    "shift+tab", "ctrl+shift+p", "alt+enter", "tab", "home", "page up")


def _knowledge(rng: random.Random) -> str:
    return rng.choice(KNOWLEDGE_TEMPLATES).format(
        country=rng.choice(COUNTRIES), person=rng.choice(PEOPLE), thing=rng.choice(THINGS))


def _other_app(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(APP_KEY_TEMPLATES).format(key=rng.choice(KEYS), app=rng.choice(OTHER_APPS))
    return rng.choice(APP_TEMPLATES).format(a=rng.choice(APP_ACTIONS), app=rng.choice(OTHER_APPS))


def _code(rng: random.Random) -> str:
    lang, lang2 = rng.sample(LANGS, 2)
    return rng.choice(CODE_TEMPLATES).format(
        lang=lang, lang2=lang2, task=rng.choice(CODE_TASKS), snippet=rng.choice(SNIPPETS))


def _translation(rng: random.Random) -> str:
    return rng.choice(TRANSLATION_TEMPLATES).format(
        phrase=rng.choice(PHRASES), language=rng.choice(LANGUAGES))


def _opinion(rng: random.Random) -> str:
    return rng.choice(OPINION_TEMPLATES).format(topic=rng.choice(OPINION_TOPICS))


def _task(rng: random.Random) -> str:
    return rng.choice(TASKS)


def _math(rng: random.Random) -> str:
    return rng.choice(MATH_TEMPLATES).format(
        a=rng.randint(1, 99), b=rng.randint(1, 99), c=rng.randint(2, 999), y=rng.randint(1900, 2030))


def _non_binding_key(rng: random.Random) -> str:
    return rng.choice(NON_BINDING_KEY_TEMPLATES).format(key=rng.choice(NON_BINDING_KEYS))


def _pasted_text(rng: random.Random) -> str:
    """A long paste with a request: the kind of prompt only a bigger model can handle."""
    words = [rng.choice(THINGS + PEOPLE + COUNTRIES) for _ in range(rng.randint(4, 10))]
    request = rng.choice(("summarize this:", "translate this:", "fix the grammar:", "explain:",
                          "what is wrong here:", "rewrite this:"))
    return f"{request} {' and '.join(words)}"


def _generic_howto(rng: random.Random) -> str:
    return rng.choice(HOWTO_TEMPLATES).format(v=rng.choice(HOWTO_VERBS), o=rng.choice(HOWTO_OBJECTS))


GENERATORS: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (_other_app, 0.28), (_generic_howto, 0.08), (_knowledge, 0.14), (_code, 0.12), (_task, 0.12), (_math, 0.08),
    (_translation, 0.06), (_opinion, 0.05), (_non_binding_key, 0.03), (_pasted_text, 0.04),
)


def offtopic_prompt(rng: random.Random) -> str:
    """One out-of-domain prompt, drawn from the weighted mix of generators."""
    generators, weights = zip(*GENERATORS)
    return rng.choices(generators, weights)[0](rng)
