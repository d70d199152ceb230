"""`tandem serve`: this machine's local model for other devices, as an OpenAI-compatible HTTP
server (the on-prem tier). It sends nothing out; offload/ owns what leaves the machine."""
