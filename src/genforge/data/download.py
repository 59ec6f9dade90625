"""Fetch a catalogued dataset's files from its mirrors, safely and resumably.

Only the standard library talks to the network (``urllib.request``); ``tqdm`` draws
the progress bars. A file only ever gets its final name once it passes its check (for
the IDX sets: its decompressed payload matches the catalogue's SHA-256), so a crash, a
cut connection or a bad mirror can leave at most a ``NAME.part`` behind, which the next
run resumes. :func:`fetch_file` is the one-file machinery; :func:`fetch` runs it over a
catalogued dataset, :mod:`genforge.data.pokemon` over an image folder.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from genforge.atomic import fsync_dir, write_atomic
from genforge.data.catalog import DatasetSpec, FolderSpec, RemoteFile
from genforge.errors import GenforgeError

__all__ = ["fetch", "fetch_file", "make_folder", "mirror_bases"]

# A file check: None when the downloaded file at the path is good, else the problem in words.
Check = Callable[[Path], "str | None"]

_CHUNK = 1 << 16
_USER_AGENT = "genforge-data-fetch (+urllib)"
# Codes a server uses for "busy now, ask again"; every other 4xx means the file is
# not there and retrying the same mirror only wastes the user's time.
_TRANSIENT_HTTP = frozenset({408, 425, 429})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_SHA256_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
GIVE_UP_AFTER = 5  # files failing in a row: the mirror or the connection is down, so stop asking


class DownloadError(GenforgeError):
    """No mirror gave a good copy of one file (the network's fault, not the disk's)."""

    def __init__(self, message: str, name: str, problems: str):
        super().__init__(message)
        self.name, self.problems = name, problems


class _Transient(Exception):
    """A failure worth retrying on the same mirror (cut connection, timeout, 5xx)."""


class _Permanent(Exception):
    """A failure that retrying this mirror will not fix (404, bad URL); go to the next one."""


class _LocalError(Exception):
    """The disk, not the network, failed; no mirror can help, so stop at once."""


# What _open answers instead of a response when the server replies 416 to a Range.
_RESTART = object()  # the .part is no prefix of the file there: start from zero
_COMPLETE = object()  # the .part already holds every byte there is


def fetch(
    spec: DatasetSpec | FolderSpec,
    root: Path,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    count: int | None = None,
) -> Path:
    """Download every file of ``spec`` into ``root / spec.folder`` and return that folder.

    Args:
        spec: the dataset to fetch (see :mod:`genforge.data.catalog`): a catalogued IDX
            set, or a folder set of numbered images (see :func:`_fetch_numbered`).
        root: the data root; files land in ``root / spec.folder / <file name>``.
        mirrors: base URLs to try in order (file URL = base + file name); default
            ``None`` uses ``spec.mirrors``.
        progress: draw one tqdm byte bar per downloaded file, or for a folder set one
            bar counting files (default ``True``).
        retries: extra attempts per mirror after the first one fails with a
            connection error, timeout, truncated body or 5xx reply (default 3).
        timeout: socket timeout in seconds for connecting and for each read
            (default 30.0).
        backoff: seconds to wait before the first retry, doubled for each further
            retry on the same mirror (default 1.0; 0 disables waiting).
        count: a folder set's number of files (default ``None``: ``spec.count``).

    A file already present whose decompressed payload matches the catalogue's
    SHA-256 is kept without any request. Otherwise the file is downloaded to
    ``<name>.part``, resuming an existing ``.part`` with an HTTP ``Range`` request,
    verified, fsynced and only then renamed to its final name.

    Raises:
        GenforgeError: a file could not be fetched from any mirror (one line naming
            the file, the last problem per mirror and what to do), or the target
            folder cannot be written.
    """
    numbered = isinstance(spec, FolderSpec)
    if count is not None and (not numbered or count < 1):
        raise GenforgeError(f"--count must be positive, not {count}" if numbered
                            else f"--count is for image folders, not {spec.name}")
    folder = Path(root) / spec.folder
    bases = mirror_bases(mirrors, spec.mirrors, spec.name, folder)
    made = make_folder(folder)
    options = dict(progress=progress, retries=retries, timeout=timeout, backoff=backoff)
    try:
        if numbered:
            retry = _fetch_command(spec, Path(root), bases, count)
            return _fetch_numbered(spec, folder, bases, spec.count if count is None else count, retry=retry,
                                   **options)
        for remote in spec.files:
            target = folder / remote.name
            check = _payload_check(remote)
            if target.is_file() and check(target) is None:
                continue
            fetch_file(remote.name, folder, bases, check, dataset=spec.name, **options)
    except BaseException:  # a failed or interrupted fetch leaves no empty folder behind (a .part it resumes stays)
        remove_empty(made)
        raise
    return folder


def _fetch_numbered(spec: FolderSpec, folder: Path, bases: tuple[str, ...], count: int, *, progress: bool,
                    retry: str, **options) -> Path:
    """Download the numbered images ``1.png`` ... ``count.png`` of folder set ``spec`` into ``folder``.

    There is no published checksum list for these files, so a download is accepted when it
    decodes completely as an image (:func:`genforge.data.folder.read_image`: not empty, not
    truncated, not a decompression bomb); its SHA-256 is then recorded in ``spec.manifest``
    (``sha256sum`` format) in the folder. On a later run a file matching its recorded SHA-256
    is kept without a request, one that does not match is downloaded again, and one the
    manifest does not know is kept (and recorded) if it decodes, so an interrupted run is
    completed, not redone. Files that fail are retried as :func:`fetch` does; the others are
    still fetched, until ``GIVE_UP_AFTER`` files in a row have failed.

    Raises:
        GenforgeError: some files could not be downloaded (one line: how many, which, the
            first one's problems; the good ones stay in place and the manifest lists them),
            or the folder cannot be written.
    """
    manifest = folder / spec.manifest
    recorded = read_manifest(manifest)
    before = dict(recorded)
    failed: list[DownloadError] = []
    streak = 0
    bar = tqdm(total=count, unit="file", desc=spec.name, disable=not progress)
    try:
        for name in spec.file_names(count):
            target = folder / name
            if target.is_file():
                digest = file_sha256(target)
                if recorded.get(name) == digest or (name not in recorded and _image_check(target) is None):
                    recorded[name] = digest
                    bar.update(1)
                    continue
            try:
                fetch_file(name, folder, bases, _image_check, dataset=spec.name, progress=False, **options)
            except DownloadError as e:
                failed.append(e)
                streak += 1
                if streak >= GIVE_UP_AFTER:
                    break
                continue
            streak = 0
            recorded[name] = file_sha256(target)
            bar.update(1)
    finally:
        bar.close()
        if recorded != before:
            write_manifest(manifest, recorded)
    if failed:
        names = ", ".join(e.name for e in failed[:5]) + (", ..." if len(failed) > 5 else "")
        stopped = f"; stopped after {GIVE_UP_AFTER} failures in a row" if streak >= GIVE_UP_AFTER else ""
        raise GenforgeError(
            f"could not download {len(failed)} file(s) of {spec.name} ({names}){stopped}; first problem: "
            f"{failed[0].problems}; the {len(recorded)} good files are in {folder}; run "
            f"`{retry}` again to retry the rest"
        )
    return folder


def _image_check(path: Path) -> str | None:
    from genforge.data.folder import BadImage, read_image

    try:
        read_image(path)
    except BadImage as e:
        return f"not a usable image: {e}"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a ``sha256sum``-style file; empty if there is none. Lines
    that are not ``HEX  NAME`` are ignored (the file is rewritten whole from what is valid)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return {m.group(2): m.group(1) for m in map(_SHA256_LINE.fullmatch, text.splitlines()) if m}


def write_manifest(path: Path, recorded: dict[str, str]) -> None:
    """Write ``recorded`` as ``sha256sum -c`` reads it, atomically, in natural file order."""
    from genforge.data.folder import natural_key

    lines = "".join(f"{recorded[name]}  {name}\n" for name in sorted(recorded, key=natural_key))
    try:
        write_atomic(path, lines)  # a link planted at the manifest is replaced, never written through
    except OSError as e:
        raise GenforgeError(f"cannot write {path}: {_one_line(e.strerror or e)}; check the folder's permissions "
                            "and free space") from None


def _fetch_command(spec: FolderSpec, root: Path, bases: tuple[str, ...], count: int | None) -> str:
    """The command that fetches the same again: the same data root, mirrors and count (a bare
    `genforge data fetch NAME` went to the default root, from the public mirrors)."""
    import shlex

    words = ["genforge", "data", "fetch", spec.name, "--data-root", str(root.expanduser().absolute())]
    if tuple(bases) != tuple(spec.mirrors):
        words += [word for base in bases for word in ("--mirror", base)]
    if count is not None:
        words += ["--count", str(count)]
    return shlex.join(words)


def mirror_bases(mirrors: Sequence[str] | str | None, defaults: Sequence[str], name: str,
                 folder: Path) -> tuple[str, ...]:
    """The base URLs to try: ``mirrors`` if given (one string or several), else ``defaults``."""
    # A lone string would otherwise be iterated character by character.
    bases = (mirrors,) if isinstance(mirrors, str) else tuple(defaults if mirrors is None else mirrors)
    if not bases:
        raise GenforgeError(f"no mirror to download {name} from; place its files in {folder} by hand")
    return bases


def make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; returns the folders it made, deepest first."""
    made = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_empty(made)
        raise GenforgeError(
            f"cannot create {folder}: {_one_line(e.strerror or e)}; choose another data root"
        ) from None
    return made


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) while it is empty; a folder that holds anything stops it."""
    for path in folders:
        try:
            path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


def _payload_check(remote: RemoteFile) -> Check:
    """The check of a catalogued IDX file: its gunzipped payload has the catalogue's SHA-256."""
    def check(path: Path) -> str | None:
        got = _payload_sha256(path)
        if got == remote.sha256:
            return None
        return f"payload sha256 {got or 'unreadable (not a valid gzip file)'}, expected {remote.sha256}"
    return check


