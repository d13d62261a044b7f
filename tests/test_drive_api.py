"""colabkit._drive_api.client: a real pydrive2 client over canned Drive HTTP replies (HttpMockSequence)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import textwrap

import pytest

from colabkit._drive_api import client as drive_api
from colabkit._drive_api import config, session
from colabkit.errors import (
    DriveAPIAuthError,
    DriveAPIError,
    DriveAPINotFoundError,
    DriveAPIPermissionError,
    DriveAPIQuotaError,
    HashMismatchError,
)
from tests._drive_api_helpers import (  # noqa: F401 - fixtures
    FAKE_TOKEN,
    canned,
    client,
    error,
    folder,
    listing,
    media,
    meta,
    ok,
    service_key,
    upload,
)
from tests.conftest import run_python

pytestmark = [
    pytest.mark.timeout(60),
    # oauth2client signs with pyOpenSSL's deprecated sign(); pydrive2 pins both
    pytest.mark.filterwarnings("ignore:sign\\(\\) is deprecated:DeprecationWarning"),
]

DATA = b"weights and biases " * 50


@pytest.fixture
def out(tmp_path):
    """An empty folder for downloads (tmp_path also holds the isolated VM and Drive)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _leftovers(path):
    """Hidden temp files a download could leave (colabkit's `.NAME.<pid>-<random>.tmp`, or any other)."""
    return sorted(p.name for p in path.iterdir() if p.name.startswith(".") or p.name.endswith((".part", ".tmp")))


# --------------------------------------------------------------------------- download


def test_download_is_verified_and_atomic(client, canned, out):
    canned.add(ok(meta("F1", "train.zip", DATA)), media(DATA))
    dest = out / "data" / "train.zip"
    assert client.download("F1", dest, progress=False) == dest
    assert dest.read_bytes() == DATA
    assert _leftovers(dest.parent) == []
    methods = [(r[1], "alt=media" in r[0]) for r in canned.request_sequence]
    assert methods == [("GET", False), ("GET", True)]  # metadata (md5), then the content
    assert all(r[3]["authorization"] == f"Bearer {FAKE_TOKEN}" for r in canned.request_sequence)


def test_download_into_a_folder_keeps_drive_name(client, canned, out):
    canned.add(ok(meta("F1", "labels.csv", b"a,b\n")), media(b"a,b\n"))
    assert client.download("F1", out, progress=False) == out / "labels.csv"


def test_md5_mismatch_leaves_nothing_and_keeps_the_old_file(client, canned, out):
    dest = out / "model.pt"
    dest.write_bytes(b"the previous, good copy")
    canned.add(ok(meta("F1", "model.pt", DATA)), media(DATA[:-1] + b"X"))
    with pytest.raises(HashMismatchError, match="corrupted.*run the download again"):
        client.download("F1", dest, progress=False)
    assert dest.read_bytes() == b"the previous, good copy"
    assert _leftovers(out) == []


def test_failure_midway_leaves_nothing_behind(client, canned, out, monkeypatch):
    # pydrive2's own GetContentFile would leave a partial (or 0-byte) file here
    monkeypatch.setattr(drive_api, "CHUNK_SIZE", 100)
    first = ({"status": "206", "content-range": f"bytes 0-99/{len(DATA)}"}, DATA[:100])
    canned.add(ok(meta("F1", "big.bin", DATA)))
    for _ in range(client.retries + 1):  # every attempt dies on the second chunk
        canned.add(first, error(503, "backendError"))
    with pytest.raises(DriveAPIError, match="failed on its side.*Try again"):
        client.download("F1", out / "big.bin", progress=False)
    assert list(out.iterdir()) == []
    assert canned.left == 0


def test_not_found_says_what_to_check(client, canned, out):
    canned.add(error(404, "notFound", "File not found: NOPE."))
    with pytest.raises(DriveAPINotFoundError) as info:
        client.download("NOPE", out / "x", progress=False)
    assert "File not found: NOPE" in str(info.value) and "shared with the account" in str(info.value)
    assert list(out.iterdir()) == []


