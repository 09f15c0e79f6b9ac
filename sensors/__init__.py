"""Sensors. The automation issue adds the landing, restatement and run-failure sensors here."""

from typing import Any

all_sensors: list[Any] = []