def fetch_file(
    name: str,
    folder: Path,
    bases: Sequence[str],
    check: Check,
    *,
    dataset: str,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> Path:
    """Download ``name`` from the first of ``bases`` that serves a copy passing ``check``.

    The body goes to ``folder / (name + ".part")`` (resumed with an HTTP ``Range`` request
    when a ``.part`` is there), is checked, fsynced and only then renamed to ``folder / name``,
    which is returned. Retries, backoff, timeout and progress are as in :func:`fetch`.

    Raises:
        GenforgeError: no mirror gave a good copy (one line naming the file, ``dataset``, the
            last problem per mirror and what to do), or the folder cannot be written.
    """
    retries = max(0, retries)
    target = folder / name
    part = folder / (name + ".part")
    problems: list[str] = []  # the last problem per mirror, for the final message
    wrote: list[bool] = []  # non-empty once the current mirror has written into the .part

    for base in bases:
        # Mirrors recompress the same payload differently, so bytes from the previous
        # mirror must not be resumed against this one. A .part from an earlier run is
        # of unknown origin and worth a try: a bad splice fails the hash and restarts.
        if wrote:
            _unlink(part)
            wrote.clear()
        url = (base if base.endswith("/") else base + "/") + name
        problem = ""
        for attempt in range(retries + 1):
            if attempt and backoff > 0:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                resumed = _download(url, part, wrote, timeout=timeout, progress=progress, desc=name)
            except _Transient as e:
                problem = str(e)
                continue
            except _Permanent as e:
                problem = str(e)
                break
            except _LocalError as e:
                raise GenforgeError(
                    f"cannot write {part}: {e}; free some disk space or choose another data root"
                ) from None

            bad = check(part)
            if bad is None:
                _place(part, target)
                return target
            _unlink(part)
            problem = f"{url}: {bad}"
            # A resumed body may have been spliced onto bytes from another mirror or an
            # older copy, so one clean download from zero deserves a chance; a mirror
            # that served a bad file from scratch will serve it again, so move on.
            if not resumed:
                break
        problems.append(problem)

    raise DownloadError(
        f"could not download {name} of {dataset} ({'; '.join(problems)}); "
        f"check your connection and try again, or place the files in {folder} by hand",
        name, "; ".join(problems),
    )


def _download(url: str, part: Path, wrote: list[bool], *, timeout: float, progress: bool,
              desc: str) -> bool:
    """Bring ``part`` up to the whole body at ``url``; return whether it was resumed.

    Appends to ``wrote`` once it has written into ``part``. Raises _Transient,
    _Permanent or _LocalError, never a raw network exception.
    """
    have = part.stat().st_size if part.is_file() else 0
    try:
        resp = _open(url, have, timeout)
        if resp is _COMPLETE:
            return True
        if resp is _RESTART:
            _unlink(part)
            have = 0
            resp = _open(url, 0, timeout)
    except urllib.error.HTTPError as e:
        e.close()
        cls = _Transient if e.code >= 500 or e.code in _TRANSIENT_HTTP else _Permanent
        raise cls(f"{url}: HTTP {e.code} {_one_line(e.reason)}") from None
    except urllib.error.URLError as e:
        raise _Transient(f"{url}: {_one_line(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"{url}: {_describe(e)}") from None
    except ValueError as e:  # malformed mirror URL
        raise _Permanent(f"{url}: {_one_line(e)}") from None

    with resp:
        start = 0
        if resp.status == 206 and have:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m and m.group(1) is not None and int(m.group(1)) != have:
                _unlink(part)
                raise _Transient(f"{url}: server resumed at byte {m.group(1)}, not {have}")
            start = have
        # Anything but 206 is the whole body from byte 0, whatever we asked for.
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            out = _open_part(part, append=bool(start))
        except OSError as e:
            raise _LocalError(_one_line(e.strerror or e)) from None
        wrote.append(True)
        with out, tqdm(
            total=None if expected is None else start + expected,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
        ) as bar:
            while True:
                try:
                    # read1 hands over whatever has arrived; read() would drop a
                    # partly filled chunk on a timeout, losing it for the resume.
                    chunk = resp.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"{url}: {_describe(e)} after {start + received} bytes") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise _LocalError(_one_line(e.strerror or e)) from None
                received += len(chunk)
                bar.update(len(chunk))
        # http.client returns b"" rather than raising when a server closes early on a
        # Content-Length body, so a short body has to be caught here.
        if expected is not None and received < expected:
            raise _Transient(
                f"{url}: connection closed after {start + received} of {start + expected} bytes"
            )
    return start > 0


def _open(url: str, have: int, timeout: float):
    """Open ``url`` from byte ``have``; on a 416 reply, _RESTART or _COMPLETE."""
    # identity: a transparently gzipped reply would make byte offsets meaningless.
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        m = _CONTENT_RANGE.match(e.headers.get("Content-Range", "") if e.headers else "")
        e.close()
        if m and m.group(2).isdigit() and int(m.group(2)) == have:
            return _COMPLETE
        return _RESTART


def _open_part(part: Path, append: bool):
    """The ``.part`` file for writing, never through a link planted under its name."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(part, flags, 0o644), "ab" if append else "wb")


def _payload_sha256(path: Path) -> str | None:
    """SHA-256 of the gunzipped payload, streamed; ``None`` if it is not valid gzip."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):  # BadGzipFile is an OSError
        return None
    return digest.hexdigest()


def _place(part: Path, target: Path) -> None:
    """Give a verified ``part`` its final name, durably."""
    try:
        # Without the fsync a crash after the rename could leave a final name
        # pointing at blocks never written.
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, target)
        fsync_dir(target.parent)  # persist the rename itself
    except OSError as e:
        raise GenforgeError(
            f"cannot move {part} to {target}: {_one_line(e.strerror or e)}; "
            "check the folder's permissions and free space"
        ) from None


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed after {len(e.partial)} more bytes"
    text = _one_line(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())
