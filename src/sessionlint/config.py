"""`[tool.sessionlint]` in pyproject.toml -> frozen Settings. Errors name the file and the key."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from . import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration problem; the message names the file and key."""


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ("SES",)
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str, ...] = ()
    preview: bool = False
    factories: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    closers: tuple[str, ...] = ()
    # "may-commit" (default) or "no-commit": a callee must not commit what it was given (SES203)
    borrowed_sessions: str = "may-commit"
    # per-rule options: ((rule name, ((key, values), ...)), ...)
    options: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = ()
    root: Path = field(default_factory=Path.cwd)
    source: Optional[Path] = None

    def enabled_codes(self) -> tuple[str, ...]:
        """Codes of the rules that run, SES001 included when selected."""
        chosen = []
        for code in registry.ALL_CODES:
            rule = registry.BY_CODE.get(code)
            name = registry.code_name(code)
            default_on = rule.default_enabled if rule else True
            if rule is not None and rule.name == "commit-in-borrowed-session" and \
                    self.borrowed_sessions == "no-commit":
                default_on = True
            if rule is not None and rule.preview and not self.preview:
                continue
            if registry.selected(code, name, self.select + self.extend_select, self.ignore, default_on):
                chosen.append(code)
        return tuple(chosen)

    def rule_options(self) -> dict[str, dict[str, list[str]]]:
        return {rule: {key: list(values) for key, values in table} for rule, table in self.options}

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_LIST_KEYS = {"select", "extend-select", "ignore", "exclude", "factories", "providers", "closers"}
_KNOWN = _LIST_KEYS | {"per-file-ignores", "preview", "options", "borrowed-sessions"}
_POLICIES = ("may-commit", "no-commit")


def find_pyproject(start: Path) -> Optional[Path]:
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else [*start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load(path: Optional[Path], explicit: bool = False) -> Settings:
    """Settings from a pyproject.toml (or a sessionlint.toml given with --config)."""
    if path is None:
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    table = data.get("tool", {}).get("sessionlint")
    if table is None and explicit and path.name != "pyproject.toml":
        table = data  # a dedicated sessionlint.toml holds the keys at top level
    if table is None:
        return Settings(root=path.parent, source=path)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.sessionlint] must be a table")
    return _from_table(table, path)


def _from_table(table: dict[str, Any], path: Path) -> Settings:
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        where = f"{path}: tool.sessionlint.{raw_key}"
        if key not in _KNOWN:
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(_KNOWN))})")
        if key in _LIST_KEYS:
            items = _string_list(value, where)
            if key in ("select", "extend-select", "ignore"):
                check_selectors(items, where)
            values[key.replace("-", "_")] = tuple(items)
        elif key == "preview":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false")
            values["preview"] = value
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of glob = [codes]")
            pfi = []
            for glob, codes in value.items():
                items = _string_list(codes, f"{where}.{glob}")
                check_selectors(items, f"{where}.{glob}")
                pfi.append((glob, tuple(items)))
            values["per_file_ignores"] = tuple(pfi)
        elif key == "borrowed-sessions":
            if value not in _POLICIES:
                raise ConfigError(f"{where}: expected one of {', '.join(_POLICIES)}")
            values["borrowed_sessions"] = value
        elif key == "options":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of rule-name tables")
            tables = []
            for rule_name, table in sorted(value.items()):
                rule = registry.BY_NAME.get(rule_name)
                if rule is None:
                    raise ConfigError(f"{where}.{rule_name}: unknown rule")
                if not isinstance(table, dict):
                    raise ConfigError(f"{where}.{rule_name}: expected a table")
                entries = []
                for opt, opt_value in sorted(table.items()):
                    if opt not in rule.option_names:
                        known = ", ".join(rule.option_names) or "none"
                        raise ConfigError(f"{where}.{rule_name}.{opt}: unknown option (known: {known})")
                    entries.append((opt, tuple(_string_list(opt_value, f"{where}.{rule_name}.{opt}"))))
                tables.append((rule_name, tuple(entries)))
            values["options"] = tuple(tables)
    return Settings(root=path.parent, source=path, **values)


def _string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return list(value)


def check_selectors(items: Sequence[str], where: str) -> None:
    for item in items:
        if not registry.is_valid_selector(item):
            raise ConfigError(f"{where}: unknown rule code or name {item!r}")
