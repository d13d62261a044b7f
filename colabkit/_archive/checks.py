"""Judging an archive before and while it is written: names, links, caps.

Safe on every Python colabkit supports, with or without tarfile's `data`
filter (which this package does not use): every member name is checked
lexically (no absolute paths, drive letters, '..', NUL or control
characters). Symbolic links are judged against the archive's own member table
(`Table`; never `os.path.realpath` on the tree the archive built, which
CVE-2025-4517 fooled); a link that resolves outside the target is refused.
Sizes (a link counted at the size of what it points to), member counts and the
compression ratio are capped against bombs (`Limits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._fsio import unsafe_name_reason
from .._validate import check_count, check_size
from ..errors import ArchiveError, ArchiveTooLargeError, ConfigError, UnsafeArchiveError

DEFAULT_MAX_SIZE = 50 * 2**30  # bytes, uncompressed, all members together
DEFAULT_MAX_MEMBERS = 2_000_000
DEFAULT_MAX_RATIO = 10_000  # uncompressed / archive bytes; deflate never passes ~1032:1, bzip2 and xz of zeros do
RATIO_FLOOR = 256 * 2**20  # the ratio cap applies only past this many uncompressed bytes
MAX_PATH_BYTES = 4000  # a member path (and a link text) stays below PATH_MAX, so cleanup can reach it
MAX_DEPTH = 256  # folders in one member path: each costs its full path in the table and the marker
_MAX_LINK_HOPS = 40  # what Linux allows in one path resolution (MAXSYMLINKS)
_IGNORED_TOP = frozenset({"__MACOSX"})  # macOS Finder's resource forks beside the one real folder


class Limits:
    """The caps against bombs: total size (links at their target's size), member count, ratio."""

    def __init__(self, archive: Path, *, max_size: int, max_members: int, max_ratio: int | float) -> None:
        check_size(max_size, "max_size")
        check_count(max_members, "max_members", minimum=1)
        if type(max_ratio) not in (int, float) or not max_ratio > 0 or max_ratio != max_ratio:
            raise ConfigError(f"max_ratio={max_ratio!r}: give a number > 0 (e.g. 1000).")
        self.archive = archive
        self.max_size, self.max_members, self.max_ratio = max_size, max_members, max_ratio
        self.size = self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveTooLargeError(
                f"{self.archive.name} has more than {self.max_members:,} members (a possible archive bomb); "
                "extraction stopped and nothing was kept. If you trust the archive, raise the cap: "
                "colabkit.extract(..., max_members=...)."
            )

    def add(self, size: int) -> None:
        self.size += max(size, 0)
        if self.size > self.max_size:
            raise ArchiveTooLargeError(
                f"{self.archive.name} unpacks to more than {_human(self.max_size)} (a possible archive bomb); "
                "extraction stopped and nothing was kept. If you trust the archive and have the disk "
                "space, raise the cap: colabkit.extract(..., max_size=<bytes>)."
            )

    def ratio(self, compressed: int) -> None:
        if self.size > RATIO_FLOOR and self.size > self.max_ratio * max(compressed, 1):
            raise ArchiveTooLargeError(
                f"{self.archive.name} unpacks to more than {self.max_ratio:g} times its compressed size "
                f"({_human(self.size)} from {_human(compressed)}; a possible archive bomb); extraction "
                "stopped and nothing was kept. If you trust the archive, raise the cap: "
                "colabkit.extract(..., max_ratio=...)."
            )


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def refuse(archive: Path, member: str, reason: str) -> UnsafeArchiveError:
    """The UnsafeArchiveError for one member, naming it and why; nothing was written outside."""
    return UnsafeArchiveError(
        f"Refusing to extract {archive.name}: member {member!r} {reason}. Nothing was written "
        "outside the target, and the partial extraction was removed. The archive is malformed or "
        "hostile; get it from a source you trust, or extract only the members you trust by hand."
    )


def damaged(archive: Path, exc: BaseException, where: str = "") -> ArchiveError:
    """The ArchiveError for bytes that do not read back (truncated, flipped), naming the member."""
    at = f" at {where!r}" if where else ""
    return ArchiveError(f"{archive.name} is damaged{at} ({exc}); nothing was kept. "
                        "Fetch it again (it may be truncated).")


def _split(text: str) -> list[str]:
    return text.replace("\\", "/").split("/")


def member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """A member's path as checked components (empty for the root), or UnsafeArchiveError."""
    # fast path for the common printable-ASCII name; the full checks below decide everything else
    if name.isascii() and name.isprintable() and "\\" not in name and len(name) <= MAX_PATH_BYTES \
            and name[:1] != "/" and name[1:2] != ":":
        parts = name.split("/")
        if "" not in parts and "." not in parts and ".." not in parts and max(map(len, parts)) <= 255 \
                and len(parts) <= MAX_DEPTH:
            return tuple(parts)
    if "\x00" in name:
        raise refuse(archive, name, "contains a NUL character")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise refuse(archive, name, f"has a path longer than {MAX_PATH_BYTES} bytes")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        raise refuse(archive, name, "has an absolute path")
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    if len(parts) > MAX_DEPTH:  # 2,000 deep took 1 GB for 40 members (every folder's full path is kept)
        raise refuse(archive, name, f"is nested more than {MAX_DEPTH} folders deep")
    for part in parts:
        if part == "..":
            raise refuse(archive, name, "contains '..' and would land outside the target")
        if not (part.isascii() and part.isprintable()):  # fast path: printable ASCII is always safe
            reason = unsafe_name_reason(part)
            if reason:
                raise refuse(archive, name, f"has an unsafe name part ({reason})")
    return parts


class Table:
    """What the archive put where: the namespace links are judged in (never the disk's realpath)."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, ...], str] = {}  # parts -> "file" | "dir" | "link"
        self.sizes: dict[tuple[str, ...], int] = {}
        self.links: dict[tuple[str, ...], str] = {}  # parts -> link text ('/'-separated, relative)
        self.pending: list[tuple[str, tuple[str, ...], str]] = []  # (member name, parts, link text)
        self.tree: list[Any] = [None, {}]  # [kind, or None where only implied, {name: node}] of every path

    def claim(self, archive: Path, name: str, parts: tuple[str, ...], kind: str) -> None:
        # decided here, not by which write comes first (a zip's files are written by two processes);
        # a walk down the trie, so a path 2,000 folders deep costs 2,000 steps, not 2,000 prefixes
        node = self.tree
        for depth, part in enumerate(parts[:-1]):
            child = node[1].get(part)
            if child is None:
                child = node[1][part] = [None, {}]
            elif child[0] == "link":  # it would be written through the link (CVE-2025-4517's shape)
                raise refuse(archive, name, f"lies under the symbolic link {'/'.join(parts[:depth + 1])!r}")
            elif child[0] == "file":
                raise refuse(archive, name, "lies under a path that another member made a file")
            node = child
        leaf = node[1].setdefault(parts[-1], [None, {}])
        if leaf[0] is not None and not (leaf[0] == kind == "dir"):
            raise refuse(archive, name, "appears twice in the archive")
        if kind != "dir" and leaf[1]:
            raise refuse(archive, name, "is a file or link where other members make a folder")
        leaf[0] = kind
        self.kinds[parts] = kind

    def add_link(self, archive: Path, name: str, parts: tuple[str, ...], text: str) -> None:
        if not text or "\x00" in text or len(text.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
            raise refuse(archive, name, "is a symbolic link with an empty, NUL-holding or overlong target")
        normalized = text.replace("\\", "/")
        if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"
                                          and normalized[0].isalpha()):
            raise refuse(archive, name, f"is a symbolic link to the absolute path {text!r}")
        self.claim(archive, name, parts, "link")
        self.links[parts] = normalized
        self.pending.append((name, parts, normalized))

    def resolve(self, archive: Path, name: str, parts: tuple[str, ...]) -> tuple[str, ...]:
        """Where link `parts` leads, following the archive's links lexically; refused if outside."""
        position = list(parts[:-1])
        todo = list(reversed(_split(self.links[parts])))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not position:
                    raise refuse(archive, name, f"is a symbolic link to {self.links[parts]!r}, "
                                                 "which resolves outside the target")
                position.pop()
                continue
            position.append(part)
            text = self.links.get(tuple(position))
            if text is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise refuse(archive, name, "is a symbolic link in a loop or a chain too deep to follow")
                position.pop()  # a link's text is read from the folder holding it
                todo.extend(reversed(_split(text)))
        return tuple(position)

    def files_list(self) -> list[str]:
        return ["/".join(p) for p, kind in self.kinds.items() if kind != "dir"]

    def dirs_list(self) -> list[str]:
        """Every folder, explicit or implied, from the trie (the set of every prefix took GBs when deep)."""
        found, todo = [], [("", self.tree)]
        while todo:
            prefix, node = todo.pop()
            for name, child in node[1].items():
                if child[0] in (None, "dir"):
                    found.append(prefix + name)
                    todo.append((prefix + name + "/", child))
        return sorted(found)

    def top(self) -> str | None:
        """The one top-level folder holding everything (ignoring __MACOSX), or None."""
        tops = {p[0] for p in self.kinds} - _IGNORED_TOP
        if len(tops) != 1:
            return None
        (name,) = tops
        return name if self.kinds.get((name,), "dir") == "dir" else None
