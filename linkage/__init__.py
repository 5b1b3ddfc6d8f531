"""Linkage services for verifiers: old -> new serials, counterpart numbers, latest facts, age."""
