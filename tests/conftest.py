"""Test-wide setup: a crashing op rule fails the test instead of quietly becoming a barrier."""

import os

os.environ["CHANNELCUT_STRICT"] = "1"
