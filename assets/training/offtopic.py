"""A diverse generator of out-of-domain prompts, which tandem-nano answers with its refusal.

Near-domain hard negatives come first: how-tos for other apps that share Tandem's vocabulary
(new chat, quit, search, dark mode, API keys), shortcuts Tandem does not bind, other AI models,
account security and other services' privacy, so the model learns that the app matters.
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
    "postman", "insomnia", "vercel", "heroku", "netlify", "stripe", "paypal", "google drive", "icloud",
    "1password", "bitwarden", "lastpass", "keepass", "copilot", "cursor", "warp", "alacritty", "kitty",
    "wezterm", "windows terminal", "powershell", "putty", "filezilla", "hugging face", "kaggle",
    "colab", "anaconda", "asana", "linear", "confluence", "bitbucket", "xcode", "android studio",
    "eclipse", "notepad++", "apple notes", "google keep", "messenger", "imessage", "webex",
    "google meet", "snapchat", "twitch", "vlc", "obs", "canva", "miro", "gemini", "perplexity",
    "character.ai", "poe", "gpt4all", "jan", "open webui", "lm studio's chat", "mattermost",
    "element", "rocket.chat", "irc", "weechat", "mutt", "ranger", "htop", "less", "man pages",
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
    "generate an api token", "rotate my api key", "revoke a token", "set an environment variable",
    "switch to light mode", "turn on night mode", "change the color scheme", "pick a different model",
    "export my conversation", "archive a chat", "mute a chat", "clear the conversation",
    "reply in a thread", "edit a message", "unsend a message", "forward a message", "star a message",
    "search in a channel", "find a file", "rename a channel", "rename a tab", "rename a branch",
    "delete a repo", "copy a link", "copy the output", "cancel a job", "stop a running command",
    "kill a process", "cancel my subscription", "appear offline", "set my status",
    "clear my browsing history", "open a private window", "block trackers", "download my data",
    "delete my data", "change the privacy settings", "make my profile private", "sync my files",
    "open the terminal", "split the terminal", "open a new window", "zoom in", "remap a key",
    "add a bot", "connect an integration", "install an extension", "update the app", "see the logs",
    "force quit", "close all tabs", "begin a new project", "start a call", "create a new channel",
    "make a new folder", "open a new file", "send a message", "add a new line in a cell",
    "stop the music", "cancel a meeting", "change my email", "connect my account", "add a webhook",
    "set up a token", "store a secret", "add an ssh key", "use the dark theme", "list my files",
    "view my history", "see what i sent", "look up old messages", "pick a theme", "select all text",
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
    "how do i remap {key} in {app}", "what would {key} do in {app}", "{app}: what's {key}",
    "i pressed {key} in {app}, what happened", "what is the {key} shortcut in {app}",
)
KEYS = ("ctrl+c", "ctrl+v", "ctrl+z", "ctrl+x", "ctrl+a", "ctrl+w", "ctrl+r", "ctrl+b", "ctrl+h",
        "alt+tab", "cmd+q", "cmd+space", "ctrl+shift+t", "ctrl+alt+del", "f5", "f11", "ctrl+n",
        "ctrl+f", "ctrl+q", "esc", "ctrl+d", "ctrl+k", "ctrl+l", "ctrl+e", "ctrl+t", "ctrl+s",
        "ctrl+p", "ctrl+o", "ctrl+g", "ctrl+y", "ctrl+j", "enter", "f2", "Ctrl+E", "control-s")

COUNTRIES = ("france", "japan", "brazil", "canada", "australia", "egypt", "india", "germany",
             "kenya", "mexico", "norway", "peru", "spain", "italy", "china", "chile", "vietnam",
             "poland", "turkey", "argentina", "iceland", "nigeria", "thailand", "sweden",
             "ireland", "portugal", "greece", "morocco", "south korea", "indonesia", "colombia",
             "new zealand", "ghana", "finland", "austria", "the uk", "the usa", "ukraine", "cuba")
PEOPLE = ("einstein", "shakespeare", "napoleon", "marie curie", "cleopatra", "gandhi",
          "mozart", "ada lovelace", "alan turing", "picasso", "lincoln", "newton", "darwin",
          "frida kahlo", "beyonce", "elon musk", "taylor swift", "socrates", "tesla", "da vinci",
          "martin luther king", "nelson mandela", "queen elizabeth", "julius caesar", "aristotle",
          "galileo", "beethoven", "van gogh", "steve jobs", "bill gates", "linus torvalds", "confucius",
          "genghis khan", "joan of arc", "churchill", "stephen hawking", "serena williams", "messi")
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
    "what's the biggest city in {country}", "what is {country} famous for", "when did {person} die",
    "what is {person} known for", "quote from {person}", "why was {person} famous",
    "who influenced {person}", "is {thing} real", "what's the difference between {thing} and {thing2}",
    "write a short essay on {thing}", "how was {thing} discovered", "is {thing} dangerous",
)
EVENTS = ("the fall of the berlin wall", "the first moon landing", "the signing of the magna carta",
          "the battle of hastings", "the invention of the printing press", "the great fire of london",
          "the start of world war 1", "the end of apartheid", "the titanic sinking",
          "the discovery of penicillin", "the first iphone launch", "the american revolution")
DATE_TEMPLATES = ("when did {event} happen", "what year was {event}", "tell me about {event}",
                  "why did {event} matter", "who was involved in {event}", "what caused {event}")
AI_MODELS = ("gpt-4", "gpt-4o", "gpt-3.5", "claude 3", "claude opus", "gemini pro", "mistral 7b",
             "mixtral", "llama 2 13b", "code llama", "phi-3", "gemma", "stable diffusion", "whisper",
             "bert", "t5", "yolo", "resnet", "deepseek", "falcon", "a vision transformer", "an lstm")
AI_TEMPLATES = (
    "how do i fine-tune {m} on my data", "how do i train {m} from scratch", "how many parameters does {m} have",
    "what's the context window of {m}", "is {m} better than {m2}", "compare {m} and {m2}",
    "who made {m}", "how do i jailbreak {m}", "how much does the {m} api cost", "write a lora for {m}",
    "how do i make a dataset to train {m}", "how do i deploy {m} on aws", "benchmark {m} vs {m2}",
    "how do i distill {m}", "explain how {m} was trained", "what gpu do i need to train {m}",
    "how do i prompt {m} better", "what is rlhf", "explain attention in transformers",
    "how does backpropagation work", "what is a learning rate", "how do i avoid overfitting",
    "what is a loss function", "explain gradient descent", "what's the best optimizer for {m}",
    "how do i label images for {m}", "what is a token in an llm", "how do embeddings work",
)
SECURITY_TASKS = ("generate a gpg key", "create an ssh keypair", "add my ssh key to github",
                  "reset my password", "change my gmail password", "enable 2fa on my bank account",
                  "store passwords safely", "set up a password manager", "recover a hacked account",
                  "check if my email was leaked", "make a strong password", "encrypt my hard drive",
                  "set up a vpn", "use a yubikey", "revoke an oauth token", "rotate aws access keys",
                  "store secrets in github actions", "set up ssh on a server", "change my wifi password",
                  "get my instagram account back", "lock my credit", "spot a phishing email",
                  "secure my router", "set up an api gateway", "sign a git commit", "get an ssl certificate")
SECURITY_TEMPLATES = ("how do i {t}", "how can i {t}", "what's the best way to {t}", "help me {t}",
                      "steps to {t}", "i need to {t}", "is it hard to {t}")
SERVICES = ("google", "facebook", "chatgpt", "openai", "whatsapp", "tiktok", "alexa", "siri", "zoom",
            "microsoft", "apple", "amazon", "gmail", "instagram", "grammarly", "github copilot",
            "my bank", "my isp", "spotify", "uber", "my phone")
PRIVACY_ELSEWHERE_TEMPLATES = (
    "does {svc} sell my data", "how do i stop {svc} tracking me", "is {svc} end-to-end encrypted",
    "what data does {svc} collect", "how do i delete my {svc} history", "does {svc} train on my data",
    "can {svc} read my messages", "how do i opt out of {svc} using my data", "is {svc} safe to use",
    "does {svc} listen to me", "how private is {svc}", "what does {svc} know about me",
)
EVERYDAY = (
    "how do i make lasagna", "recipe for chocolate chip cookies", "how long do i boil an egg",
    "what can i cook with rice and beans", "how do i make cold brew", "vegan dinner ideas",
    "how much water should i drink", "is coffee bad for you", "how do i sleep better",
    "what helps a sore throat", "how do i stop snoring", "is it normal to feel tired all day",
    "how do i start running", "how many calories in a banana", "how do i save money",
    "should i pay off debt or invest", "what is an index fund", "how do i make a budget",
    "how do credit scores work", "is renting better than buying", "how do i ask for a raise",
    "how do i write a resume", "how do i deal with a difficult coworker", "how do i make friends",
    "how do i get over a breakup", "how do i stop procrastinating", "gift ideas for my sister",
    "how do i talk to my kids about money", "how do i get rid of ants", "how do i unclog a drain",
    "how often should i water succulents", "why is the sky blue", "why do cats purr",
    "how big is the sun", "how old is the universe", "what is the tallest building",
    "what is the longest river", "who painted the mona lisa", "who wrote hamlet",
    "what is the boiling point of water", "how does a rocket work", "why do we dream",
    "python says ModuleNotFoundError, what now", "git says detached HEAD", "my docker build fails",
    "cannot read property of undefined", "what does http 404 mean", "what's a 500 error",
    "my pip install fails with permission denied", "segfault in my c program",
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
NON_BINDING_KEY_TEMPLATES = (
    "what does {key} do", "what is {key} for", "{key}?", "what happens if i press {key}",
    "what would {key} do", "what's {key}", "what's {key} for", "i pressed {key}, what happened",
    "does {key} do anything", "what does pressing {key} do", "explain {key}", "what is bound to {key}",
    "what's the {key} shortcut", "{key} does what", "meaning of {key}", "what does {key} do here",
    "tell me what {key} does", "why would i press {key}", "what did {key} just do",
)
NON_BINDING_LETTERS = "abchruvwxz"
"""Letters no Tandem binding uses with Ctrl (I and M are Tab and Enter in terminals)."""
MODIFIER_SPELLINGS = ("ctrl+{k}", "Ctrl+{K}", "control-{k}", "ctrl {k}", "CTRL+{K}", "^{K}", "ctl+{k}",
                      "control and {k}", "cmd+{k}", "Cmd+{K}", "command-{k}", "alt+{k}", "Alt+{K}",
                      "option-{k}", "shift+{k}", "ctrl+shift+{k}", "ctrl+alt+{k}", "super+{k}",
                      "win+{k}", "meta+{k}")
OTHER_KEYS = ("f1", "F1", "f3", "F4", "f5", "F5", "f6", "f7", "f8", "f9", "f10", "f11", "F11", "f12",
              "F12", "alt+f4", "Alt+F4", "shift+tab", "ctrl+shift+p", "alt+enter", "tab", "home",
              "page up", "page down", "ctrl+tab", "alt+tab", "cmd+tab", "ctrl+alt+delete", "print screen",
              "insert", "win", "ctrl+space", "cmd+space", "ctrl+backspace", "ctrl+arrow up",
              "ctrl+shift+esc", "ctrl+plus", "ctrl+minus", "ctrl+0", "ctrl+1", "cmd+w", "cmd+z", "cmd+c")


def _knowledge(rng: random.Random) -> str:
    thing, thing2 = rng.sample(THINGS, 2)
    return rng.choice(KNOWLEDGE_TEMPLATES).format(
        country=rng.choice(COUNTRIES), person=rng.choice(PEOPLE), thing=thing, thing2=thing2)


def _date(rng: random.Random) -> str:
    return rng.choice(DATE_TEMPLATES).format(event=rng.choice(EVENTS))


def _ai(rng: random.Random) -> str:
    """Other models and machine-learning work: near Tandem's vocabulary, outside its skills."""
    m, m2 = rng.sample(AI_MODELS, 2)
    return rng.choice(AI_TEMPLATES).format(m=m, m2=m2)


