"""Hugging Face Hub ids: use the local cache first, and fail at once when the Hub cannot be reached.

huggingface_hub retries an unreachable endpoint five times with backoff, for every file, so a Hub id
on an offline machine took most of a minute and a screen of retry warnings before its error. Here a
Hub id that is not in the local cache gets one clear line at once when ``HF_HUB_OFFLINE`` is set,
or when one short TCP connect to the endpoint (``HF_ENDPOINT``, or the proxy that applies) fails.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import urllib.parse
import urllib.request
from typing import Optional

from .params import MlmpipeError

PROBE_TIMEOUT_S = 3.0
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full commit hash: the only revision that cannot move

log = logging.getLogger(__name__)


class HubError(MlmpipeError):
    pass


def is_hub_id(name: str) -> bool:
    """True for a name that is no local file or directory but is shaped like a Hub id (``name``, ``owner/name``)."""
    if os.path.exists(name):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def offline_variable() -> Optional[str]:
    """The environment variable that puts huggingface_hub in offline mode, or None."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return None
    return "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def unreachable(url: Optional[str] = None) -> Optional[str]:
    """Why the endpoint cannot be reached (one TCP connect, to the proxy where one applies), or None if it can."""
    parts = urllib.parse.urlsplit(url or endpoint())
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        pp = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = pp.hostname, pp.port or (443 if pp.scheme == "https" else 80)
    if not host:
        return f"no host in {url or endpoint()!r}"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def cached_file(name: str, files: tuple[str, ...], revision: Optional[str] = None) -> Optional[str]:
    """The local cache's copy of the first of ``files`` that Hub model ``name`` has there, or None."""
    from huggingface_hub import try_to_load_from_cache

    for f in files:
        path = try_to_load_from_cache(name, f, revision=revision)
        if isinstance(path, str):  # (not the marker of a file known to be missing)
            return path
    return None


def require_hub(name: str, key: Optional[str], shown: Optional[str] = None, revision: Optional[str] = None,
                fix: Optional[str] = None, state: str = "not a local directory and not in the local Hugging Face "
                                                        "cache") -> None:
    """Raise ``HubError`` (one line, at once) when downloading ``name`` cannot work: offline mode, or an endpoint
    that a short TCP connect cannot reach. ``shown``: the value as the user wrote it (default ``name``);
    ``fix``: what to do instead (default: ``hf download`` it, or use a local directory); ``state``: what is
    known about ``name`` here."""
    shown = repr(shown or name)
    where = (f"{key} = {shown}" if key else shown) + (f" (revision {revision!r})" if revision else "")
    if fix is None:
        from huggingface_hub import constants

        rev = f" --revision {revision}" if revision else ""
        fix = (f"download it once on a machine with network (hf download {name}{rev}; it fills the Hugging Face "
               f"cache, here {constants.HF_HUB_CACHE}), or " + (f"set {key} to" if key else "use") +
               " a local directory")
    var = offline_variable()
    if var:
        raise HubError(f"{where}: {state}, and {var} is set, so nothing is downloaded; {fix}")
    reason = unreachable()
    if reason:
        raise HubError(f"{where}: {state}, and the Hub at {endpoint()} cannot be reached ({reason}); {fix}")


def resolve(name: str, key: Optional[str], files: tuple[str, ...], revision: Optional[str] = None,
            revision_key: Optional[str] = None) -> dict:
    """The extra ``from_pretrained`` arguments for ``name``, a local directory or a Hub id, at ``revision`` (a
    branch, tag or commit of a Hub id; ``revision_key``: the parameter that set it, for errors).

    ``{}`` for a local directory (or a name that cannot be a Hub id: the loader reports it); a revision given
    with a local directory is refused. For a Hub id with any of ``files`` in the local Hugging Face cache at
    that revision, ``{"local_files_only": True}``: no network at all. Otherwise ``{}`` once ``require_hub`` has
    checked that the Hub can be reached (``HubError`` if not). ``revision`` is passed on with a Hub id.
    """
    if not is_hub_id(name):
        if revision is not None and os.path.exists(name):
            raise HubError(f"{revision_key or 'revision'} = {revision!r} with {key or 'the path'} = {name!r}, a local "
                           f"directory: a revision pins a Hub id only; set {revision_key or 'revision'}: null")
        return {}
    pinned = {"revision": revision} if revision is not None else {}
    if cached_file(name, files, revision):
        return {"local_files_only": True, **pinned}
    if revision is not None:
        require_hub(name, key, revision=revision, state="this revision is not in the local Hugging Face cache")
    else:
        require_hub(name, key)
    return pinned


def snapshot_commit(path: Optional[str]) -> Optional[str]:
    """The commit of the cache snapshot that holds ``path`` (``.../snapshots/<commit>/<file>``), or None."""
    parts = os.path.normpath(path).split(os.sep) if path else []
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == "snapshots" and COMMIT.fullmatch(parts[i]):
            return parts[i]
    return None


def provenance(name: Optional[str], key: str, revision: Optional[str], revision_key: str,
               files: tuple[str, ...]) -> dict:
    """What a stage records about what it loaded from ``name``: ``revision`` as asked and ``resolved_commit``, the
    commit of the cache snapshot the loader read (None for a local directory, or nothing loaded). Call it after
    loading (a download fills the cache). A Hub id not pinned to a commit logs one warning naming the commit."""
    if not name or not is_hub_id(name):
        return {"revision": revision, "resolved_commit": None}
    commit = snapshot_commit(cached_file(name, files, revision))
    if commit is None and revision is not None and COMMIT.fullmatch(revision):
        commit = revision
    if revision is None or not COMMIT.fullmatch(revision):
        asked = f"{revision_key} = null (the main branch)" if revision is None else \
            f"{revision_key} = {revision!r}, a branch or tag that can move"
        pin = f"set {revision_key}: {commit}" if commit else f"set {revision_key} to a commit"
        log.warning("%s = %r with %s: this run is not reproducible until the revision is pinned (it loaded commit "
                    "%s); %s", key, name, asked, commit, pin)
    return {"revision": revision, "resolved_commit": commit}
