"""Safe, restartable extraction of zip, tar (gz, bz2, xz) and single-file .gz archives.

    folder = colabkit.extract("data/food-11.zip")      # -> data/food-11/ (or data/food-11/food-11/)

Safe on every Python colabkit supports, without tarfile's `data` filter:
names are checked lexically, links are judged against the archive's own
member table and created last, everything is written relative to directory
descriptors with no-follow semantics, and sizes, counts and the compression
ratio are capped against bombs. Restartable and kind to the user's files: a
completion marker records what colabkit wrote, an unchanged archive is
reused, a changed one replaces only colabkit's files.

The modules, lowest first (each imports only those above it):

- `checks`: member names, links resolved in the member table, caps (size, count, ratio).
- `writer`: no-follow creation relative to directory fds; links last; copies where links are refused.
- `marker`: the completion marker, the archive's identity, the in-place update keeping user files.
- `members`: the format of an archive, and reading zip and tar members into the table and the writer.
- `gz`: a single-file .gz, decompressed with its own marker.
- `api`: `extract()`: lock, reuse, work folder, publish, error messages.
"""
