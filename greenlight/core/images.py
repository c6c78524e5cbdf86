"""Image references: parse, pin, and check them against a profile's allow-list.

Pure: no I/O. The grammar is the one docker/distribution ``reference/regexp.go`` defines,
normalised as ``reference/normalize.go`` does for Docker Hub names:

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ registry "/" ] path-component ( "/" path-component )*
    registry    := host [ ":" port ]       recognised only when the first component contains
                                           "." or ":" or is "localhost"
    path-component := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
    tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex       sha256 takes exactly 64 lowercase hex digits

A name without a registry lives on ``docker.io``; a single-component Docker Hub name gets
``library/`` (``nginx`` is ``docker.io/library/nginx``). Greenlight never invents the tag
``latest``: a reference without tag and digest keeps ``tag=None`` and
:func:`require_tag_or_digest` refuses it where a pinned image matters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from greenlight.errors import InputInvalid

DEFAULT_REGISTRY = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
NAME_TOTAL_LENGTH_MAX = 255
TAG_LENGTH_MAX = 128

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*", re.ASCII)
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?",
    re.ASCII,
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_TAG_CHARS = re.compile(r"[\w.-]+", re.ASCII)
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*", re.ASCII)
_HEX = re.compile(r"[a-fA-F0-9]{32,}", re.ASCII)
_SHA256_HEX = re.compile(r"[a-f0-9]{64}", re.ASCII)


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference.

    ``registry`` is a lower-case host with optional port (``ghcr.io``, ``docker.io``,
    ``127.0.0.1:5000``); ``repository`` the path under it (``sma/backend``); ``tag`` and
    ``digest`` (``sha256:<64 hex>``) are optional and may both be set.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified name without tag or digest: ``ghcr.io/sma/backend``."""
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> ImageRef:
        """The same image by ``digest`` alone (tag dropped); the digest is validated."""
        problem = _digest_problem(digest)
        if problem is not None:
            raise InputInvalid(f"cannot pin image '{self}' to {digest!r}: {problem}")
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        """Canonical form ``name[:tag][@digest]``."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``text`` into an :class:`ImageRef`.

    Raises :class:`InputInvalid` naming the reference and the exact problem, e.g.
    ``image reference 'ghcr.io/SMA/x:1' is malformed: repository must be lowercase``.
    """
    problem_or_ref = _parse(text)
    if isinstance(problem_or_ref, str):
        raise InputInvalid(f"image reference {text!r} is malformed: {problem_or_ref}")
    return problem_or_ref


def require_tag_or_digest(ref: ImageRef) -> None:
    """Refuse a reference with neither tag nor digest: Greenlight never assumes ``latest``."""
    if ref.tag is None and ref.digest is None:
        raise InputInvalid(
            f"image reference '{ref}' has neither a tag nor a digest; "
            "Greenlight does not assume 'latest': name a tag or a digest"
        )


def check_allowed(ref: ImageRef, allowed_registries: list[str]) -> None:
    """Refuse ``ref`` unless its name falls under an allow-list entry.

    An entry is a registry (``ghcr.io``) or a registry plus path prefix (``ghcr.io/sma``);
    prefixes match whole components only, so ``ghcr.io/sma`` allows ``ghcr.io/sma/backend``
    but not ``ghcr.io/smash/x``. An empty allow-list allows nothing.
    """
    entries = [_normalise_allow_entry(entry) for entry in allowed_registries]
    if any(ref.name == entry or ref.name.startswith(entry + "/") for entry in entries):
        return
    shown = "[" + ", ".join(allowed_registries) + "]"
    if any(entry.split("/", 1)[0] == ref.registry for entry in entries):
        raise InputInvalid(
            f"repository '{ref.name}' of image '{ref}' is not under any entry of the profile's allow-list {shown}"
        )
    raise InputInvalid(
        f"registry '{ref.registry}' of image '{ref}' is not in the profile's allow-list {shown}"
    )


