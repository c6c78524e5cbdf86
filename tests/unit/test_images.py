"""Image references: the distribution grammar, Docker Hub defaults, pinning and the allow-list."""

from __future__ import annotations

import pytest

from greenlight.core.images import (
    ImageRef,
    check_allowed,
    image_for_commit,
    parse_image_ref,
    require_tag_or_digest,
)
from greenlight.errors import InputInvalid

D = "sha256:" + "ab" * 32
D2 = "sha256:" + "0123456789abcdef" * 4

VALID = [
    # text, registry, repository, tag, digest
    ("ghcr.io/sma/backend:abc123", "ghcr.io", "sma/backend", "abc123", None),
    ("ghcr.io/sma/backend", "ghcr.io", "sma/backend", None, None),
    (f"ghcr.io/sma/backend@{D}", "ghcr.io", "sma/backend", None, D),
    (f"ghcr.io/sma/backend:v1@{D}", "ghcr.io", "sma/backend", "v1", D),
    ("GHCR.IO/sma/backend:v1", "ghcr.io", "sma/backend", "v1", None),
    ("nginx", "docker.io", "library/nginx", None, None),
    ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
    ("bitnami/postgresql:16", "docker.io", "bitnami/postgresql", "16", None),
    ("docker.io/nginx:1", "docker.io", "library/nginx", "1", None),
    ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
    ("localhost/app:dev", "localhost", "app", "dev", None),
    ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
    ("127.0.0.1:5000/sma/backend:v2", "127.0.0.1:5000", "sma/backend", "v2", None),
    ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None),
    (
        "registry.example.com:443/team/sub/app:1.0-rc.1",
        "registry.example.com:443",
        "team/sub/app",
        "1.0-rc.1",
        None,
    ),
    ("ghcr.io/a.b_c__d--e/x:T_ag.1-x", "ghcr.io", "a.b_c__d--e/x", "T_ag.1-x", None),
    ("ghcr.io/sma/backend:" + "a" * 128, "ghcr.io", "sma/backend", "a" * 128, None),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    (f"ghcr.io/x@sha512:{'ab' * 64}", "ghcr.io", "x", None, f"sha512:{'ab' * 64}"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), VALID)
def test_valid_references_parse_to_their_parts(text, registry, repository, tag, digest):
    """A legal reference parses into registry, repository, tag and digest, with Docker Hub defaults."""
    assert parse_image_ref(text) == ImageRef(registry, repository, tag, digest)


INVALID = [
    # text, fragment of the problem
    ("", "it is empty"),
    ("ghcr.io/SMA/x:1", "repository must be lowercase"),
    ("Nginx", "repository must be lowercase"),
    ("ghcr.io/sma//backend:1", "empty path component"),
    ("ghcr.io/sma/backend/:1", "empty path component"),
    ("/sma/backend", "empty path component"),
    ("ghcr.io/:1", "repository path after the registry is empty"),
    ("ghcr.io/sma/backend:", "tag is empty"),
    ("ghcr.io/sma/backend:" + "a" * 129, "tag is longer than 128 characters (129)"),
    ("ghcr.io/sma/backend:.hidden", "must not start with '.' or '-'"),
    ("ghcr.io/sma/backend:-x", "must not start with '.' or '-'"),
    ("ghcr.io/sma/backend:v1+build", "may contain only letters"),
    ("ghcr.io/sma/backend@sha256:abc", "64 lowercase hex characters, got 3"),
    ("ghcr.io/sma/backend@sha256:" + "a" * 63, "got 63"),
    ("ghcr.io/sma/backend@sha256:" + "a" * 65, "got 65"),
    ("ghcr.io/sma/backend@sha256:" + "A" * 64, "64 lowercase hex"),
    ("ghcr.io/sma/backend@", "must be <algorithm>:<hex>"),
    ("ghcr.io/sma/backend@abc", "must be <algorithm>:<hex>"),
    (f"ghcr.io/sma/backend@{D}@{D}", "more than one '@'"),
    (" ghcr.io/sma/backend:1", "whitespace"),
    ("ghcr.io/sma/backend:1 ", "whitespace"),
    ("ghcr.io/sma back:1", "whitespace"),
    ("ghcr.io/sma/back_-end:1", "path component 'back_-end'"),
    ("ghcr.io/sma/-backend:1", "path component '-backend'"),
    ("ghcr.io/sma/back___end:1", "path component 'back___end'"),
    ("ghcr.io:port/x:1", "registry host 'ghcr.io:port'"),
    ("-bad.io/x:1", "registry host '-bad.io'"),
    ("ghcr.io/" + "a" * 250, "name is longer than 255"),
]


