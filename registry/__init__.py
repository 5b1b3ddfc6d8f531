"""The registry: the one record of residents, certificates, CA generations and the audit log.

Everything else reads from here; data flows one way (registry -> responders).
"""
