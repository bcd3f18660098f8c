"""Loading machinery of the configuration: the TOML file, ``DRIFTLOOP__SECTION__KEY`` variables,
checks shared by several sections, and error messages of one line per problem.

Section and field names are matched case-insensitively (environment variables are upper case by
convention), but the keys of dict-valued settings (``aliases``, ``capture.sample_rates``,
``judges.rules``, ``retrain.golden_sets``, ``retrain.training_methods``) keep their case: they are model names. The target
field's type decides how a value is read: string and path fields take it verbatim (``123`` stays
the string ``"123"``), every other field parses it as JSON and falls back to the raw text, which
validation then judges.

Why by hand and not pydantic-settings: pydantic-settings lowercases the keys of nested dicts it
reads from the environment (``DRIFTLOOP__ALIASES__MyModel`` would define the alias ``mymodel``),
which breaks the case-keeping dict keys above; what is left to write is this module.

>>> raw: dict = {}
>>> from driftloop.config import Config
>>> apply_env_overrides(raw, {"DRIFTLOOP__ALIASES__MyModel": "123"}, Config)
{'aliases.MyModel': 'DRIFTLOOP__ALIASES__MyModel'}
>>> raw
{'aliases': {'MyModel': '123'}}
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

ENV_PREFIX = "DRIFTLOOP__"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the value."""


MIN_TOKEN_LENGTH = 16
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def listen_host(value: str) -> str:
    """An IP address or a DNS name; whether it resolves and is local is checked at serve."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ValueError("must be an IP address or a host name such as 127.0.0.1") from None
    return value


def hosts_overlap(a: str, b: str) -> bool:
    """Whether listening on both could collide: the same address, or a wildcard and any."""
    a, b = ("127.0.0.1" if h == "localhost" else h for h in (a, b))
    return a == b or a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS


def read_toml(path: Path) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")  # TOML is UTF-8; an editor's BOM is tolerated
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset"
            f" {exc.start} (TOML files must be UTF-8)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def check_api_token(token: str, source: str) -> str:
    """Refuse a control-API token that is short or not printable ASCII; the token is not echoed."""
    for position, char in enumerate(token, start=1):
        if not "!" <= char <= "~":  # what an HTTP header carries without escaping
            raise ConfigError(
                f"{source}: the control API token must be printable ASCII without spaces;"
                f" character {position} of {len(token)} is {char!r}"
            )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{source}: the control API token has {len(token)} characters;"
            f" at least {MIN_TOKEN_LENGTH} are needed"
        )
    return token


def apply_env_overrides(
    raw: dict[str, Any], environ: Mapping[str, str], model: type[BaseModel]
) -> dict[str, str]:
    """Write every ``DRIFTLOOP__…`` variable into ``raw``; return dotted key -> variable name."""
    origins: dict[str, str] = {}
    # Sorted, so a whole-dict variable (DRIFTLOOP__ALIASES) lands before its keys override it.
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if not all(parts):
            raise ConfigError(
                f"environment variable {name}: empty key name; the form is "
                f"{ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}CAPTURE__SAMPLE_RATE"
            )
        keys, target = _resolve(name, parts, model)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"environment variable {name}: {where} is not a section")
            node = child
        node[keys[-1]] = _parse(environ[name], target)
        origins[".".join(keys)] = name
    return origins


def _resolve(name: str, parts: list[str], model: type[BaseModel]) -> tuple[list[str], Any]:
    """Map variable name parts to config keys and the annotation of the field they reach."""
    keys: list[str] = []
    annotation: Any = model
    for part in parts:
        section = _model_of(annotation)
        if section is not None:
            key = part.lower()
            field = section.model_fields.get(key)
            if field is None:
                known = ", ".join(section.model_fields)
                where = ".".join([*keys, key])
                raise ConfigError(
                    f"environment variable {name}: unknown key {where!r} (known here: {known})"
                )
            keys.append(key)
            annotation = field.annotation
        elif (value_type := _dict_value_type(annotation)) is not None:
            keys.append(part)  # a model name or alias: its case is part of the name
            annotation = value_type
        else:
            where = ".".join(keys)
            raise ConfigError(f"environment variable {name}: {where} is a value, not a section")
    return keys, annotation


def _parse(text: str, annotation: Any) -> Any:
    if _is_stringlike(annotation):
        if text == "" and _is_optional(annotation):
            return None  # an empty variable unsets an optional path or string
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # validation names the key and this value if it does not fit


def _members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _dict_value_type(annotation: Any) -> Any:
    if annotation is Any:
        return Any  # free-form parameters (judges.rules.<kind>): any depth, case kept
    for member in _members(annotation):
        if typing.get_origin(member) is dict:
            return typing.get_args(member)[1]
    return None


def _is_stringlike(annotation: Any) -> bool:
    members = [m for m in _members(annotation) if m is not type(None)]
    return bool(members) and all(
        m is str
        or (isinstance(m, type) and issubclass(m, Path))
        or (typing.get_origin(m) is Literal and all(isinstance(a, str) for a in typing.get_args(m)))
        for m in members
    )


def _is_optional(annotation: Any) -> bool:
    return type(None) in _members(annotation)


def describe(
    exc: ValidationError, raw: Mapping[str, Any], path: Path | None, origins: Mapping[str, str]
) -> str:
    """One line per problem: where, the key, the value given, and what is wrong with it."""
    where = f" in {path}" if path else ""
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        key = _dotted(loc)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        source = _origin(loc, origins)
        if not loc:  # a check across keys: the message names them
            lines.append(f"invalid configuration{where}: {message}")
        elif error["type"] == "extra_forbidden":
            value = _lookup(raw, loc)
            lines.append(f"invalid configuration{where}: {key}: unknown key{source} = {value!r}")
        else:
            value = _lookup(raw, loc)
            lines.append(f"invalid configuration{where}: {key} = {value!r}{source}: {message}")
    return "\n".join(lines)


def _dotted(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _origin(loc: Sequence[int | str], origins: Mapping[str, str]) -> str:
    """Name the environment variable that set this key (or a section above it), if one did."""
    parts = [str(p) for p in loc]
    for end in range(len(parts), 0, -1):
        name = origins.get(".".join(parts[:end]))
        if name:
            return f" (from {name})"
    return ""


def _lookup(raw: Mapping[str, Any], loc: Sequence[int | str]) -> Any:
    node: Any = raw
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            if not 0 <= part < len(node):
                return "<missing>"
            node = node[part]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return "<missing>"
    return node
