"""Command-line parsing for every ``beam-rtbf`` subcommand: argparse that refuses what it does not know.

``Parser`` is argparse with three differences, the same for every subcommand:

- a flag may be spelled with ``-`` or ``_`` (``--filter-strategy`` is ``--filter_strategy``);
- no abbreviations, and an unknown flag is a ``UsageError`` naming the closest known one
  (``unknown option --sesions (did you mean --sessions?)``);
- errors are raised as one-line ``UsageError``s (the CLI prints them and exits 2), never
  argparse's usage dump.

``add_pipeline_flags`` fills a parser with the options of PipelineOptions classes (beam-rtbf's
and Beam's own) with ``default=SUPPRESS``: the parsed namespace holds exactly what the command
line gave, which is what the job spec needs to tell where each value came from. ``--help`` still
shows each option's real default. Beam's options are all accepted, as Beam's own parser would;
only the curated ``RUNNER_FLAGS`` are shown in ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = [
    "UsageError",
    "Parser",
    "PipelineFlag",
    "RUNNER_FLAGS",
    "JOB_GROUP",
    "add_pipeline_flags",
    "pipeline_options_classes",
    "flag_key",
]

_LOGGER = logging.getLogger(__name__)

# Beam options users of beam-rtbf need, shown in --help under these groups; every other Beam
# option is accepted too but not listed.
JOB_GROUP = "job: config file, runner profile, dry run"
RUNNER_GROUP = "runner: Beam options for cluster runners (every other Beam pipeline option is accepted too)"
RUNNER_FLAGS: Mapping[str, str] = {
    "runner": JOB_GROUP,
    "streaming": "streaming",
    "job_name": RUNNER_GROUP,
    "job_endpoint": RUNNER_GROUP,
    "environment_type": RUNNER_GROUP,
    "environment_config": RUNNER_GROUP,
    "sdk_worker_parallelism": RUNNER_GROUP,
    "flink_master": RUNNER_GROUP,
    "flink_version": RUNNER_GROUP,
    "parallelism": RUNNER_GROUP,
    "flink_submit_uber_jar": RUNNER_GROUP,
    "flink_job_server_jar": RUNNER_GROUP,
    "spark_master_url": RUNNER_GROUP,
    "spark_version": RUNNER_GROUP,
    "output_executable_path": RUNNER_GROUP,
    "prism_location": RUNNER_GROUP,
    "s3_region_name": RUNNER_GROUP,
    "s3_endpoint_url": RUNNER_GROUP,
}


class UsageError(ValueError):
    """A mistake in what the user typed or wrote: one line on stderr, exit status 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


def flag_key(name: str) -> str:
    """The spelling-free form of a flag: ``--filter-strategy`` -> ``filter_strategy``."""
    return name.lstrip("-").replace("-", "_")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; the default of every option that has a real one (run/purge add theirs)."""


class Parser(argparse.ArgumentParser):
    """argparse with ``-``/``_`` spellings, no abbreviations, "did you mean" and one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)

    def spellings(self) -> dict[str, str]:
        """Spelling-free key -> the option string as defined (``dry_run`` -> ``--dry-run``)."""
        return {flag_key(s): s for s in self._option_string_actions if s.startswith("--")}

    def canonical(self, args: Sequence[str]) -> list[str]:
        """``args`` with every known long flag in its defined spelling (values untouched)."""
        table = self.spellings()
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out += args[i:]
                break
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                arg = table.get(flag_key(name), name) + eq + value
            out.append(arg)
        return out

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        return super().parse_known_args(self.canonical(sys.argv[1:] if args is None else list(args)), namespace)

    def unknown(self, extras: Sequence[str]) -> UsageError:
        """The error for arguments nothing took: each unknown flag with its closest known spelling."""
        flags = [e.partition("=")[0] for e in extras if e.startswith("-")]
        if not flags:
            return UsageError(f"unexpected argument {extras[0]!r} (every option is --name VALUE)", self.prog)
        table = self.spellings()
        problems = []
        for flag in flags:
            close = difflib.get_close_matches(flag_key(flag), list(table), n=1, cutoff=0.6)
            problems.append(f"unknown option {flag}" + (f" (did you mean {table[close[0]]}?)" if close else ""))
        return UsageError("; ".join(problems) + f" (see {self.prog} --help)", self.prog)

    def parse_all(self, args: Sequence[str]) -> argparse.Namespace:
        """Parse ``args``; anything unknown is a UsageError with suggestions."""
        namespace, extras = self.parse_known_args(args)
        if extras:
            raise self.unknown(extras)
        return namespace