def test_download_quota_is_reported_at_once_with_the_workaround(client, canned, out):
    canned.add(ok(meta("F1", "popular.zip", DATA)),
               error(403, "downloadQuotaExceeded", "The download quota for this file has been exceeded."))
    with pytest.raises(DriveAPIQuotaError, match="24 hours.*Make a copy"):
        client.download("F1", out / "popular.zip", progress=False)
    assert canned.left == 0 and len(canned.request_sequence) == 2  # not retried: it lasts a day
    assert list(out.iterdir()) == []


def test_permission_denied_names_the_account(client, canned, out):
    canned.add(ok(meta("F1", "secret.bin", DATA)), error(403, "insufficientFilePermissions", "no access"))
    with pytest.raises(DriveAPIPermissionError, match="share the file"):
        client.download("F1", out / "secret.bin", progress=False)


def test_google_docs_file_has_nothing_to_download(client, canned, out):
    canned.add(ok(meta("D1", "notes", mime="application/vnd.google-apps.document")))
    with pytest.raises(DriveAPIError, match="File → Download"):
        client.download("D1", out / "notes", progress=False)


# --------------------------------------------------------------------------- retries and auth


def test_rate_limit_is_retried_then_reported(client, canned):
    for _ in range(client.retries + 1):
        canned.add(error(403, "rateLimitExceeded", "Rate Limit Exceeded"))
    with pytest.raises(DriveAPIQuotaError, match="after 2 retries.*wait a few minutes"):
        client.list("")
    assert len(canned.request_sequence) == client.retries + 1


def test_rate_limit_then_success(client, canned):
    canned.add(error(429, "userRateLimitExceeded"), error(500, "backendError"),
               listing(meta("F1", "a.txt", b"a")))
    assert [f.name for f in client.list("")] == ["a.txt"]


def test_rejected_token_is_an_auth_error(client, canned):
    canned.add(({"status": "401"}, json.dumps({"error": {"code": 401, "message": "Invalid Credentials"}})))
    with pytest.raises(DriveAPIAuthError, match="credentials") as info:
        client.list("")
    assert FAKE_TOKEN not in str(info.value)


def test_no_credentials_outside_colab_says_how_to_get_them(monkeypatch):
    monkeypatch.delenv(config.ENV_SERVICE_ACCOUNT, raising=False)
    monkeypatch.delenv(config.ENV_SETTINGS, raising=False)
    with pytest.raises(DriveAPIAuthError, match=config.ENV_SERVICE_ACCOUNT):
        session.connect_drive()


def test_bad_service_account_files(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_SERVICE_ACCOUNT, str(tmp_path / "missing.json"))
    with pytest.raises(DriveAPIAuthError, match=f"does not exist.*{config.ENV_SERVICE_ACCOUNT}|"
                                                f"{config.ENV_SERVICE_ACCOUNT}.*does not exist"):
        session.connect_drive()
    user_token = tmp_path / "token.json"
    user_token.write_text(json.dumps({"type": "authorized_user", "refresh_token": "1//secret-refresh"}))
    with pytest.raises(DriveAPIAuthError, match="not a service-account key") as info:
        session.connect_drive(user_token)
    assert "secret-refresh" not in str(info.value)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
                                  "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n"
                                                 "-----END PRIVATE KEY-----\n", "private_key_id": "k"}))
    with pytest.raises(DriveAPIAuthError, match="could not be loaded.*new JSON key") as info:
        session.connect_drive(broken)
    assert "SECRET" not in str(info.value) and info.value.__cause__ is None


# --------------------------------------------------------------------------- upload and folders


def test_ensure_folder_creates_only_what_is_missing_and_remembers(client, canned):
    canned.add(listing(folder("A", "ML2022")),            # ML2022 exists
               listing(), ok(folder("B", "ckpt", "A")),   # ckpt is created in it
               listing(), ok(folder("C", "run1", "B")))
    assert client.ensure_folder("ML2022/ckpt/run1") == "C"
    created = [json.loads(r[2]) for r in canned.requests("POST")]
    assert created == [{"title": "ckpt", "mimeType": config.FOLDER_MIME, "parents": [{"id": "A"}]},
                       {"title": "run1", "mimeType": config.FOLDER_MIME, "parents": [{"id": "B"}]}]
    assert "title = 'ML2022'" in canned.queries()[0]
    sent = len(canned.request_sequence)
    assert client.ensure_folder("ML2022/ckpt/run1/") == "C"
    assert len(canned.request_sequence) == sent  # cached: no second round of look-ups


