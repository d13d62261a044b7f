"""Datasets by Drive id, Drive link or http(s) URL, downloaded once into a verified cache.

    path = colabkit.fetch("1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW", "pikachu.png")

Downloads go through gdown (>= 6.5), which owns Drive's confirmation pages,
resume and retries; colabkit adds what a notebook needs around it: a safe
destination, publication only when complete and verified, turns between
processes, a stamp per file so a later session reuses it without a request,
and one error hierarchy (`colabkit.errors.DownloadError`) whose messages end
with what to do. Private package: colabkit/__init__.py re-exports `fetch`.

Modules, lowest first (each imports only those above it):

    options   Options: the bounds of one fetch (retries, timeout, deadline, max_size, backend)
    sources   Source, parse_source: Drive ids and links, URLs; remote_name for names from outside
    errors    gdown's and requests' failures as colabkit errors, with the fix
    cache     the destination (Target, resolve_output), the manifest of stamps, the folder's lock, cache reuse
    transfer  one file into a temp folder: gdown with colabkit's bar, retries, deadline, max_size; the Drive API path
    folders   Drive folders: listed, checked, downloaded whole and published in one rename
    api       fetch(): the arguments checked, then reuse or download, publish and stamp
"""
