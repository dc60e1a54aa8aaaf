"""Runner profiles: ``--runner direct|flink|spark|portable`` -> the PipelineOptions of that target.

A profile (``beam_rtbf/profiles/<name>.yaml``, or any file given with ``--profile FILE``) names the
Beam runner and the options a platform team sets once: endpoints, environment, checkpointing,
where the streams, the registry and the buckets are. Values may hold placeholders:

    ${tf.NAME}               an output of ``terraform output -json`` (``--tf_outputs FILE``)
    ${env.NAME}              an environment variable; ``${env.NAME:-default}`` with a default

Flags on the command line win over the profile. ``--dry-run`` prints the final options and the
exact submission command instead of running; secrets are masked (``***``) in all it prints:
secret-named options, passwords in URLs (``redis://:PW@host``, ``postgresql://user:PW@db``) and
secret-named URI options (``kafka.sasl.password=PW``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

from beam_rtbf.redact import MASK, is_secret_name, mask_secrets

__all__ = ["PROFILES", "Profile", "Expanded", "load_profile", "expand", "render_dry_run"]

PROFILES = ("direct", "flink", "spark", "portable")
_PLACEHOLDER = re.compile(r"\$\{(tf|env)\.([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET = re.compile(r"(secret|password|token|credential)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    runner: str
    description: str
    options: dict[str, Any]
    then: str | None = None  # a second command (e.g. spark-submit of the jar the first one wrote)


@dataclasses.dataclass(frozen=True)
class Expanded:
    profile: Profile | None
    argv: list[str]  # what the pipeline is given: profile flags, then the user's
    dry_run: bool
    unresolved: list[str]


def load_profile(name_or_path: str) -> Profile:
    if name_or_path in PROFILES:
        text = resources.files(__package__).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        name = name_or_path
    else:
        try:
            with open(name_or_path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ValueError(f"runner profile {name_or_path!r}: {exc.strerror}") from exc
        name = os.path.splitext(os.path.basename(name_or_path))[0]
    body = yaml.safe_load(text) or {}
    if not isinstance(body, dict) or "runner" not in body:
        raise ValueError(f"runner profile {name_or_path!r}: expected a mapping with 'runner' and 'options'")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"runner profile {name_or_path!r}: 'options' must be a mapping")
    return Profile(name, str(body["runner"]), str(body.get("description", "")), options, body.get("then"))


def read_tf_outputs(path: str) -> dict[str, str]:
    """``terraform output -json`` ({name: {"value": ...}}) or a plain {name: value} mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--tf_outputs {path}: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError(f"--tf_outputs {path}: expected a JSON object")
    return {k: str(v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in body.items()}


def _resolve(value: Any, tf: Mapping[str, str], env: Mapping[str, str], missing: list[str]) -> Any:
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


def _flag_name(arg: str) -> str | None:
    return arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None


def _take_own_flags(argv: Sequence[str]) -> tuple[dict[str, str], bool, str | None, list[str]]:
    """Split off --profile, --tf_outputs, --dry-run and a profile-named --runner from the rest."""
    own: dict[str, str] = {}
    dry_run = False
    runner: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = _flag_name(arg)
        value: str | None = None
        if name in ("profile", "tf_outputs", "runner"):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            else:
                raise ValueError(f"{arg} needs a value")
            if name == "runner" and value not in PROFILES:
                rest.append(f"--runner={value}")  # a Beam runner name: passed through untouched
            elif name == "runner":
                runner = value
            else:
                own[name] = value
        elif name == "dry_run":
            dry_run = True
        else:
            rest.append(arg)
        i += 1
    return own, dry_run, runner, rest


def expand(command: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Expanded:
    """The pipeline's argv for ``beam-rtbf COMMAND ARGV`` after applying the runner profile, if any."""
    env = os.environ if env is None else env
    own, dry_run, runner, rest = _take_own_flags(list(argv))
    if "profile" in own and runner:
        raise ValueError("give either --runner PROFILE or --profile FILE, not both")
    chosen = own.get("profile") or runner
    if chosen is None:
        if "tf_outputs" in own:
            raise ValueError("--tf_outputs needs --runner flink|spark|portable or --profile FILE")
        return Expanded(None, rest, dry_run, [])
    profile = load_profile(chosen)
    tf = read_tf_outputs(own["tf_outputs"]) if "tf_outputs" in own else {}
    given = {_flag_name(a) for a in rest if a.startswith("--")}
    flags: list[str] = [] if profile.runner == "direct" else [f"--runner={profile.runner}"]
    unresolved: list[str] = []
    for key, value in profile.options.items():
        if key in given:
            continue  # the command line wins
        missing: list[str] = []
        resolved = _resolve(value, tf, env, missing)
        if missing:
            unresolved += [f"--{key}: {m}" for m in missing]
        if resolved is True:
            flags.append(f"--{key}")
        elif resolved not in (False, None):
            flags.append(f"--{key}={resolved}")
    expanded = Expanded(profile, flags + rest, dry_run, unresolved)
    _check(command, expanded)
    if unresolved and not dry_run:
        raise ValueError(
            f"runner profile {profile.name}: no value for "
            + "; ".join(unresolved)
            + " (give --tf_outputs FILE from `terraform output -json`, set the variable, or pass the flag)"
        )
    return expanded


def final_options(argv: Sequence[str]) -> dict[str, str | bool]:
    """Flag -> value as the pipeline will see it (the last occurrence wins, as in argparse)."""
    options: dict[str, str | bool] = {}
    for arg in argv:
        name = _flag_name(arg)
        if name is not None:
            options.pop(name, None)
            options[name] = arg.split("=", 1)[1] if "=" in arg else True
    return options


def _check(command: str, expanded: Expanded) -> None:
    profile = expanded.profile
    if profile is None or profile.runner != "SparkRunner" or command != "run":
        return
    from beam_rtbf.sources import source_for

    options = final_options(expanded.argv)
    # The sources' own notion of bounded: stream schemes, and generators or readers with a rate.
    streams = [
        f"--{k}={options[k]}"
        for k in ("sessions", "requests")
        if isinstance(options.get(k), str) and not source_for(options[k], k).bounded
    ]
    if options.get("streaming") is True or streams:
        raise ValueError(
            "Beam's portable Spark runner runs no streaming pipelines in Python: run bounded jobs on Spark "
            "(file:// or s3:// sources, backfills, beam-rtbf purge) and the streaming job on Flink (--runner flink)"
            + (f"; stream sources given: {', '.join(streams)}" if streams else "")
        )
    if "sessions" not in options or "requests" not in options:
        raise ValueError("--runner spark: give bounded --sessions and --requests (file:// or s3:// globs)")


def _shown_value(name: str, value: str) -> str:
    """A value fit to print: a secret-named option entirely, passwords inside URIs and options masked."""
    return MASK if _SECRET.search(name) or is_secret_name(name) else mask_secrets(value)


def _shown(name: str, value: str | bool) -> str:
    if value is True:
        return f"--{name}"
    return f"--{name}={_shown_value(name, value)}"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_dry_run(command: str, expanded: Expanded) -> str:
    options = final_options(expanded.argv)
    flags = [_shown(k, v) for k, v in options.items()]
    profile = expanded.profile
    lines = [f"beam-rtbf {command}: dry run" + (f", runner profile {profile.name}" if profile else "")]
    if profile:
        lines.append(f"  {profile.runner}: {profile.description}")
    lines.append("final options:")
    lines += [f"  {flag}" for flag in flags] or ["  (defaults)"]
    lines.append("submission command:")
    lines.append("  " + shlex.join(["beam-rtbf", command, *flags]))
    if profile and profile.then:
        lines.append("then:")
        values = _KeepMissing({k: _shown_value(k, v) for k, v in options.items() if isinstance(v, str)})
        lines.append("  " + profile.then.format_map(values))
    if expanded.unresolved:
        lines.append("unresolved (give --tf_outputs FILE, set the variable, or pass the flag):")
        lines += [f"  {u}" for u in expanded.unresolved]
    return "\n".join(lines)
