"""Command line: `sessionlint PATHS`, `sessionlint check PATHS`, `sessionlint verify PATHS --runtime R`,
`sessionlint rule CODE`.

Exit codes: 0 clean, 1 findings, 2 usage, configuration or read errors (after analysing
every file that could be read).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__


class _DefaultGroup(click.Group):
    """A group whose first argument falls through to `check` when it is not a subcommand,
    so `sessionlint src/` keeps working beside `sessionlint rule SES101`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["check", *args]
        return super().parse_args(ctx, args)


def _split(values: tuple[str, ...]) -> Optional[tuple[str, ...]]:
    items = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    return items or None


def _fail(message: str) -> None:
    click.echo(f"sessionlint: error: {message}", err=True)
    sys.exit(2)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sessionlint")
def main() -> None:
    """Find SQLAlchemy Session misuse: `sessionlint src/`."""


def _selection_options(fn: Any) -> Any:
    """The options `check` and `verify` share: which rules run, and with which settings."""
    for option in reversed((
        click.option("--select", multiple=True, help="Rules to run: codes, prefixes (SES1) or names; comma-separated."),
        click.option("--extend-select", multiple=True, help="Rules to run in addition to the selected ones."),
        click.option("--ignore", multiple=True, help="Rules to skip: codes, prefixes or names."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="Read settings from this file instead of the nearest pyproject.toml."),
        click.option("--isolated", is_flag=True, help="Ignore all configuration files."),
        click.option("--force-exclude", is_flag=True, help="Apply `exclude` to paths named on the command line too."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings."),
        click.option("--preview", is_flag=True, default=None, help="Enable preview rules."),
        click.option("-q", "--quiet", is_flag=True, help="Print findings only, no summary."),
    )):
        fn = option(fn)
    return fn


def _settings(targets: tuple[str, ...], select: tuple[str, ...], extend_select: tuple[str, ...],
              ignore: tuple[str, ...], config_path: Optional[str], isolated: bool, preview: Optional[bool]) -> Any:
    from . import config as cfg

    try:
        if isolated:
            settings = cfg.Settings()
        elif config_path is not None:
            settings = cfg.load(Path(config_path), explicit=True)
        else:
            settings = cfg.load(cfg.find_pyproject(Path(targets[0])))
        overrides: dict[str, Any] = {}
        for key, raw in (("select", select), ("extend_select", extend_select), ("ignore", ignore)):
            items = _split(raw)
            if items is not None:
                cfg.check_selectors(items, f"--{key.replace('_', '-')}")
                overrides[key] = items
        return settings.with_overrides(preview=preview, **overrides)
    except cfg.ConfigError as exc:
        _fail(str(exc))


def _analyse(targets: tuple[str, ...], settings: Any, force_exclude: bool) -> Any:
    from .engine import check_paths

    try:
        return check_paths(targets, settings, force_exclude=force_exclude)
    except Exception as exc:  # a bug of ours: one line, exit 2, never a traceback
        _fail(f"internal error: {type(exc).__name__}: {exc}")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "output_format", type=click.Choice(["text", "json", "sarif", "github"]), default="text",
              show_default=True, help="Output format.")
@click.option("--show-hints", is_flag=True, help="Print a fix hint under each finding.")
@_selection_options
def check(paths: tuple[str, ...], output_format: str, select: tuple[str, ...], extend_select: tuple[str, ...],
          ignore: tuple[str, ...], config_path: Optional[str], isolated: bool, force_exclude: bool,
          show_hints: bool, exit_zero: bool, preview: Optional[bool], quiet: bool) -> None:
    """Analyse PATHS (files or folders; default: the current folder)."""
    from .findings import render_github, render_json, render_sarif, render_text

    targets = paths or (".",)
    settings = _settings(targets, select, extend_select, ignore, config_path, isolated, preview)
    result = _analyse(targets, settings, force_exclude)
    if output_format == "json":
        click.echo(render_json(result.findings, result.errors), nl=False)
    elif output_format == "sarif":
        click.echo(render_sarif(result.findings, result.errors), nl=False)
    elif output_format == "github":
        click.echo(render_github(result.findings), nl=False)
    else:
        click.echo(render_text(result.findings, show_hints), nl=False)
    for error in result.errors:
        click.echo(f"{error.path}: error: {error.message}", err=True)
    if not quiet and output_format == "text":
        n = len(result.findings)
        click.echo(f"Found {n} finding{'s' if n != 1 else ''}." if n else "All checks passed.", err=True)
    if result.errors:
        sys.exit(2)
    sys.exit(1 if result.findings and not exit_zero else 0)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--runtime", "runtime_path", required=True, type=click.Path(dir_okay=False),
              help="The JSON report of a `pytest --sessionlint` run (or of watch()).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@_selection_options
def verify(paths: tuple[str, ...], runtime_path: str, output_format: str, select: tuple[str, ...],
           extend_select: tuple[str, ...], ignore: tuple[str, ...], config_path: Optional[str], isolated: bool,
           force_exclude: bool, exit_zero: bool, preview: Optional[bool], quiet: bool) -> None:
    """Check PATHS and mark each finding confirmed, contradicted or not-exercised by a runtime report.

    Runtime findings in PATHS that the static analysis missed are listed as runtime-only.
    """
    import json

    from . import verify as joiner
    from .findings import FileError
    from .runtime.report import load

    targets = paths or (".",)
    settings = _settings(targets, select, extend_select, ignore, config_path, isolated, preview)
    try:
        report = load(runtime_path)
    except ValueError as exc:
        _fail(str(exc))
        return
    result = _analyse(targets, settings, force_exclude)
    joined = joiner.verify(result.findings, report, [str(f.path) for f in result.files])
    if output_format == "json":
        doc = {"version": __version__, **joiner.as_dict(joined),
               "errors": [FileError.as_dict(e) for e in result.errors]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(joiner.render_text(joined), nl=False)
    for error in result.errors:
        click.echo(f"{error.path}: error: {error.message}", err=True)
    if not quiet and output_format == "text":
        click.echo(joiner.summary(joined), err=True)
    if result.errors:
        sys.exit(2)
    sys.exit(1 if (joined.verdicts or joined.runtime_only) and not exit_zero else 0)


@main.command()
@click.argument("selector", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule.")
def rule(selector: Optional[str], show_all: bool) -> None:
    """Print the documentation of one rule (by code or name), or list them all."""
    from . import docs, registry

    if show_all or selector is None:
        for r in registry.RULES:
            flag = " (preview)" if r.preview else ""
            click.echo(f"{r.code} {r.name}{flag}")
        return
    found = registry.find(selector)
    if found is None:
        _fail(f"unknown rule {selector!r}; `sessionlint rule --all` lists them")
        return
    click.echo(docs.rule_markdown(found))
