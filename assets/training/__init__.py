"""The regeneration pipeline of tandem-nano: facts, corpus, tokenizer, model, training and packaging."""