def image_for_commit(repository: str, commit: str, template: str = "{repository}:{commit}") -> ImageRef:
    """The image a build of ``commit`` produced: ``template`` filled and parsed.

    ``template`` may use ``{repository}``, ``{commit}`` and ``{short}`` (the first 7
    characters of the commit). The commit must be legal as a tag, and the result must carry
    a tag or a digest; otherwise :class:`InputInvalid`.
    """
    problem = _tag_problem(commit)
    if problem is not None:
        raise InputInvalid(f"commit {commit!r} cannot be used in an image tag: {problem}")
    try:
        text = template.format_map({"repository": repository, "commit": commit, "short": commit[:7]})
    except (KeyError, IndexError, ValueError) as e:
        raise InputInvalid(
            f"image tag template {template!r} is invalid: it may use only "
            "{repository}, {commit} and {short}"
        ) from e
    ref = parse_image_ref(text)
    require_tag_or_digest(ref)
    return ref


# --- parsing helpers: each returns a problem description (str) or the parsed value -------------


def _parse(text: str) -> ImageRef | str:
    if not text:
        return "it is empty"
    if any(ch.isspace() for ch in text):
        return "it contains whitespace"
    if text.count("@") > 1:
        return "it contains more than one '@'"
    remainder, _, digest = text.partition("@")
    if "@" in text:
        problem = _digest_problem(digest)
        if problem is not None:
            return problem
    name, tag = _split_tag(remainder)
    if tag is not None:
        problem = _tag_problem(tag)
        if problem is not None:
            return problem
    split = _split_registry(name)
    if isinstance(split, str):
        return split
    registry, repository = split
    problem = _repository_problem(repository)
    if problem is not None:
        return problem
    if len(registry) + 1 + len(repository) > NAME_TOTAL_LENGTH_MAX:
        return f"name is longer than {NAME_TOTAL_LENGTH_MAX} characters"
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest or None)


def _split_tag(remainder: str) -> tuple[str, str | None]:
    """``name:tag`` -> (name, tag); a ':' before the last '/' belongs to a registry port."""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        return remainder[:colon], remainder[colon + 1 :]
    return remainder, None


def _split_registry(name: str) -> tuple[str, str] | str:
    if not name:
        return "name is empty"
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            return f"registry host {first!r} is not a valid host[:port]"
        registry = first.lower()
        if registry in _DOCKER_HUB_ALIASES:
            registry = DEFAULT_REGISTRY
        if not rest:
            return "repository path after the registry is empty"
        repository = rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _repository_problem(repository: str) -> str | None:
    for component in repository.split("/"):
        if not component:
            return "repository has an empty path component (a leading, trailing or double '/')"
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if component != component.lower() and _PATH_COMPONENT.fullmatch(component.lower()):
            return "repository must be lowercase"
        return (
            f"path component {component!r} must be lowercase letters and digits, "
            "separated by '.', '_', '__' or dashes"
        )
    return None


def _tag_problem(tag: str) -> str | None:
    if not tag:
        return "tag is empty"
    if len(tag) > TAG_LENGTH_MAX:
        return f"tag is longer than {TAG_LENGTH_MAX} characters ({len(tag)})"
    if _TAG.fullmatch(tag):
        return None
    if _TAG_CHARS.fullmatch(tag):
        return f"tag {tag!r} must not start with '.' or '-'"
    return f"tag {tag!r} may contain only letters, digits, '_', '.' and '-'"


def _digest_problem(digest: str) -> str | None:
    algorithm, colon, hex_part = digest.partition(":")
    if not colon or not algorithm or not hex_part:
        return f"digest {digest!r} must be <algorithm>:<hex>"
    if not _ALGORITHM.fullmatch(algorithm):
        return f"digest algorithm {algorithm!r} is invalid"
    if algorithm == "sha256":
        if not _SHA256_HEX.fullmatch(hex_part):
            return f"sha256 digest must be 64 lowercase hex characters, got {len(hex_part)} in {digest!r}"
        return None
    if not _HEX.fullmatch(hex_part):
        return f"digest {digest!r} must end in at least 32 hex characters"
    return None


def _normalise_allow_entry(entry: str) -> str:
    host, slash, path = entry.strip().rstrip("/").partition("/")
    host = host.lower()
    if host in _DOCKER_HUB_ALIASES:
        host = DEFAULT_REGISTRY
    return f"{host}{slash}{path}"
