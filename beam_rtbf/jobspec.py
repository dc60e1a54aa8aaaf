"""The job spec: every option of one ``beam-rtbf run`` or ``purge``, typed, with where it came from.

Options come from four places, with one precedence rule:

    command line  >  config file (--config FILE)  >  runner profile  >  defaults

The runner profile is ``--runner direct|flink|spark|portable`` (``beam_rtbf/profiles/``),
``--profile FILE``, or the config file's ``runner:`` when it names a profile. Config files and
profiles are the same YAML:

    runner: flink                  # optional: a profile name, or a Beam runner (FlinkRunner...)
    description: staging cluster   # optional
    options:                       # option: value, as on the command line (- or _ in names)
      sessions: kinesis://${tf.sessions_stream_name}?region=${tf.aws_region}
      parallelism: 4               # typed and checked by the option itself (int here)
      streaming: true              # a flag: true or false
    then: spark-submit ... {output_executable_path}   # optional: the step after this one

``${tf.NAME}`` is an output of ``terraform output -json`` (``--tf_outputs FILE``),
``${env.NAME}`` an environment variable (``${env.NAME:-default}`` with a default). An unknown
key is an error that names the closest known one; options of the other command (a profile
serves run and purge) are ignored and listed by the dry run.

``JobSpec.pipeline_options()`` is the one place the spec becomes PipelineOptions (from the same
flags ``--dry-run`` prints), and ``build_spec`` validates it before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from beam_rtbf.flags import Parser, PipelineFlag, UsageError, flag_key
from beam_rtbf.profiles import PROFILES, profile_path
from beam_rtbf.redact import MASK, is_secret_name, mask_secrets

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

__all__ = [
    "COMMAND_LINE",
    "FILE_KEYS",
    "JobFile",
    "JobSpec",
    "Setting",
    "build_spec",
    "load_job_file",
    "load_profile",
    "read_tf_outputs",
]

COMMAND_LINE = "command line"
FILE_KEYS = ("runner", "description", "options", "then")
_PLACEHOLDER = re.compile(r"\$\{(tf|env)\.([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HOW_TO_FILL = "give --tf_outputs FILE from `terraform output -json`, set the variable, or pass the flag"


@dataclasses.dataclass(frozen=True)
class JobFile:
    """A config file or a runner profile as written: option values are not typed yet."""

    kind: str  # "config" or "runner profile"
    name: str  # the profile's name, or the config file's path
    path: str
    runner: str | None
    description: str
    options: dict[str, Any]
    then: str | None = None

    @property
    def source(self) -> str:
        return f"{self.kind} {self.name}"


def load_job_file(path: str, kind: str = "config", name: str | None = None) -> JobFile:
    """Read ``path`` in the one YAML dialect of config files and profiles; UsageError if it is not."""
    where = f"{kind} {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            body = yaml.safe_load(handle)
    except OSError as exc:
        raise UsageError(f"{where}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}: not valid YAML: {at}{problem}") from None
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise UsageError(f"{where}: expected a mapping with {', '.join(FILE_KEYS)} (options: {{name: value}})")
    for key in body:
        if key not in FILE_KEYS:
            close = difflib.get_close_matches(str(key), FILE_KEYS, n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"options go under 'options:', e.g. options: {{{key}: ...}}"
            )
            raise UsageError(f"{where}: unknown key {key!r} ({hint}; known: {', '.join(FILE_KEYS)})")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise UsageError(f"{where}: 'options' must be a mapping of option: value")
    for key in ("runner", "description", "then"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise UsageError(f"{where}: {key!r} must be text")
    return JobFile(
        kind,
        name or path,
        path,
        body.get("runner"),
        body.get("description") or "",
        {str(k): v for k, v in options.items()},
        body.get("then"),
    )


def load_profile(name_or_path: str) -> JobFile:
    """A built-in profile by name, or a profile file of one's own (named after the file)."""
    if name_or_path in PROFILES:
        return load_job_file(profile_path(name_or_path), "runner profile", name_or_path)
    name = os.path.splitext(os.path.basename(name_or_path))[0]
    profile = load_job_file(name_or_path, "runner profile", name)
    if profile.runner is None:
        raise UsageError(f"runner profile {name_or_path}: give its Beam runner (runner: FlinkRunner...)")
    if profile.runner in PROFILES and profile.runner != "direct":
        raise UsageError(
            f"runner profile {name_or_path}: runner: {profile.runner} names a profile; "
            "a profile's runner is a Beam runner (FlinkRunner, SparkRunner, PortableRunner) or direct"
        )
    return profile


