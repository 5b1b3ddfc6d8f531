"""Revocation hooks: resident-register events turned into exactly the revocations DOMAIN.md
prescribes, applied once each, durably. Holds no key: it only changes registry state."""
