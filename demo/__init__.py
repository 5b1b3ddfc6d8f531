"""Demonstration data: synthetic residents and revocations for scale tests (`jpki demo
populate`). Not a role: it writes through the registry's bulk functions only."""
