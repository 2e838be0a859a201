"""pg_dump / pg_restore never see a DSN's password in their arguments (``ps`` shows them)."""

from __future__ import annotations

from store.snapshot import _copy_field, _without_password


def test_a_url_password_moves_into_pgpassword() -> None:
    argv, env = _without_password(["pg_dump", "--format=custom", "--dbname=postgresql://ca:s%40cret@db:5432/ca?x=1"])
    assert argv == ["pg_dump", "--format=custom", "--dbname=postgresql://ca@db:5432/ca?x=1"]
    assert env["PGPASSWORD"] == "s@cret"
    assert not any("cret" in a for a in argv)


def test_a_dsn_without_password_is_left_alone() -> None:
    argv, _ = _without_password(["pg_restore", "--dbname=postgresql://postgres@127.0.0.1/x", "f"])
    assert argv == ["pg_restore", "--dbname=postgresql://postgres@127.0.0.1/x", "f"]


def test_copy_text_fields() -> None:
    assert _copy_field("\\N") is None
    assert _copy_field("a\\tb\\nc\\\\d") == "a\tb\nc\\d"
    # JSON's own backslash comes doubled in COPY text.
    assert _copy_field(r'{"k": "v\\"q"}') == r'{"k": "v\"q"}'