def test_upload_new_then_replace_keeps_the_id(client, canned, tmp_path):
    source = tmp_path / "model.pt"
    source.write_bytes(DATA)
    canned.add(listing(folder("A", "out")), listing(), upload(meta("F1", "model.pt", DATA, parent="A")))
    stored = client.upload(source, "out")
    assert (stored.id, stored.md5) == ("F1", hashlib.md5(DATA).hexdigest())
    body = json.loads(canned.requests("POST", "/upload/")[0][2])
    assert body["title"] == "model.pt" and body["parents"] == [{"id": "A"}]

    source.write_bytes(DATA + b"more")
    canned.add(listing(meta("F1", "model.pt", DATA, parent="A")),
               upload(meta("F1", "model.pt", DATA + b"more", parent="A")))
    assert client.upload(source, "out").id == "F1"
    assert canned.requests("PUT", "/upload/drive/v2/files/F1")  # files.update, not a second file
    assert canned.uploaded() == [DATA, DATA + b"more"]


def test_upload_that_drive_stores_corrupted_is_an_error(client, canned, tmp_path):
    source = tmp_path / "model.pt"
    source.write_bytes(DATA)
    canned.add(listing(), upload(meta("F1", "model.pt", b"something else")))
    with pytest.raises(DriveAPIError, match="upload was corrupted"):
        client.upload(source)
    assert source.read_bytes() == DATA


def test_list_of_a_missing_folder(client, canned):
    canned.add(listing())
    with pytest.raises(DriveAPINotFoundError, match="no folder 'nope'"):
        client.list("nope")


# --------------------------------------------------------------------------- sync


def test_sync_up_sends_only_changed_files(client, canned, tmp_path):
    local = tmp_path / "ckpt"
    (local / "sub").mkdir(parents=True)
    (local / "same.bin").write_bytes(b"same")
    (local / "edited.bin").write_bytes(b"new!")          # same size as on Drive, other md5
    (local / "grown.bin").write_bytes(b"longer now")
    (local / "fresh.bin").write_bytes(b"fresh")
    (local / "sub" / "inner.bin").write_bytes(b"inner")
    canned.add(
        listing(folder("R", "runs")),
        listing(meta("S", "same.bin", b"same", parent="R"), meta("E", "edited.bin", b"old!", parent="R"),
                meta("G", "grown.bin", b"short", parent="R"), folder("U", "sub", "R")),
        upload(meta("E", "edited.bin", b"new!", parent="R")),
        upload(meta("N", "fresh.bin", b"fresh", parent="R")),
        upload(meta("G", "grown.bin", b"longer now", parent="R")),
        listing(folder("U", "sub", "R")),                      # runs/sub
        listing(meta("I", "inner.bin", b"inner", parent="U")),
    )
    result = client.sync_up(local, "runs")
    assert sorted(result.transferred) == ["edited.bin", "fresh.bin", "grown.bin"]
    assert sorted(result.unchanged) == ["same.bin", "sub/inner.bin"]
    assert sorted(canned.uploaded()) == sorted([b"new!", b"fresh", b"longer now"])
    assert canned.left == 0


def test_sync_down_fetches_only_changed_files(client, canned, tmp_path):
    local = tmp_path / "restore"
    local.mkdir()
    (local / "same.bin").write_bytes(b"same")
    (local / "stale.bin").write_bytes(b"old!")
    (local / "local-only.txt").write_text("kept")
    canned.add(
        listing(folder("R", "runs")),
        listing(meta("S", "same.bin", b"same", parent="R"), meta("T", "stale.bin", b"new!", parent="R"),
                meta("D", "doc", parent="R", mime="application/vnd.google-apps.document"),
                folder("U", "sub", "R")),
        listing(meta("I", "inner.bin", b"inner", parent="U")),  # the whole tree is listed first
        media(b"new!"),
        media(b"inner"),
    )
    result = client.sync_down("runs", local)
    assert sorted(result.transferred) == ["stale.bin", "sub/inner.bin"]
    assert result.unchanged == ["same.bin"] and result.skipped == ["doc"]
    assert (local / "stale.bin").read_bytes() == b"new!"
    assert (local / "sub" / "inner.bin").read_bytes() == b"inner"
    assert (local / "local-only.txt").read_text() == "kept"
    assert len(canned.requests("GET", "alt=media")) == 2 and canned.left == 0


