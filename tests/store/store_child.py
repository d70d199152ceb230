"""A second process writing into a store, for the tests that need one. Modes:

  stream DB          reply after reply, token by token, until killed; prints "user ID" once a
                     user message is committed and "reply ID" once a reply row exists
  burst DB TAG N AT  at time.time() AT, write N conversations (a user message and a streamed
                     reply each) and one egress row per conversation, then close and print "done"
  hold DB [ephemeral]  start a reply (in a "don't keep" conversation if asked), write some of it,
                     print "streaming ID", then wait for stdin to close
"""

from __future__ import annotations

import sys
import time

from app.store import Store
from offload.events import Egress
from offload.outgoing import Exchange, OutgoingRequest

TOKENS = [f"t{i} " for i in range(100_000)]
"""Every streamed reply is a prefix of this: a persisted reply can be checked for being one."""


def stream(db: str) -> None:
    store = Store.open(db)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        conversation = store.create_conversation(f"stream {n}")
        user = store.add_message(conversation.id, "user", f"question {n}")
        print(f"user {user.id}", flush=True)
        reply = store.begin_reply(conversation.id, user.id, route="local", model="m", provider="p")
        print(f"reply {reply.message_id}", flush=True)
        for token in TOKENS[:2000]:
            reply.append(token)
            time.sleep(0.0002)
        reply.finish("complete", tokens_out=2000)


def burst(db: str, tag: str, count: int, start_at: float) -> None:
    store = Store.open(db)
    time.sleep(max(0.0, start_at - time.time()))
    for n in range(count):
        conversation = store.create_conversation(f"{tag} {n}")
        user = store.add_message(conversation.id, "user", f"{tag} asks {n}")
        with store.begin_reply(conversation.id, user.id, route="local") as reply:
            for token in TOKENS[:30]:
                reply.append(token)
                reply.checkpoint()
            reply.finish("complete", tokens_out=30)
        sent = Exchange(OutgoingRequest(tag, "example.invalid", f"{tag} payload {n}"), 10, 20)
        store.record_egress(Egress(sent), conversation_id=conversation.id)
    store.close()
    print("done", flush=True)


def hold(db: str, ephemeral: bool) -> None:
    store = Store.open(db)
    conversation = store.create_conversation("held", ephemeral=ephemeral)
    user = store.add_message(conversation.id, "user", "still there?")
    reply = store.begin_reply(conversation.id, user.id)
    reply.append("half an ans")
    reply.checkpoint()
    print(f"streaming {reply.message_id}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "stream":
        stream(args[0])
    elif mode == "burst":
        burst(args[0], args[1], int(args[2]), float(args[3]))
    elif mode == "hold":
        hold(args[0], args[1:] == ["ephemeral"])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
