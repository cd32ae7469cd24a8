"""Load and validate the TOML config; fall back to the built-in default (mock targets, quickstart).

Every error becomes a `ConfigError` whose message is `file: path.to.field: message`, so the CLI can
exit 2 with a line a person can act on, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.defaults import BUILTIN_SCENARIOS, DEFAULT_CONFIG, PRICES, PRICES_AS_OF
from pipeline.errors import ConfigError
from schemas import BenchmarkScenario, ModelPrice, PipelineConfig, TargetConfig

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "LoadedConfig",
    "format_validation_error",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_NAME = "pipeline.toml"
BUILTIN = "<built-in default>"
MAX_PROMPTS_FILE = 256 * 1024 * 1024
_PLAIN_KEY = re.compile(r"[\w.-]+\Z")


def _loc(parts: Sequence[int | str]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += ("." if out else "") + str(part)
        else:
            # A key from the file that is not a plain word (spaces, a colon, a line break, or
            # empty) is quoted, so the message stays one `file: field: message` line.
            out += f"[{json.dumps(str(part)[:60])}]"
    return out or "(top level)"


def format_validation_error(
    source: str, error: ValidationError, prefix: Sequence[int | str] = ()
) -> str:
    """`source: field.path: message` for each problem, one per line."""
    lines = []
    for problem in error.errors(include_url=False):
        loc = [p for p in problem["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {_loc([*prefix, *loc])}: {message}")
    return "\n".join(lines)


def _validate_scenario(raw: Any, source: str, where: Sequence[int | str]) -> BenchmarkScenario:
    try:
        return BenchmarkScenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, where)) from None


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus the built-in scenarios, and where it came from."""

    config: PipelineConfig
    source: str
    base_dir: Path
    scenarios: dict[str, BenchmarkScenario]
    scenario_origin: dict[str, str] = field(default_factory=dict)

    @property
    def targets(self) -> dict[str, TargetConfig]:
        return {t.name: t for t in self.config.targets}

    def select_scenarios(self, names: Iterable[str] | None) -> list[BenchmarkScenario]:
        # A name given twice (`--scenario a --scenario a`) runs once: a pair run twice under
        # one run id would record the same event ids twice.
        chosen = list(dict.fromkeys(names or [])) or list(self.config.default_scenarios)
        return [self._pick(self.scenarios, n, "scenario") for n in chosen]

    def select_targets(self, names: Iterable[str] | None) -> list[TargetConfig]:
        chosen = list(dict.fromkeys(names or []))
        if not chosen:
            return list(self.config.targets)
        return [self._pick(self.targets, n, "target") for n in chosen]

    def _pick(self, items: dict[str, Any], name: str, what: str) -> Any:
        if name not in items:
            known = ", ".join(sorted(items)) or "none"
            raise ConfigError(f"{self.source}: unknown {what} {name!r}; known: {known}")
        return items[name]

    def prompts(self, scenario: BenchmarkScenario) -> list[str]:
        """The scenario's prompts: `test_prompts`, then those of its `prompts_file` (JSONL)."""
        prompts = list(scenario.test_prompts)
        if scenario.prompts_file:
            prompts += read_prompts_file(self.base_dir / scenario.prompts_file)
        return prompts

    def prompt_problems(self) -> list[str]:
        """Every scenario's prompts read once; the message of each that cannot be used."""
        problems = []
        for scenario in self.scenarios.values():
            try:
                self.prompts(scenario)
            except ConfigError as exc:
                problems.append(str(exc))
        return problems

    def price(self, model: str) -> ModelPrice | None:
        """The config's price for a model, else the shipped table's, else None (unknown)."""
        if model in self.config.prices:
            return self.config.prices[model]
        shipped = PRICES.get(model)
        return ModelPrice(**shipped, as_of=PRICES_AS_OF) if shipped else None

    def config_hash(self, scenario: BenchmarkScenario, target: TargetConfig) -> str:
        payload = json.dumps(
            {"scenario": scenario.model_dump(mode="json"), "target": target.public_dict()},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from JSONL: each line a JSON string or an object with a "prompt" field.

    Only a regular file of at most `MAX_PROMPTS_FILE` bytes is read: a device (`/dev/zero`) or a
    FIFO would be read forever, and every prompt is held in memory for the run.
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: prompts_file: not a regular file")
        if info.st_size > MAX_PROMPTS_FILE:
            raise ConfigError(
                f"{path}: prompts_file: {info.st_size:,} bytes, over the "
                f"{MAX_PROMPTS_FILE >> 20} MiB a run may hold"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: prompts_file: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: prompts_file: not UTF-8 text") from None
    except ValueError as exc:  # a path no OS accepts (a NUL byte in it)
        raise ConfigError(f"{str(path)!r}: prompts_file: not a usable path ({exc})") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise ConfigError(f"{path}: line {number}: JSON nested too deeply") from None
        text = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text:
            raise ConfigError(f"{path}: line {number}: prompt: expected a non-empty string")
        prompts.append(text)
    if not prompts:
        raise ConfigError(f"{path}: prompts_file: holds no prompts")
    return prompts


def parse_config(raw: dict[str, Any], source: str, base_dir: Path) -> LoadedConfig:
    """Validate a config dict (from TOML or the default) and merge the built-in scenarios."""
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    scenarios: dict[str, BenchmarkScenario] = {}
    origin: dict[str, str] = {}
    for index, builtin in enumerate(BUILTIN_SCENARIOS):
        scenarios[builtin["name"]] = _validate_scenario(builtin, BUILTIN, ["scenarios", index])
        origin[builtin["name"]] = "built-in"
    for scenario in config.scenarios:
        scenarios[scenario.name] = scenario  # a config scenario may shadow a built-in one
        origin[scenario.name] = "config"
    loaded = LoadedConfig(config, source, base_dir, scenarios, origin)
    for index, name in enumerate(config.default_scenarios):
        if name not in scenarios:
            raise ConfigError(
                f"{source}: default_scenarios[{index}]: unknown scenario {name!r}; "
                f"known: {', '.join(sorted(scenarios))}"
            )
    return loaded


def load_config(path: Path | str | None = None, *, cwd: Path | None = None) -> LoadedConfig:
    """Load `path`, else `./pipeline.toml` if present, else the built-in default."""
    if path is None:
        candidate = (cwd or Path(os.getcwd())) / DEFAULT_CONFIG_NAME
        if not candidate.is_file():
            return parse_config(DEFAULT_CONFIG, BUILTIN, cwd or Path(os.getcwd()))
        path = candidate
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: (top level): arrays or tables nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300)
        reason = str(exc).split(";")[0]  # not the advice to raise Python's limit
        raise ConfigError(f"{path}: (top level): invalid TOML value: {reason}") from None
    return parse_config(raw, str(path), path.parent)
