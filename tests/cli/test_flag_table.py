"""Every flag `sluice serve` accepts does what it says: it has a typed field in `ServeSettings`
that something reads, or it is declared an accepted no-op with the reason (issue #17: four
upstream flags were accepted and then ignored)."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from sluice.cli.flags import Flag
from sluice.cli.serve_options import SERVE_FLAGS, parse_serve_options
from sluice.settings import ServeSettings

SRC = Path(__file__).resolve().parents[2] / "src" / "sluice"
KIND_TYPES = {"bool": bool, "str": str, "int": int, "port": int, "float": float, "duration": float}
# names the settings object goes by where it is read
HOLDERS = {"options", "settings"}


def field_of(flag: Flag) -> str:
    return flag.name.replace("-", "_")


def settings_reads(*, inside: bool = True) -> set[str]:
    """Attributes read off the settings in src: `options.x`, `self.options.x`, `settings.x`,
    and (`inside`) `self.x` in the settings package itself (its derived properties)."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        inside_settings = path.parent.name == "settings"
        if inside_settings and not inside:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
                continue
            holder = node.value
            name = (
                holder.id
                if isinstance(holder, ast.Name)
                else holder.attr
                if isinstance(holder, ast.Attribute)
                else ""
            )
            if name in HOLDERS or (inside_settings and name == "self"):
                found.add(node.attr)
    return found


READS = settings_reads()


def test_the_table_and_the_settings_have_the_same_names() -> None:
    assert sorted(field_of(f) for f in SERVE_FLAGS) == sorted(ServeSettings.field_names())


@pytest.mark.parametrize("flag", SERVE_FLAGS, ids=lambda f: f.name)
def test_each_field_has_its_flags_type_and_choices(flag: Flag) -> None:
    hint = typing.get_type_hints(ServeSettings)[field_of(flag)]
    if typing.get_origin(hint) is typing.Literal:
        assert set(typing.get_args(hint)) == set(flag.choices), "the Literal lists the choices"
        assert flag.default in flag.choices
    else:
        assert hint is KIND_TYPES[flag.kind]
        assert not flag.choices, "a flag with choices is typed as their Literal"
        assert isinstance(flag.default, hint)


@pytest.mark.parametrize("flag", SERVE_FLAGS, ids=lambda f: f.name)
def test_every_flag_is_read_or_declared_a_no_op_with_its_reason(flag: Flag) -> None:
    read = field_of(flag) in READS
    if flag.no_op:
        assert not read, f"--{flag.name} is read: drop its no_op ({flag.no_op!r})"
        assert len(flag.no_op) > 20, f"--{flag.name}: say why it is accepted and ignored"
    else:
        assert read, (
            f"--{flag.name} is accepted but nothing reads settings.{field_of(flag)}: wire it, or "
            "declare no_op='why' on the flag"
        )


def test_the_derived_settings_are_read_outside_the_settings() -> None:
    derived = [n for n, v in vars(ServeSettings).items() if isinstance(v, property)]
    outside = settings_reads(inside=False)
    assert sorted(n for n in derived if n not in outside) == []


def test_the_help_says_which_flags_are_accepted_and_ignored() -> None:
    from sluice.cli.serve_options import serve_flagset

    usage = serve_flagset().usage()
    for flag in SERVE_FLAGS:
        if flag.no_op:
            assert f"[accepted, no effect: {flag.no_op}]" in usage


def test_settings_are_frozen() -> None:
    settings = parse_serve_options(["--pool-name=p"])
    with pytest.raises(AttributeError):
        settings.grpc_port = 1  # type: ignore[misc]