def _security(rng: random.Random) -> str:
    return rng.choice(SECURITY_TEMPLATES).format(t=rng.choice(SECURITY_TASKS))


def _privacy_elsewhere(rng: random.Random) -> str:
    return rng.choice(PRIVACY_ELSEWHERE_TEMPLATES).format(svc=rng.choice(SERVICES))


def _everyday(rng: random.Random) -> str:
    return rng.choice(EVERYDAY)


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
    if rng.random() < 0.6:
        letter = rng.choice(NON_BINDING_LETTERS)
        key = rng.choice(MODIFIER_SPELLINGS).format(k=letter, K=letter.upper())
    else:
        key = rng.choice(OTHER_KEYS)
    return rng.choice(NON_BINDING_KEY_TEMPLATES).format(key=key)


def _pasted_text(rng: random.Random) -> str:
    """A long paste with a request: the kind of prompt only a bigger model can handle."""
    words = [rng.choice(THINGS + PEOPLE + COUNTRIES) for _ in range(rng.randint(4, 10))]
    request = rng.choice(("summarize this:", "translate this:", "fix the grammar:", "explain:",
                          "what is wrong here:", "rewrite this:"))
    return f"{request} {' and '.join(words)}"


def _generic_howto(rng: random.Random) -> str:
    return rng.choice(HOWTO_TEMPLATES).format(v=rng.choice(HOWTO_VERBS), o=rng.choice(HOWTO_OBJECTS))


GENERATORS: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (_other_app, 0.24), (_non_binding_key, 0.06), (_ai, 0.06), (_security, 0.05),
    (_privacy_elsewhere, 0.04), (_generic_howto, 0.06), (_knowledge, 0.10), (_date, 0.02),
    (_everyday, 0.06), (_code, 0.09), (_task, 0.08), (_math, 0.06), (_translation, 0.04),
    (_opinion, 0.04), (_pasted_text, 0.03),
)


def offtopic_prompt(rng: random.Random) -> str:
    """One out-of-domain prompt, drawn from the weighted mix of generators."""
    generators, weights = zip(*GENERATORS)
    return rng.choices(generators, weights)[0](rng)
