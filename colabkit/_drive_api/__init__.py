"""Google Drive through its API (pydrive2; the `drive-api` extra). Private package: colabkit/__init__.py re-exports.

Modules, lowest first (each imports only those above it):

    config   the extra's names: install hint, scopes, environment and secret names
    auth     credentials: Colab sign-in, Colab secrets, service-account keys, settings files
    errors   Drive's failures (HTTP, tokens, connections) as colabkit errors, with the fix
    client   DriveClient, DriveFile, SyncResult: files and folders by id or path
    session  connect_drive() and the process-wide default client
    mirror   CheckpointMirror: a checkpoint folder kept on Drive (public client methods only)
"""