def read_tf_outputs(path: str) -> dict[str, str]:
    """``terraform output -json`` ({name: {"value": ...}}) or a plain {name: value} mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        raise UsageError(f"--tf_outputs {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--tf_outputs {path}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--tf_outputs {path}: expected a JSON object")
    return {k: str(v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in body.items()}


def _fill(value: Any, tf: Mapping[str, str], env: Mapping[str, str], missing: list[str]) -> Any:
    """``value`` with its placeholders filled; the ones with no value stay and are named in ``missing``."""
    if isinstance(value, list):
        return [_fill(item, tf, env, missing) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        source, name, default = match.groups()
        found = (tf if source == "tf" else env).get(name)
        if found not in (None, ""):
            return str(found)
        if default is not None:
            return default
        missing.append(f"{source}.{name}")
        return match.group(0)

    return _PLACEHOLDER.sub(substitute, value)


def _typed(parser: Parser, flag: PipelineFlag, value: Any) -> Any:
    """A YAML value typed and checked by the option's own argparse action (type, choices)."""
    if value is None:
        return flag.default
    if flag.is_switch:
        if not isinstance(value, bool):
            raise UsageError(f"expected true or false, not {value!r}")
        return flag.action.const if value else flag.default
    if isinstance(value, bool):
        raise UsageError(f"YAML read {value!r} as true/false, the option takes a value: quote it ('on', 'true'...)")
    items = value if isinstance(value, list) else [value]
    tokens = []
    for item in items:
        if isinstance(item, float) and flag.action.type in (None, str):
            raise UsageError(f'{item!r} is a number and the option takes text: quote it ("{item}")')
        if isinstance(item, (list, bool)):
            raise UsageError(f"unexpected {item!r} in a list")
        tokens.append(f"{flag.flag}={json.dumps(item) if isinstance(item, dict) else item}")
    namespace, _ = parser.parse_known_args(tokens, argparse.Namespace())
    typed = getattr(namespace, flag.dest)
    if isinstance(value, list) and not isinstance(typed, (list, dict)):
        raise UsageError(f"takes one value, not a list: {value!r}")
    return typed


@dataclasses.dataclass(frozen=True)
class Setting:
    """One option's value and where it came from; ``unresolved`` placeholders only survive a dry run."""

    value: Any
    source: str
    unresolved: tuple[str, ...] = ()


def _shown_value(dest: str, text: str) -> str:
    """A value fit to print: a secret-named option entirely, passwords inside URIs and options masked."""
    return MASK if is_secret_name(dest) else mask_secrets(text)


