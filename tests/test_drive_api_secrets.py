"""connect_drive() with a service-account key kept in Colab's Secrets panel (the fake google.colab.userdata).

The real pydrive2 / oauth2client sign-in runs (a signed JWT grant over
HttpMockSequence); only Colab's frontend and Google's HTTP are faked.
"""

from __future__ import annotations

import json
import logging

import pytest

from colabkit._drive_api import config, session
from colabkit.errors import DriveAPIAuthError
from tests._drive_api_helpers import (  # noqa: F401 - fixtures
    canned,
    listing,
    meta,
    ok,
    service_key,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:sign\\(\\) is deprecated:DeprecationWarning"),
]

SA_TOKEN = "ya29.SECRET-PANEL-TOKEN-secret"
EMAIL = "trainer@demo.iam.gserviceaccount.com"


@pytest.fixture
def panel(fake_colab, tmp_path, monkeypatch):
    """The Secrets panel of the fake Colab: panel(NAME=(value, access)) fills it."""
    path = tmp_path / "secrets.json"
    monkeypatch.setenv("FAKE_COLAB_SECRETS", str(path))
    for var in (config.ENV_SERVICE_ACCOUNT, config.ENV_SETTINGS):
        monkeypatch.delenv(var, raising=False)

    def fill(**entries):
        path.write_text(json.dumps({name: {"value": value, "access": access}
                                    for name, (value, access) in entries.items()}))

    fill()
    fill.colab = fake_colab
    return fill


@pytest.fixture
def user_adc(tmp_path, monkeypatch):
    """What Colab's authenticate_user() leaves behind: the user's default credentials."""
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
                               "client_secret": "client-secret-value", "refresh_token": "1//refresh-secret"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))


def _key_text(service_key) -> str:
    path, _pem = service_key
    return path.read_text()


def _secret_lines(service_key) -> list[str]:
    _path, pem = service_key
    return [line for line in pem.splitlines()[1:-1]][:6]


def test_the_default_secret_signs_in_as_the_service_account(panel, canned, service_key, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    panel(COLABKIT_DRIVE_SERVICE_ACCOUNT=(_key_text(service_key), True))
    canned.add(ok({"access_token": SA_TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
               listing(meta("F1", "a.txt", b"a")))
    drive = session.connect_drive()
    assert [f.name for f in drive.list("")] == ["a.txt"]
    assert canned.request_sequence[0][0] == "https://oauth2.googleapis.com/token"
    assert "assertion=" in canned.request_sequence[0][2]  # a JWT grant signed with the secret's key
    assert drive.account == EMAIL and EMAIL in repr(drive)
    assert panel.colab.calls("userdata.get") == [{"call": "userdata.get", "key": "COLABKIT_DRIVE_SERVICE_ACCOUNT"}]
    assert not panel.colab.calls("authenticate_user")  # no pop-up: the key was enough
    log_file = (tmp_path / "fake_colab_calls.jsonl").read_text()
    settings = repr({k: v for k, v in vars(drive.drive.auth).items() if k != "credentials"})
    for text in (caplog.text, repr(drive), repr(drive.drive.auth.credentials), log_file, settings):
        assert "BEGIN PRIVATE KEY" not in text and SA_TOKEN not in text
        assert not any(line in text for line in _secret_lines(service_key))


@pytest.mark.parametrize("access", [None, False], ids=["no secret", "no notebook access"])
def test_without_a_readable_default_secret_colab_signs_you_in(panel, canned, user_adc, service_key, access):
    if access is not None:
        panel(COLABKIT_DRIVE_SERVICE_ACCOUNT=(_key_text(service_key), access))
    canned.add(ok({"access_token": "ya29.colab-user", "expires_in": 3600, "token_type": "Bearer"}),
               listing(folder_item := meta("A", "ML2022")))
    drive = session.connect_drive()
    assert [f.name for f in drive.list("")] == [folder_item["title"]]
    assert panel.colab.calls("authenticate_user")
    assert drive.account == "your Colab account"


@pytest.mark.parametrize("access, says", [(None, "there is no secret named 'MY_DRIVE_KEY'"),
                                          (False, "this notebook has no access to the secret 'MY_DRIVE_KEY'")])
def test_an_explicit_secret_that_cannot_be_read_says_how_to_add_it(panel, service_key, access, says):
    if access is not None:
        panel(MY_DRIVE_KEY=(_key_text(service_key), access))
    with pytest.raises(DriveAPIAuthError) as info:
        session.connect_drive(secret="MY_DRIVE_KEY")
    message = str(info.value)
    assert says in message
    assert "Add new secret" in message and "Notebook access" in message
    assert message.endswith("run colabkit.connect_drive() again.")
    assert "BEGIN PRIVATE KEY" not in message and not panel.colab.calls("authenticate_user")


@pytest.mark.parametrize("value", [
    json.dumps({"type": "authorized_user", "refresh_token": "1//secret-refresh-token"}),
    "/content/drive/MyDrive/keys/secret-refresh-token.json",   # a path pasted instead of the key
    "secret-refresh-token",
])
def test_a_secret_that_is_not_a_key_is_refused_without_echoing_it(panel, value):
    panel(MY_DRIVE_KEY=(value, True))
    with pytest.raises(DriveAPIAuthError, match="not a service-account key") as info:
        session.connect_drive(secret="MY_DRIVE_KEY")
    assert "secret-refresh-token" not in str(info.value) and info.value.__cause__ is None
    assert "whole text of the JSON key" in str(info.value)


def test_a_broken_key_in_a_secret_is_refused_without_echoing_it(panel):
    broken = {"type": "service_account", "client_email": EMAIL, "private_key_id": "k",
              "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n"}
    panel(MY_DRIVE_KEY=(json.dumps(broken), True))
    with pytest.raises(DriveAPIAuthError, match="could not be loaded.*new JSON key") as info:
        session.connect_drive(secret="MY_DRIVE_KEY")
    assert "SECRET" not in str(info.value) and info.value.__cause__ is None


def test_a_timed_out_secret_request_is_explained(panel, tmp_path):
    (tmp_path / "secrets.json").write_text(json.dumps({"MY_DRIVE_KEY": {"timeout": True}}))
    with pytest.raises(DriveAPIAuthError, match="did not answer"):
        session.connect_drive(secret="MY_DRIVE_KEY")


def test_an_explicit_secret_outside_colab_is_explained(monkeypatch):
    monkeypatch.delenv(config.ENV_SERVICE_ACCOUNT, raising=False)
    with pytest.raises(DriveAPIAuthError, match="Secrets panel.*not available here"):
        session.connect_drive(secret="MY_DRIVE_KEY")
