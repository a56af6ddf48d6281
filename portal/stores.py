"""Where session records and token sets live: Redis, or files whose modification time is their expiry.

Nothing here is read as code: token sets are JSON, session files are JSON (cachelib's file cache,
which Flask-Session would use, pickles). Expired files are swept at a bounded rate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import redis

from .redis_target import describe
from .tokens import LockTimeout, StoreUnavailable, TokenSet

log = logging.getLogger(__name__)

# The filesystem backend removes expired session, token and lock files at most this often.
SWEEP_INTERVAL = 60.0
# What a store returns for bytes that are not a session record: never well formed, so the session is cleared.
UNREADABLE = "unreadable_record"


class FileTokenStore:
    """One JSON file per token set under the instance folder, locked with an OS file lock.

    A file's modification time is its expiry, as for the session files beside it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str, suffix: str = ".json") -> Path:
        # Hashed, as the session files are: whatever a record holds, it names no other path.
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + suffix)

    def get(self, key: str) -> TokenSet | None:
        try:
            with self._path(key).open("rb") as handle:
                if os.fstat(handle.fileno()).st_mtime <= time.time():
                    return None
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be read ({error.__class__.__name__})") from None
        return TokenSet.from_json(raw)

    def put(self, key: str, tokens: TokenSet, ttl: int) -> None:
        try:
            write_file(self._path(key), tokens.to_json().encode(), expires_at=time.time() + ttl)
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be written ({error.strerror})") from None

    def delete(self, key: str) -> None:
        # The lock file stays until a sweep: removing it while another process waits on it would split the lock.
        self._path(key).unlink(missing_ok=True)

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        try:
            with filelock.FileLock(self._path(key, ".lock"), timeout=timeout):
                yield
        except filelock.Timeout:
            raise LockTimeout("the token refresh lock was held too long") from None

    def claim(self, name: str, ttl: int) -> bool:
        """True for the first caller only, on every worker of this host; the sweep removes it after ttl seconds."""
        fd, draft = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        os.close(fd)
        try:
            os.utime(draft, (time.time() + ttl, time.time() + ttl))
            # A link fails if the name exists: the claim appears whole, expiry included, or not at all.
            os.link(draft, self._path(name, ".claim"))
            return True
        except FileExistsError:
            return False
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be written ({error.strerror})") from None
        finally:
            os.unlink(draft)

    def remember(self, name: str, value: Any, ttl: int) -> None:
        """Keep a JSON value for ttl seconds (a page's cache); recall returns it until then."""
        try:
            write_file(self._path(name, ".cache"), json.dumps(value).encode(), expires_at=time.time() + ttl)
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be written ({error.strerror})") from None

    def recall(self, name: str) -> Any:
        try:
            with self._path(name, ".cache").open("rb") as handle:
                if os.fstat(handle.fileno()).st_mtime <= time.time():
                    return None
                return json.loads(handle.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # not what remember wrote: as good as not cached
        except OSError as error:
            raise StoreUnavailable(f"the token folder cannot be read ({error.__class__.__name__})") from None

    def ping(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise StoreUnavailable(f"the session folder {self.directory} is not writable")

    def sweep(self, now: float) -> int:
        """Remove expired token sets, and the lock files of token sets that are gone; return how many went."""
        def expired(entry: os.DirEntry[str]) -> bool:
            if entry.name.endswith(".lock"):
                # A lock is taken only after its token set was read, so one without a live token set is idle.
                try:
                    token_gone = os.stat(entry.path.removesuffix(".lock") + ".json").st_mtime <= now
                except FileNotFoundError:
                    token_gone = True
                return token_gone and entry.stat().st_mtime < now - SWEEP_INTERVAL
            return entry.stat().st_mtime <= now

        return sweep_folder(self.directory, now, expired)


def write_file(path: Path, data: bytes, expires_at: float) -> None:
    """Write aside, then rename: a reader never sees half a file. The file's mtime is its expiry."""
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.utime(draft, (expires_at, expires_at))
        os.replace(draft, path)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise


def sweep_folder(folder: Path, now: float, expired: Callable[[os.DirEntry[str]], bool]) -> int:
    """Unlink the files of folder for which expired(entry) is true, and drafts a crash left behind."""
    removed = 0
    written_before = now - SWEEP_INTERVAL
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                # A draft's mtime is already its record's expiry; its ctime says when it was written.
                gone = entry.stat().st_ctime < written_before if entry.name.startswith(".tmp-") else expired(entry)
                if gone:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                # Gone already, or not a file of ours (a folder someone made): the sweep goes on.
                pass
    return removed


class RedisTokenStore:
    """Token sets as Redis strings with a TTL, locked with redis-py's Lock."""

    def __init__(self, client: redis.Redis, prefix: str = "mediaflow:") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> TokenSet | None:
        raw = self._call(self.client.get, f"{self.prefix}tokens:{key}")
        return TokenSet.from_json(raw) if raw else None

    def put(self, key: str, tokens: TokenSet, ttl: int) -> None:
        self._call(self.client.set, f"{self.prefix}tokens:{key}", tokens.to_json(), ex=ttl)

    def delete(self, key: str) -> None:
        self._call(self.client.delete, f"{self.prefix}tokens:{key}")

    @contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[None]:
        # The lock expires on its own if its holder dies mid-refresh.
        lock = self.client.lock(f"{self.prefix}lock:{key}", timeout=timeout + 5, blocking_timeout=timeout)
        if not self._call(lock.acquire):
            raise LockTimeout("the token refresh lock was held too long")
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("The refresh lock expired before its holder released it")
            except redis.exceptions.RedisError:
                pass

    def remember(self, name: str, value: Any, ttl: int) -> None:
        """Keep a JSON value for ttl seconds (a page's cache); recall returns it until then."""
        self._call(self.client.set, f"{self.prefix}cache:{name}", json.dumps(value), ex=ttl)

    def recall(self, name: str) -> Any:
        raw = self._call(self.client.get, f"{self.prefix}cache:{name}")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None  # not what remember wrote: as good as not cached

    def ping(self) -> None:
        self._call(self.client.ping)

    def claim(self, name: str, ttl: int) -> bool:
        """True for the first caller only, on every worker of every replica, until ttl seconds have passed."""
        return bool(self._call(self.client.set, f"{self.prefix}claim:{name}", b"1", nx=True, ex=ttl))

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except redis.exceptions.ConnectionError as error:
            raise StoreUnavailable(f"the session store (Redis) cannot be reached ({describe(error, self.client)})"
                                   ) from None
        except redis.exceptions.TimeoutError:
            raise StoreUnavailable("the session store (Redis) did not answer in time") from None
        except redis.exceptions.RedisError as error:
            # READONLY after a failover, NOAUTH, OOM: the store cannot do its job just now.
            raise StoreUnavailable(f"the session store (Redis) refused ({error.__class__.__name__})") from None


class JsonFileCache:
    """The part of cachelib's FileSystemCache that Flask-Session uses (get, set, delete), as JSON files.

    cachelib pickles values, and prunes only past a threshold, live sessions included. Here a file's
    modification time is its expiry, so a sweep needs one stat per file.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        # The key carries the cookie's text: hashed, no cookie can name a path.
        return self.directory / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> Any:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                if os.fstat(handle.fileno()).st_mtime <= time.time():
                    return None
                raw = handle.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return {UNREADABLE: True}
        return record if isinstance(record, dict) else {UNREADABLE: True}

    def set(self, key: str, value: Any, timeout: float) -> bool:
        write_file(self._path(key), json.dumps(value).encode(), expires_at=time.time() + timeout)
        return True

    def delete(self, key: str) -> bool:
        self._path(key).unlink(missing_ok=True)
        return True

    def sweep(self, now: float) -> int:
        """Remove expired records; return how many went."""
        return sweep_folder(self.directory, now, lambda entry: entry.stat().st_mtime <= now)
