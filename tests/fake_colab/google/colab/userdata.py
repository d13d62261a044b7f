"""Fake google.colab.userdata: the Secrets panel, read from a JSON file.

FAKE_COLAB_SECRETS names a file {"NAME": {"value": "...", "access": true}, ...}.
Like the real module, get() raises SecretNotFoundError for a name that is not
there, NotebookAccessError when the notebook was not granted access, and
TimeoutException when the frontend does not answer ("timeout": true). Only the
name asked for is recorded, never a value.
"""

import json
import os

from google.colab import _record


class NotebookAccessError(Exception):
    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(Exception):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


class TimeoutException(Exception):
    def __init__(self, key):
        super().__init__(f"Requesting secret {key} timed out.")


def _panel():
    path = os.environ.get("FAKE_COLAB_SECRETS")
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def get(key):
    _record("userdata.get", key=key)
    entry = _panel().get(key)
    if entry is None:
        raise SecretNotFoundError(key)
    if entry.get("timeout"):
        raise TimeoutException(key)
    if not entry.get("access", False):
        raise NotebookAccessError(key)
    return entry.get("value", "")