def _tokens(flag: PipelineFlag, value: Any, masked: bool) -> list[str]:
    """The flags that give ``value`` to the option, as Beam's parser reads them."""
    if flag.is_switch:
        return [flag.flag] if value == flag.action.const and value != flag.default else []
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = json.dumps(item) if isinstance(item, dict) else str(item)
        out.append(f"{flag.flag}={_shown_value(flag.dest, text) if masked else text}")
    return out


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclasses.dataclass
class JobSpec:
    """The typed options of one job with their sources (``settings``: given ones only, the highest
    precedence first); everything not in ``settings`` is at its default."""

    command: str
    flags: Mapping[str, PipelineFlag]
    settings: dict[str, Setting]
    profile: JobFile | None = None
    config: JobFile | None = None
    ignored: list[str] = dataclasses.field(default_factory=list)
    dry_run: bool = False

    @property
    def unresolved(self) -> list[str]:
        return [f"{self.flags[d].flag}: {m}" for d, s in self.settings.items() for m in s.unresolved]

    def value(self, dest: str) -> Any:
        setting = self.settings.get(dest)
        return setting.value if setting is not None else self.flags[dest].default

    def source(self, dest: str) -> str:
        setting = self.settings.get(dest)
        return setting.source if setting is not None else "default"

    def argv(self, *, masked: bool = False, resolved_only: bool = False) -> list[str]:
        """The flags of every given option, the runner first: what the pipeline parses."""
        order = sorted(self.settings, key=lambda dest: dest != "runner")
        out: list[str] = []
        for dest in order:
            setting = self.settings[dest]
            if setting.unresolved and resolved_only:
                continue
            out += _tokens(self.flags[dest], setting.value, masked)
        return out

    def pipeline_options(self) -> PipelineOptions:
        """The one place the spec becomes PipelineOptions: Beam parses exactly what ``--dry-run`` shows."""
        from apache_beam.options.pipeline_options import PipelineOptions

        if self.unresolved:
            raise UsageError(f"no value for {'; '.join(self.unresolved)} ({_HOW_TO_FILL})")
        return PipelineOptions(self.argv())

    def validate(self) -> None:
        """Every check that needs no server: option values, source URIs, what the runner can run."""
        from apache_beam.options.pipeline_options import PipelineOptions

        from beam_rtbf.options import RtbfOptions, validate_options

        options = PipelineOptions(self.argv(resolved_only=True))
        validate_options(options.view_as(RtbfOptions))
        if self.command == "purge":
            from beam_rtbf.options import PurgeOptions, validate_purge_options

            validate_purge_options(options.view_as(PurgeOptions))
        if self.command == "run":
            self._check_sources()

    def _check_sources(self) -> None:
        """Source URIs parse; Beam's portable Spark runner gets no stream (it runs none in Python)."""
        from beam_rtbf.sources import source_for

        bounded = {}
        for dest in ("sessions", "requests"):
            setting = self.settings.get(dest)
            uri = self.value(dest)
            if uri is not None and not (setting and setting.unresolved):
                bounded[dest] = source_for(uri, dest).bounded
        if self.value("runner") != "SparkRunner":
            return
        streams = [f"--{k}={_shown_value(k, self.value(k))}" for k, is_bounded in bounded.items() if not is_bounded]
        if self.value("streaming") or streams:
            raise UsageError(
                "Beam's portable Spark runner runs no streaming pipelines in Python: run bounded jobs on Spark "
                "(file:// or s3:// sources, backfills, beam-rtbf purge) and the streaming job on Flink "
                "(--runner flink)" + (f"; stream sources given: {', '.join(streams)}" if streams else "")
            )
        if "sessions" not in self.settings or "requests" not in self.settings:
            raise UsageError("--runner spark: give bounded --sessions and --requests (file:// or s3:// globs)")

    def submission_command(self) -> str:
        """The command that runs this job with no config file or profile (secrets masked)."""
        return shlex.join(["beam-rtbf", self.command, *self.argv(masked=True)])

    def then(self) -> str | None:
        """The step after this one (the config file's ``then``, else the profile's), values filled in."""
        template = (self.config and self.config.then) or (self.profile and self.profile.then)
        if not template:
            return None
        values = {
            dest: " ".join(_tokens(f, self.value(dest), True)).partition("=")[2] for dest, f in self.flags.items()
        }
        return template.format_map(_KeepMissing({k: v for k, v in values.items() if v}))

    def render_dry_run(self) -> str:
        """What the job would run, exactly: every given option under its source, the command, the rest."""
        head = f"beam-rtbf {self.command}: dry run"
        head += f", runner profile {self.profile.name}" if self.profile else ""
        head += f", config {self.config.path}" if self.config else ""
        lines = [head]
        if self.profile:
            lines.append(f"  {self.profile.runner}: {self.profile.description}")
        if self.config and self.config.description:
            lines.append(f"  config: {self.config.description}")
        lines.append("final options (each under where it came from; every other option is at its default):")
        if not self.settings:
            lines.append("  (defaults)")
        sources = {COMMAND_LINE: COMMAND_LINE}
        for file in (self.config, self.profile):
            if file is not None:
                sources[file.source] = file.source + (f" ({file.path})" if file.path != file.name else "")
        for source, title in sources.items():
            given = [d for d, s in self.settings.items() if s.source == source]
            if given:
                lines.append(f"  # {title}")
            for dest in given:
                shown = _tokens(self.flags[dest], self.settings[dest].value, masked=True)
                unset = "off" if self.flags[dest].is_switch else "at its default"
                lines += [f"  {t}" for t in shown] or [f"  ({self.flags[dest].flag} {unset})"]
        lines += ["submission command:", "  " + self.submission_command()]
        then = self.then()
        if then:
            lines += ["then:", "  " + then]
        if self.unresolved:
            lines.append(f"unresolved ({_HOW_TO_FILL}):")
            lines += [f"  {u}" for u in self.unresolved]
        if self.ignored:
            lines.append(f"ignored (options of another command than {self.command}):")
            lines += [f"  {i}" for i in self.ignored]
        return "\n".join(lines)