@pytest.mark.parametrize(("text", "problem"), INVALID)
def test_invalid_references_are_refused_naming_the_reference_and_problem(text, problem):
    """A malformed reference raises InputInvalid that quotes the reference and says what is wrong."""
    with pytest.raises(InputInvalid) as info:
        parse_image_ref(text)
    message = str(info.value)
    assert message.startswith(f"image reference {text!r} is malformed: ")
    assert problem in message


def test_uppercase_repository_message_is_exact():
    """The message for an uppercase repository reads as the product documents it."""
    with pytest.raises(
        InputInvalid, match=r"^image reference 'ghcr.io/SMA/x:1' is malformed: repository must be lowercase$"
    ):
        parse_image_ref("ghcr.io/SMA/x:1")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ghcr.io/sma/backend:v1", "ghcr.io/sma/backend:v1"),
        ("nginx", "docker.io/library/nginx"),
        (f"ghcr.io/sma/backend:v1@{D}", f"ghcr.io/sma/backend:v1@{D}"),
        (f"localhost:5000/app@{D}", f"localhost:5000/app@{D}"),
    ],
)
def test_str_is_canonical_and_reparses_to_the_same_ref(text, canonical):
    """str() gives name[:tag][@digest], and parsing it again gives an equal ref."""
    ref = parse_image_ref(text)
    assert str(ref) == canonical
    assert parse_image_ref(str(ref)) == ref


def test_name_is_registry_and_repository():
    """The name property joins registry and repository without tag or digest."""
    assert parse_image_ref("ghcr.io/sma/backend:v1").name == "ghcr.io/sma/backend"


def test_pinned_drops_the_tag_and_sets_the_digest():
    """pinned() keeps the name, drops the tag and carries only the digest."""
    pinned = parse_image_ref(f"ghcr.io/sma/backend:v1@{D}").pinned(D2)
    assert pinned == ImageRef("ghcr.io", "sma/backend", None, D2)
    assert str(pinned) == f"ghcr.io/sma/backend@{D2}"


def test_pinned_refuses_a_malformed_digest():
    """pinned() with a digest that is not sha256:<64 hex> raises InputInvalid."""
    with pytest.raises(InputInvalid, match=r"cannot pin image 'ghcr\.io/sma/backend:v1'"):
        parse_image_ref("ghcr.io/sma/backend:v1").pinned("sha256:123")


@pytest.mark.parametrize(
    ("text", "ok"),
    [("ghcr.io/x:v1", True), (f"ghcr.io/x@{D}", True), ("ghcr.io/x", False), ("nginx", False)],
)
def test_require_tag_or_digest_refuses_implicit_latest(text, ok):
    """A reference with neither tag nor digest is refused; Greenlight never assumes 'latest'."""
    ref = parse_image_ref(text)
    if ok:
        require_tag_or_digest(ref)
    else:
        with pytest.raises(InputInvalid, match="neither a tag nor a digest"):
            require_tag_or_digest(ref)


