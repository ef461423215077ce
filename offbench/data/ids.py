"""The grammar of dataset ids and aliases: the one place that takes a dataset name apart.

    id          = source "/" name "-v" version { "+" transform }
    source      = lowercase letters, digits and "-", starting with a letter (the sources: offbench.data.registry)
    name        = words { "/" words }
    words       = runs of letters, digits and "_" joined by "-"
    version     = digits
    transform   = letters, digits, "_", "-" and "." (written by offbench.data.transforms and .corruption)
    alias       = words: no source, no version, no transform

    id                                            alias           short name                 config key
    d4rl/hopper-medium-v2                         hopper-medium   hopper-medium              hopper-medium
    minari/mujoco/hopper/medium-v0                hopper-medium   hopper-medium              hopper-medium
    local/hopper-medium-v5                        hopper-medium   hopper-medium              hopper-medium
    local/hopper-medium-v5+first10000             hopper-medium   hopper-medium+first10000   hopper-medium
    minari/D4RL/door/human-v2                     door-human      door-human                 door-human

The alias of an id is its name's last two segments joined by "-" (a Minari namespace is dropped);
its short name is the alias followed by its transforms (`toy+first1000+corrupt-relabel-random-actions-p0.2-seed0`
for `local/toy-v5+first1000+corrupt-relabel-random-actions-p0.2-seed0`); its config key (the table of per-dataset
overrides in baselines/<algo>.toml) is the alias.

Aliases. Each source has an alias form, the id an alias stands for there: `d4rl/{alias}-v2`,
`minari/mujoco/{task}/{kind}-v0`, `local/{alias}-v5` ({task} is the alias up to its first "-", {kind}
the rest; a form that needs a kind gives no candidate for a one-word alias). An alias resolves to the
first candidate present, in the order of the source table (`offbench.data.registry.SOURCES`); an
OGBench name stands first for its single-task data (`cube-single-play` -> `ogbench/` then
`local/ogbench-cube-single-play-singletask-v0`, the default task). Every candidate's alias is the alias
it came from, or, for that OGBench default, the alias plus `-singletask`, which a selector matches as
well; so a report selects by alias the runs that `offbench run --dataset <alias>` made, whichever source
it resolved to (with those on any other id of that alias, e.g. named by hand). Ids stay apart: each is
its own entry of a report, never pooled.

Transforms. A transform suffix names data derived from the stored dataset, in the order applied:
`+first10000`, `+episodes10000-seed0`, `+corrupt-relabel-random-actions-p0.3-seed0`. It is part of the id,
so runs on transformed data never share a cell with runs on the full data. Three rules:
- config key: transforms are ignored; hopper-medium cut to 10 000 transitions is still
  hopper-medium for its hyperparameters;
- report selection: a selector (an id, a short name, or a glob of either) picks transformed data only
  when it names a transform: `hopper-medium` picks the untransformed hopper-medium of every source,
  `hopper-medium+first10000` the cut one, `hopper-medium+*` every transformed one;
- loading: never by a transformed name; `offbench run --subset/--corrupt` transforms the loaded dataset
  and records the suffixed id.

Errors: a text that breaks this grammar raises `OffbenchError` with one line and the fix.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from offbench.errors import OffbenchError

SOURCE = r"[a-z][a-z0-9-]*"
WORDS = r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*"  # a name segment, and an alias
TRANSFORMS = r"(?:\+[A-Za-z0-9_.-]+)*"
LOCAL_OGBENCH = "ogbench-"  # local/ogbench-<OGBench name>: an OGBench recording made here (offbench.data.ogbench_recipes)
ID_PATTERN = re.compile(rf"(?P<source>{SOURCE})/(?P<name>{WORDS}(?:/{WORDS})*)-v(?P<version>\d+)(?P<transforms>{TRANSFORMS})")
VERSION_SUFFIX = re.compile(r"-v\d+$")
ID_EXAMPLES = "d4rl/hopper-medium-v2, minari/mujoco/hopper/medium-v0 or local/hopper-medium-v5, transforms appended (+first10000)"


@dataclass(frozen=True)
class DatasetId:
    """A canonical id taken apart: `minari/mujoco/hopper/medium-v0+first10000`."""

    source: str  # "minari"
    name: str  # "mujoco/hopper/medium": without version and transforms
    version: int  # 0
    transforms: tuple[str, ...] = ()  # ("first10000",)

    @property
    def base(self) -> str:
        """The id of the stored dataset, without transforms: `minari/mujoco/hopper/medium-v0`."""
        return f"{self.source}/{self.name}-v{self.version}"

    @property
    def alias(self) -> str:
        """`hopper-medium`: the name's last two segments, joined by "-". A local OGBench recording or
        single-task dataset (`local/ogbench-cube-single-play-singletask-v0`) has the OGBench name as its
        alias (`cube-single-play-singletask`), the same as the `ogbench/` id of the real data."""
        alias = "-".join(self.name.split("/")[-2:])
        return alias.removeprefix(LOCAL_OGBENCH) if self.source == "local" else alias

    @property
    def short_name(self) -> str:
        """`hopper-medium+first10000`: the alias with the transforms."""
        return "".join([self.alias, *(f"+{t}" for t in self.transforms)])

    def __str__(self) -> str:
        return "".join([self.base, *(f"+{t}" for t in self.transforms)])


def parse(dataset_id: str) -> DatasetId:
    """Take a canonical id apart; raises `OffbenchError` for a text that is not one."""
    match = ID_PATTERN.fullmatch(dataset_id)
    if match is None:
        raise OffbenchError(f"'{dataset_id}' is not a dataset id: {_flaw(dataset_id)}", f"ids look like {ID_EXAMPLES}")
    transforms = tuple(match["transforms"].split("+")[1:])
    return DatasetId(match["source"], match["name"], int(match["version"]), transforms)


def stored(dataset_id: str) -> DatasetId:
    """Parse the id of a stored dataset; transformed data (`+first10000`) raises `OffbenchError`."""
    parsed = parse(dataset_id)
    if parsed.transforms:
        raise _transformed(dataset_id, parsed.base)
    return parsed


def is_id(text: str) -> bool:
    """Whether `text` follows the id grammar (`parse` would not raise)."""
    return ID_PATTERN.fullmatch(text) is not None


def short_name(dataset_id: str) -> str:
    """`local/hopper-medium-v5+first10000` -> `hopper-medium+first10000`, the name reports show."""
    return parse(dataset_id).short_name


def config_key(dataset_id: str) -> str:
    """The key of per-dataset config overrides: the alias, whatever the source and transforms."""
    return parse(dataset_id).alias


def split_alias(alias: str) -> tuple[str, str]:
    """`hopper-medium-replay` -> ("hopper", "medium-replay"); ("toy", "") for a one-word alias."""
    if "+" in alias:
        raise _transformed(alias, alias.split("+", 1)[0])
    if not re.fullmatch(WORDS, alias) or VERSION_SUFFIX.search(alias):
        raise OffbenchError(
            f"'{alias}' is neither a dataset id nor an alias",
            f"an alias drops the source and version, e.g. hopper-medium; ids look like {ID_EXAMPLES}",
        )
    task, _, kind = alias.partition("-")
    return task, kind


def expand_alias(form: str, alias: str) -> str | None:
    """The id an alias stands for in a source's alias form; None when the form needs a kind the alias lacks.

    `expand_alias("minari/mujoco/{task}/{kind}-v0", "hopper-medium")` -> `minari/mujoco/hopper/medium-v0`.
    """
    task, kind = split_alias(alias)
    if "{kind}" in form and not kind:
        return None
    return form.format(alias=alias, task=task, kind=kind)


def selects(selector: str, dataset_id: str) -> bool:
    """Whether a report selector picks `dataset_id`.

    A selector is an id, a short name, or a glob of either (`local/hopper-*`, `hopper-*`); a selector
    without "+" never picks transformed data (see the module docstring).
    """
    parsed = parse(dataset_id)
    if parsed.transforms and "+" not in selector:
        return False
    name, plus, transforms = selector.partition("+")
    single_task_default = f"{name}-singletask{plus}{transforms}"  # `cube-single-play` runs on its default task's data
    return any(fnmatch.fnmatchcase(dataset_id, s) or fnmatch.fnmatchcase(parsed.short_name, s) for s in (selector, single_task_default))


def _transformed(text: str, base: str) -> OffbenchError:
    return OffbenchError(
        f"'{text}' names transformed data, which is derived when a run starts, never loaded by name",
        f"load {base} and transform it with `offbench run --subset/--corrupt`; the run's id records the transform",
    )


def _flaw(text: str) -> str:
    """What is wrong with a text that is not an id, in a few words."""
    source, slash, rest = text.partition("/")
    if not slash:
        return "it names no source (source/name-vN)"
    if not re.fullmatch(SOURCE, source):
        return f"bad source '{source}'"
    name, plus, transforms = rest.partition("+")
    if not VERSION_SUFFIX.search(name):
        return "its name does not end in a version (-v<N>)"
    if not re.fullmatch(TRANSFORMS, plus + transforms):
        return "a transform suffix is empty or holds a character other than letters, digits, '_', '-', '.'"
    return "a segment of its name is not words of letters, digits and '_' joined by '-'"