def _file_settings(
    file: JobFile,
    parser: Parser,
    flags: Mapping[str, PipelineFlag],
    ignorable: frozenset[str],
    higher: set[str],
    fill: Any,
    ignored: list[str],
) -> dict[str, Setting]:
    """The options of a config file or profile, typed; those a higher source gives are skipped."""
    table = {flag_key(s): f for f in flags.values() for s in f.action.option_strings if s.startswith("--")}
    out: dict[str, Setting] = {}
    seen: set[str] = set()
    for key, raw in file.options.items():
        if flag_key(key) == "runner":
            raise UsageError(f"{file.source}: give the runner at the top level (runner: {raw}), not under options")
        flag = table.get(flag_key(key))
        if flag is None:
            if flag_key(key) in ignorable:
                ignored.append(f"--{flag_key(key)} ({file.source})")
                continue
            close = difflib.get_close_matches(flag_key(key), list(table), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{file.source}: unknown option {key!r} for {parser.prog}{hint}")
        if flag.dest in seen:
            raise UsageError(f"{file.source}: option {key!r} given twice")
        seen.add(flag.dest)
        if flag.dest in higher:
            continue  # the higher source wins; its placeholders need no value
        missing: list[str] = []
        filled = fill(raw, missing)
        if missing:
            out[flag.dest] = Setting(filled, file.source, tuple(missing))
            continue
        try:
            out[flag.dest] = Setting(_typed(parser, flag, filled), file.source)
        except UsageError as exc:
            raise UsageError(f"{file.source}: options.{key}: {exc}") from None
    return out


def build_spec(
    command: str,
    parser: Parser,
    flags: Mapping[str, PipelineFlag],
    given: Mapping[str, Any],
    *,
    config: str | None = None,
    profile: str | None = None,
    tf_outputs: str | None = None,
    dry_run: bool = False,
    ignorable: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> JobSpec:
    """The validated spec of ``beam-rtbf COMMAND``: ``given`` (dest -> value) from the command
    line, then the config file, the runner profile and the defaults, in that precedence."""
    env = os.environ if env is None else env
    given = dict(given)
    config_file = load_job_file(config, "config") if config else None
    runner_flag = given.get("runner")
    if profile and runner_flag in PROFILES:
        raise UsageError("give either --runner PROFILE or --profile FILE, not both")
    if runner_flag in PROFILES:
        del given["runner"]
    chosen = profile or (runner_flag if runner_flag in PROFILES else None)
    config_runner = config_file.runner if config_file else None
    if chosen is None and runner_flag is None and config_runner in PROFILES:
        chosen = config_runner
    profile_file = load_profile(chosen) if chosen else None
    if tf_outputs and not (config_file or profile_file):
        raise UsageError("--tf_outputs fills ${tf.NAME} in a config file or profile: give --config FILE or --runner")
    tf = read_tf_outputs(tf_outputs) if tf_outputs else {}

    def fill(value: Any, missing: list[str]) -> Any:
        return _fill(value, tf, env, missing)

    settings = {dest: Setting(value, COMMAND_LINE) for dest, value in given.items()}
    ignored: list[str] = []
    for file in (config_file, profile_file):
        if file is None:
            continue
        layer = _file_settings(file, parser, flags, frozenset(ignorable), set(settings), fill, ignored)
        # A config's runner counts when the command line named none (a profile name chose the profile);
        # a profile's is its Beam runner, direct meaning Beam's default local runners.
        runner = file.runner if file is profile_file or (runner_flag is None and file.runner not in PROFILES) else None
        if runner and runner != "direct" and "runner" not in settings:
            settings["runner"] = Setting(runner, file.source)
        settings.update({dest: s for dest, s in layer.items() if dest not in settings})
    spec = JobSpec(command, flags, settings, profile_file, config_file, ignored, dry_run)
    if spec.unresolved and not dry_run:
        where = profile_file.source if profile_file else config_file.source if config_file else command
        raise UsageError(f"{where}: no value for {'; '.join(spec.unresolved)} ({_HOW_TO_FILL})")
    spec.validate()
    return spec