ALLOW = [
    # image, allow-list, allowed
    ("ghcr.io/sma/backend:v1", ["ghcr.io"], True),
    ("ghcr.io/sma/backend:v1", ["ghcr.io/sma"], True),
    ("ghcr.io/sma/backend:v1", ["ghcr.io/sma/"], True),
    ("ghcr.io/sma/backend:v1", ["ghcr.io/sma/backend"], True),
    ("ghcr.io/smash/x:v1", ["ghcr.io/sma"], False),
    ("ghcr.io/sma:v1", ["ghcr.io/sma"], True),
    ("ghcr.io/sma/backend:v1", ["GHCR.io/sma"], True),
    ("nginx:1", ["ghcr.io"], False),
    ("nginx:1", ["docker.io"], True),
    ("nginx:1", ["index.docker.io/library"], True),
    ("ghcr.io.evil.com/sma/x:1", ["ghcr.io"], False),
    ("127.0.0.1:5000/sma/x:1", ["127.0.0.1:5000"], True),
    ("127.0.0.1:5001/sma/x:1", ["127.0.0.1:5000"], False),
    ("ghcr.io/sma/x:1", [], False),
    ("ghcr.io/sma/x:1", ["docker.io", "ghcr.io/sma"], True),
]


@pytest.mark.parametrize(("text", "allowed", "ok"), ALLOW)
def test_allow_list_matches_registries_and_prefixes_on_component_boundaries(text, allowed, ok):
    """An image is allowed when its name equals or sits under an entry, component by component."""
    ref = parse_image_ref(text)
    if ok:
        check_allowed(ref, allowed)
    else:
        with pytest.raises(InputInvalid, match=r"allow-list \["):
            check_allowed(ref, allowed)


def test_allow_list_refusal_names_the_registry_and_the_list():
    """A refused registry's message names the registry, the image and the allow-list."""
    with pytest.raises(InputInvalid) as info:
        check_allowed(parse_image_ref("nginx:1"), ["ghcr.io"])
    assert str(info.value) == (
        "registry 'docker.io' of image 'docker.io/library/nginx:1' is not in the profile's allow-list [ghcr.io]"
    )


def test_allow_list_refusal_under_a_known_registry_names_the_repository():
    """When the registry is listed but the path prefix is not, the message names the repository."""
    with pytest.raises(InputInvalid, match=r"repository 'ghcr.io/smash/x' .* allow-list \[ghcr.io/sma\]"):
        check_allowed(parse_image_ref("ghcr.io/smash/x:1"), ["ghcr.io/sma"])


@pytest.mark.parametrize(
    ("repository", "commit", "template", "expected"),
    [
        ("ghcr.io/sma/backend", "0a1b2c3d4e5f", "{repository}:{commit}", "ghcr.io/sma/backend:0a1b2c3d4e5f"),
        (
            "ghcr.io/sma/backend",
            "0a1b2c3d4e5f",
            "{repository}:sha-{short}",
            "ghcr.io/sma/backend:sha-0a1b2c3",
        ),
        ("sma/web", "abc", "{repository}:{commit}", "docker.io/sma/web:abc"),
    ],
)
def test_image_for_commit_fills_the_template(repository, commit, template, expected):
    """image_for_commit fills {repository}, {commit} and {short} and parses the result."""
    assert str(image_for_commit(repository, commit, template)) == expected


@pytest.mark.parametrize(
    ("commit", "template", "problem"),
    [
        ("", "{repository}:{commit}", "commit '' cannot be used in an image tag: tag is empty"),
        ("abc/def", "{repository}:{commit}", "commit 'abc/def' cannot be used"),
        ("-abc", "{repository}:{commit}", "must not start"),
        ("a" * 129, "{repository}:{commit}", "longer than 128"),
        ("abc", "{repository}:{sha}", "template '{repository}:{sha}' is invalid"),
        ("abc", "{repository}", "neither a tag nor a digest"),
        ("abc", "{repository}:{commit}:{commit}", "is malformed"),
    ],
)
def test_image_for_commit_refuses_illegal_commits_and_templates(commit, template, problem):
    """A commit that is not tag-legal, or a template that is broken or untagged, raises InputInvalid."""
    with pytest.raises(InputInvalid) as info:
        image_for_commit("ghcr.io/sma/backend", commit, template)
    assert problem in str(info.value)
