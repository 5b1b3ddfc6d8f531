"""Stable machine-readable output: one JSON object per line on stdout."""

from __future__ import annotations

import json
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)
