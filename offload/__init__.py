"""Everything that may leave the machine: the router, redaction, cloud providers, keys, the egress ledger."""
