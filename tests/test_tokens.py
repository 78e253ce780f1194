"""API tokens: secrets shown once, stored hashed, looked up by hash, revocable."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from cas.cli import app
from cas.errors import InvalidIdError, InvalidInputError, NotFoundError
from cas.objects import LocalBackend, open_backend
from cas.testing.services import S3Bucket
from cas.tokens import (
    PREFIX,
    SECRET_LENGTH,
    TOKENS,
    BackendTokenStore,
    TokenStore,
    hash_secret,
    is_well_formed,
    new_secret,
)


@pytest.fixture
def store(tmp_path: Path) -> BackendTokenStore:
    return BackendTokenStore(LocalBackend(tmp_path))


def test_secret_is_prefixed_urlsafe_and_random() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith(PREFIX) and len(first) == SECRET_LENGTH
    assert is_well_formed(first)


def test_create_returns_the_secret_and_lookup_finds_the_tenant(store: BackendTokenStore) -> None:
    assert isinstance(store, TokenStore)
    secret, info = store.create("acme", "ci")
    found = store.lookup(secret)
    assert found == info
    assert (found.tenant, found.name, found.revoked_at) == ("acme", "ci", None)
    assert info.token_id.startswith("tok_")


def test_only_the_hash_is_stored(store: BackendTokenStore, tmp_path: Path) -> None:
    secret, _ = store.create("acme", "ci")
    raw = (tmp_path / TOKENS).read_bytes()
    assert secret.encode() not in raw
    assert secret[len(PREFIX) :].encode() not in raw
    assert hash_secret(secret).encode() in raw
    assert orjson.loads(raw)["format"] == "cas-tokens/1"


def test_unknown_and_malformed_secrets_do_not_match(store: BackendTokenStore) -> None:
    secret, _ = store.create("acme", "")
    assert store.lookup(new_secret()) is None
    assert store.lookup(secret[:-1]) is None
    assert store.lookup(secret + "x") is None
    assert store.lookup("") is None
    assert store.lookup("Bearer " + secret) is None
    assert store.lookup(secret[:-1] + "é") is None


def test_revoked_tokens_do_not_match_and_revoke_is_idempotent(store: BackendTokenStore) -> None:
    secret, info = store.create("acme", "old")
    other, _ = store.create("acme", "new")
    revoked = store.revoke(info.token_id)
    assert revoked.revoked_at is not None
    assert store.lookup(secret) is None
    assert store.lookup(other) is not None
    assert store.revoke(info.token_id) == revoked
    assert [t.revoked_at is None for t in store.list()] == [False, True]


def test_revoke_unknown_or_bad_ids(store: BackendTokenStore) -> None:
    with pytest.raises(NotFoundError, match="tok_000000000000"):
        store.revoke("tok_000000000000")
    with pytest.raises(InvalidInputError, match="token id"):
        store.revoke("../etc")
    with pytest.raises(InvalidInputError, match="tok_"):
        store.revoke("abc")


def test_tenant_and_name_are_checked(store: BackendTokenStore) -> None:
    with pytest.raises(InvalidIdError, match="tenant"):
        store.create("../other", "x")
    with pytest.raises(InvalidInputError, match="token name"):
        store.create("acme", "two\nlines")
    assert store.list() == []


def test_list_is_oldest_first_and_survives_reopening(tmp_path: Path) -> None:
    first = BackendTokenStore(LocalBackend(tmp_path))
    _, a = first.create("acme", "a")
    _, b = first.create("globex", "b")
    assert BackendTokenStore(LocalBackend(tmp_path)).list() == [a, b]


def test_cache_delays_nothing_the_same_store_writes(tmp_path: Path) -> None:
    store = BackendTokenStore(LocalBackend(tmp_path), cache_seconds=60)
    secret, info = store.create("acme", "")
    assert store.lookup(secret) == info
    store.revoke(info.token_id)
    assert store.lookup(secret) is None


def test_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / TOKENS).write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"tokens\.json is not valid JSON"):
        BackendTokenStore(LocalBackend(tmp_path)).list()


@pytest.mark.s3
def test_tokens_on_s3(s3_bucket: S3Bucket) -> None:
    url, options = s3_bucket
    store = BackendTokenStore(open_backend(f"{url}/deploy", **options))
    secret, info = store.create("acme", "ci")
    again = BackendTokenStore(open_backend(f"{url}/deploy", **options))
    assert again.lookup(secret) == info
    again.revoke(info.token_id)
    assert store.lookup(secret) is None


# the cas token commands --------------------------------------------------------------------


def cas(root: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--repo", str(root), *args])


def test_token_commands(tmp_path: Path) -> None:
    made = cas(tmp_path, "token", "create", "acme", "--name", "ci")
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert is_well_formed(secret)
    assert "keep the secret above, it is not shown again" in made.stderr
    info = BackendTokenStore(LocalBackend(tmp_path)).lookup(secret)
    assert info is not None and info.tenant == "acme"
    as_json = json.loads(cas(tmp_path, "token", "create", "globex", "--json").stdout)
    assert set(as_json) == {"token_id", "tenant", "name", "created_at", "revoked_at", "secret"}
    listed = json.loads(cas(tmp_path, "token", "list", "--json").stdout)
    assert [row["tenant"] for row in listed] == ["acme", "globex"]
    assert all("secret" not in row for row in listed)
    assert secret not in cas(tmp_path, "token", "list").stdout
    revoked = cas(tmp_path, "token", "revoke", info.token_id)
    assert revoked.stdout == f"revoked token {info.token_id} of tenant acme\n"
    assert "revoked" in cas(tmp_path, "token", "list").stdout.splitlines()[0]
    assert BackendTokenStore(LocalBackend(tmp_path)).lookup(secret) is None


def test_token_command_errors(tmp_path: Path) -> None:
    bad_tenant = cas(tmp_path, "token", "create", "../x")
    assert bad_tenant.exit_code == 2
    assert bad_tenant.stderr.startswith("cas: error: invalid tenant '../x'")
    unknown = cas(tmp_path, "token", "revoke", "tok_000000000000", "--json")
    assert unknown.exit_code == 3
    assert json.loads(unknown.stderr)["error"]["message"] == "no token 'tok_000000000000'"
    assert cas(tmp_path, "token", "revoke", "nope").exit_code == 2
    with_tenant = CliRunner().invoke(
        app, ["--repo", str(tmp_path), "--tenant", "a", "token", "list"]
    )
    assert with_tenant.exit_code == 2
    assert "leave --tenant out" in with_tenant.stderr
    missing = cas(tmp_path / "absent", "token", "list")
    assert missing.exit_code == 6
    assert "no deployment root" in missing.stderr
    serve = cas(tmp_path / "absent", "serve")
    assert serve.exit_code == 6
    assert not (tmp_path / "absent").exists()