# --------------------------------------------------------------------------- real credential paths


SA_TOKEN = "ya29.SERVICE-ACCOUNT-TOKEN-secret"


def test_service_account_signs_in_and_keeps_secrets_out_of_sight(service_key, canned, caplog, monkeypatch):
    path, pem = service_key
    monkeypatch.setenv(config.ENV_SERVICE_ACCOUNT, str(path))
    caplog.set_level(logging.DEBUG)
    canned.add(ok({"access_token": SA_TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
               listing(meta("F1", "a.txt", b"a")),
               error(404, "notFound", "File not found: X."))
    drive = session.connect_drive(retries=0)
    assert [f.name for f in drive.list("")] == ["a.txt"]
    token_request, api_request = canned.request_sequence[:2]
    assert token_request[0] == "https://oauth2.googleapis.com/token"  # a real signed JWT grant
    assert "assertion=" in token_request[2]
    grant = token_request[2].split("assertion=")[1].split("&")[0]
    assert api_request[3][b"Authorization"] == f"Bearer {SA_TOKEN}".encode()  # oauth2client sends bytes
    with pytest.raises(DriveAPINotFoundError) as info:
        drive.metadata("X")
    assert "trainer@demo.iam.gserviceaccount.com" in repr(drive)
    secret_line = pem.splitlines()[5]
    for text in (caplog.text, repr(drive), repr(drive.drive.auth.credentials), str(info.value)):
        assert SA_TOKEN not in text and secret_line not in text and "BEGIN PRIVATE KEY" not in text
        assert grant[-40:] not in text  # the signed JWT grant (oauth2client logs it at DEBUG)


def test_settings_file_token_is_private(service_key, canned, tmp_path):
    path, _ = service_key
    token = tmp_path / "creds" / "token.json"
    token.parent.mkdir()
    token.write_text("")
    token.chmod(0o644)  # an older, world-readable token file
    settings = tmp_path / "settings.yaml"
    settings.write_text(textwrap.dedent(f"""\
        client_config_backend: service
        service_config:
          client_json_file_path: {path}
        save_credentials: True
        save_credentials_backend: file
        save_credentials_file: {token}
        oauth_scope:
          - https://www.googleapis.com/auth/drive
        """))
    canned.add(ok({"access_token": SA_TOKEN, "expires_in": 3600, "token_type": "Bearer"}), listing())
    drive = session.connect_drive(settings_file=settings)
    assert drive.list("") == []
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert SA_TOKEN in token.read_text()  # pydrive2 saved the refreshed token there, privately


def test_settings_file_with_a_saved_user_token_needs_no_browser(canned, tmp_path, monkeypatch):
    import datetime

    from oauth2client.client import OAuth2Credentials

    token = tmp_path / "user-token.json"
    expiry = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
    token.write_text(OAuth2Credentials("ya29.user-token-secret", "cid", "client-secret-value", "1//refresh",
                                       expiry, "https://oauth2.googleapis.com/token", None).to_json())
    token.chmod(0o664)
    settings = tmp_path / "settings.yaml"
    settings.write_text(textwrap.dedent(f"""\
        client_config_backend: settings
        client_config:
          client_id: cid
          client_secret: client-secret-value
        save_credentials: True
        save_credentials_backend: file
        save_credentials_file: {token}
        """))
    monkeypatch.setenv(config.ENV_SETTINGS, str(settings))
    monkeypatch.setenv("GDRIVE_NON_INTERACTIVE", "1")  # a browser prompt would fail the test
    canned.add(listing(meta("F1", "a.txt", b"a")))
    drive = session.connect_drive()
    assert [f.name for f in drive.list("")] == ["a.txt"]
    assert canned.request_sequence[0][3][b"Authorization"] == b"Bearer ya29.user-token-secret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert "user-token-secret" not in repr(drive) and "client-secret" not in repr(drive)


def test_colab_signs_in_through_google_colab_auth(fake_colab, canned, tmp_path, monkeypatch):
    # what authenticate_user() leaves behind: application default credentials of the user
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
                               "client_secret": "client-secret-value", "refresh_token": "1//refresh-secret"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    for var in (config.ENV_SERVICE_ACCOUNT, config.ENV_SETTINGS):
        monkeypatch.delenv(var, raising=False)
    canned.add(ok({"access_token": "ya29.colab-user", "expires_in": 3600, "token_type": "Bearer"}),
               listing(folder("A", "ML2022")))
    drive = session.connect_drive()
    assert [f.name for f in drive.list("")] == ["ML2022"]
    assert fake_colab.calls("authenticate_user")
    assert canned.request_sequence[0][0] == "https://oauth2.googleapis.com/token"
    assert canned.request_sequence[1][3]["authorization"] == "Bearer ya29.colab-user"
    assert "refresh-secret" not in repr(drive) and "client-secret" not in repr(drive)


# --------------------------------------------------------------------------- without the extra

BLOCK_PYDRIVE2 = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pydrive2" or name.startswith("pydrive2."):
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, Block())
"""


def test_missing_extra_says_how_to_install():
    code = BLOCK_PYDRIVE2 + textwrap.dedent("""
        import colabkit, colabkit._drive_api.client
        from colabkit.errors import MissingDependencyError
        for call in (lambda: colabkit.connect_drive("key.json"),
                     lambda: colabkit._drive_api.client.DriveClient(None)):
            try:
                call()
            except MissingDependencyError as exc:
                print(exc)
        """)
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all('pip install "colabkit-ml[drive-api]"' in line for line in lines)


# --------------------------------------------------------------------------- real Drive


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("COLABKIT_TEST_SERVICE_ACCOUNT"),
                    reason="needs a real service-account key in COLABKIT_TEST_SERVICE_ACCOUNT")
def test_real_drive_round_trip(tmp_path):  # pragma: no cover - needs Google
    drive = session.connect_drive(os.environ["COLABKIT_TEST_SERVICE_ACCOUNT"])
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "hello.txt").write_text("hello")
    drive.sync_up(tmp_path / "up", "colabkit-test")
    assert drive.sync_up(tmp_path / "up", "colabkit-test").transferred == []  # nothing changed
    drive.sync_down("colabkit-test", tmp_path / "down")
    assert (tmp_path / "down" / "hello.txt").read_text() == "hello"


# --------------------------------------------------------------------------- layout


def test_drive_api_modules_form_layers_without_private_imports():
    from tests._drive_api_helpers import assert_layered

    assert_layered("colabkit._drive_api")


def test_the_mirror_uses_only_the_clients_public_methods():
    import ast
    import inspect

    from colabkit._drive_api import mirror

    tree = ast.parse(inspect.getsource(mirror))
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "client"}
    assert used and not [name for name in used if name.startswith("_")], used
    assert used <= {name for name in dir(drive_api.DriveClient) if not name.startswith("_")}


def test_old_import_paths_still_work():
    from colabkit._drive_api.client import CheckpointMirror, default_client, is_signed_in, parse_remote
    from colabkit._drive_api.mirror import CheckpointMirror as moved

    assert CheckpointMirror is moved and callable(default_client) and callable(is_signed_in)
    assert parse_remote("drive:a/b/") == "a/b"


@pytest.mark.parametrize("reply, error_type, ending", [
    (error(400, "badRequest", "Invalid query"), DriveAPIError, "correct that and run this again."),
    (error(401, "authError", "Invalid Credentials"), DriveAPIAuthError, "sign in again."),  # refresh refused
    (error(403, "accessNotConfigured", "Drive API has not been used"), DriveAPIAuthError,
     "Library → Google Drive API)."),
])
def test_http_errors_name_what_drive_said_and_end_with_the_fix(client, canned, reply, error_type, ending):
    canned.add(reply)
    with pytest.raises(error_type) as info:
        client.list("")
    message = str(info.value)
    assert "while listing folder root" in message and message.endswith(ending), message
    assert FAKE_TOKEN not in message