@dataclasses.dataclass(frozen=True)
class PipelineFlag:
    """One pipeline option as the CLI knows it: its argparse action, real default and owner."""

    action: argparse.Action
    default: Any
    owner: str  # the PipelineOptions class that defines it

    @property
    def dest(self) -> str:
        return self.action.dest

    @property
    def flag(self) -> str:
        """The option string beam-rtbf prints (the first long one)."""
        return next(s for s in self.action.option_strings if s.startswith("--"))

    @property
    def is_switch(self) -> bool:
        """True for flags that take no value (``--streaming``, ``--no_save_main_session``)."""
        return self.action.nargs == 0


@dataclasses.dataclass(frozen=True)
class _Recorded:
    names: tuple[str, ...]
    kwargs: dict[str, Any]
    group: str | None


class _Recorder:
    """Stands in for the parser a PipelineOptions class fills in: records each option and its group."""

    def __init__(self, calls: list[_Recorded], group: str | None = None) -> None:
        self._calls = calls
        self._group = group

    def add_argument(self, *names: str, **kwargs: Any) -> None:
        self._calls.append(_Recorded(names, dict(kwargs), self._group))

    def add_value_provider_argument(self, *names: str, **kwargs: Any) -> None:
        # Parsed here as its plain type: Beam wraps the value again when it parses the final flags.
        self.add_argument(*names, **kwargs)

    def add_argument_group(self, title: str | None = None, *_args: Any, **_kwargs: Any) -> _Recorder:
        return _Recorder(self._calls, title)

    def add_mutually_exclusive_group(self, *_args: Any, **_kwargs: Any) -> _Recorder:
        return _Recorder(self._calls, self._group)


def pipeline_options_classes() -> list[type]:
    """Every PipelineOptions subclass imported so far, once each (as Beam's own parser takes them)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    unique: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        unique.setdefault(str(cls), cls)
    return list(unique.values())


def _help_with_default(text: str | None, default: Any, switch: bool) -> str:
    """The help text with the option's default, unless the text already says it (in words)."""
    text = (text or "").replace("%", "%%")
    if "(default" in text.lower():
        return text
    shown = ("on" if default else "off") if switch else default
    return f"{text} (default: {shown})".strip()


def add_pipeline_flags(
    parser: Parser,
    classes: Iterable[type],
    *,
    accept: Callable[[str, type], bool] = lambda dest, cls: True,
    group_titles: Mapping[str, str] | None = None,
    groups: dict[str, Any] | None = None,
    help_overrides: Mapping[str, str] | None = None,
    hidden: Collection[str] = (),
) -> dict[str, PipelineFlag]:
    """Add the options of ``classes`` to ``parser``; return them by dest.

    ``accept(dest, cls)`` leaves options out; beam-rtbf's own options are listed under their
    group (renamed through ``group_titles``), Beam's only if they are in ``RUNNER_FLAGS``. An
    option whose spelling the parser already has (the CLI's own ``--dry-run``...) is skipped.
    ``groups`` (title -> argument group) holds the groups made so far, in the order ``--help``
    lists them; ``help_overrides`` replaces an option's help text (``--runner`` names the profiles);
    ``hidden`` options are accepted but not listed (``--streaming`` for a purge, always bounded).
    """
    group_titles = group_titles or {}
    groups = {} if groups is None else groups
    help_overrides = help_overrides or {}
    taken = set(parser.spellings())
    flags: dict[str, PipelineFlag] = {}
    for cls in classes:
        calls: list[_Recorded] = []
        try:
            cls._add_argparse_args(_Recorder(calls))  # noqa: SLF001 - the hook Beam itself calls
        except AttributeError:  # a parser method the recorder does not stand in for
            _LOGGER.debug("options of %s not offered on the command line", cls.__name__, exc_info=True)
            continue
        ours = cls.__module__.startswith("beam_rtbf")
        for call in calls:
            kwargs = dict(call.kwargs)
            dest = kwargs.get("dest") or flag_key(next(n for n in call.names if n.startswith("--")))
            if not accept(dest, cls) or any(flag_key(n) in taken for n in call.names):
                continue
            title = group_titles.get(call.group or "", call.group) if ours else RUNNER_FLAGS.get(dest)
            title = None if dest in hidden else title
            switch = kwargs.get("action") in ("store_true", "store_false", "store_const")
            default = kwargs.get("default", {"store_true": False, "store_false": True}.get(kwargs.get("action")))
            kwargs["default"] = argparse.SUPPRESS
            text = help_overrides.get(dest, kwargs.get("help"))
            kwargs["help"] = _help_with_default(text, default, switch) if title else argparse.SUPPRESS
            if title and title not in groups:
                groups[title] = parser.add_argument_group(title)
            action = (groups[title] if title else parser).add_argument(*call.names, **kwargs)
            taken.update(flag_key(n) for n in call.names)
            flags[action.dest] = PipelineFlag(action, default, cls.__name__)
    return flags
