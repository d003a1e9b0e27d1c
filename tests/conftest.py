"""Test-wide setup: a crashing op rule fails the test instead of quietly becoming a barrier, and
the shared `builders` helpers get pytest's detailed assertion messages."""

import os

import pytest

os.environ["CHANNELCUT_STRICT"] = "1"
pytest.register_assert_rewrite("builders")
