"""``train``'s effective configuration: the defaults, then (with ``--resume``) the config saved in
the run, then ``--config file.toml``, then the options on the command line; and that configuration
printed back as TOML (``--print-config``)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from perceptron1_jax.cli.common import UsageError, float64_mode
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import VARIED, Population, check_population


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except OSError as err:
        raise UsageError(f"--config: cannot read {path} ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config: {path} is not valid TOML ({err})") from err
    return {k.replace("-", "_"): v for k, v in values.items()}


# What an option typed on the command line displaces from the lower sources (the checkpoint or
# config.json resumed, the TOML file): the options it cannot be combined with.
_DISPLACES = {"task": ("data", "classes", "test"), "data": ("task", "classes"), "classes": ("task", "data"),
              "cell": ("layers",), "hidden": ("layers",), "layers": ("cell", "hidden")}


def _resumed(args) -> tuple[dict | None, dict]:
    """``(config, population lists)`` of the run ``--resume`` continues (``(None, {})`` without it)."""
    from perceptron1_jax import checkpoint
    from perceptron1_jax.training.run_folder import saved_config

    if not (args.resume and args.out is not None):
        return None, {}
    try:
        raw = checkpoint.latest_good_checkpoint(args.out)
    except checkpoint.CheckpointError as err:  # a newer format: never skipped
        raise UsageError(str(err)) from err
    if raw is not None:
        population = raw.get("population")
        lists = {} if population is None else {k: v for k, v in population["population"].items() if v is not None}
        return raw["config"], lists
    saved = saved_config(args.out)  # stopped before its first checkpoint: its config.json, from step 0
    if saved is None:
        raise UsageError(f"--resume: expected a run folder holding a checkpoint or config.json, got "
                         f"{args.out} ({'no such folder' if not args.out.exists() else 'none there'}): "
                         "nothing to resume (leave out --resume to start a new run)")
    if not args.print_config:
        print(f"perceptron1 train: no checkpoint in {args.out}: starting its config.json from step 0")
    return saved, {}


def train_config(args) -> tuple[TrainConfig, Population | None]:
    """The run's config and, for a population, its :class:`Population` (lists of the varied
    options, from the command line or a TOML file; ``--seeds``; or the run resumed)."""
    from perceptron1_jax.training import check_resumable, config_from_dict

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    _check_conflicts(given, "")
    if args.resume and args.overwrite:
        raise UsageError("--overwrite: expected either --resume (continue the run) or --overwrite (replace it), "
                         "got both")
    saved, lists = _resumed(args)
    values = dict(saved or {})
    if args.config is not None:
        from_file = read_toml(args.config)
        _check_conflicts(from_file, f"--config: {args.config}: ")
        _merge(values, from_file)
    _merge(values, given)
    given_lists = {name: values[name] for name in (*VARIED, "seeds") if isinstance(values.get(name), list)}
    if "seeds" in values:  # a TOML key
        given_lists["seeds"] = values.pop("seeds")
    if args.seeds is not None:
        given_lists["seeds"] = args.seeds
    if given_lists:
        lists = given_lists
    for name, value in lists.items():
        if name != "seeds":
            if not value:
                raise UsageError(f"--{name.replace('_', '-')}: expected a number or a non-empty list of numbers, "
                                 "got []")
            values[name] = value[0]  # the config holds the first member's value
    float64_mode(values.get("dtype"))
    try:
        cfg = config_from_dict(values)
        if saved is not None:
            check_resumable(config_from_dict(saved), cfg)
        population = Population(**lists) if lists else None
        if population is not None:
            check_population(cfg, population)
    except (ValueError, TypeError) as err:  # they name the option and both values
        message = str(err)
        if message.startswith("population."):  # "population.seeds: ..." -> "--seeds: ..."
            name, _, rest = message.removeprefix("population.").partition(":")
            message = f"--{name.replace('_', '-')}:{rest}"
        raise UsageError(message) from err
    return cfg, population


def config_toml(cfg: TrainConfig, population: Population | None) -> str:
    """``cfg`` (and a population's lists and seeds) as TOML that ``--config`` loads back to the same
    run: one key per field that is set (None is a field's default, and TOML has no null)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    values = dataclasses.asdict(cfg)
    if cfg.task is None:
        values.pop("task")  # data or classes replace the task
    if cfg.layers is not None:
        values.pop("cell"), values.pop("hidden")  # layers names every layer's cell and size
    if population is not None:
        values.update({k: list(v) for k, v in population.to_dict().items() if k != "seeds" and v is not None})
        values["seeds"] = population.seeds
    return "".join(f"{k} = {value(v)}\n" for k, v in values.items() if v is not None)


def _check_conflicts(options: dict, where: str) -> None:
    """One source (the command line, or a TOML file) may not name both a task and data, or both
    layers and a cell or size: which would win is not for us to guess."""
    def name(key):
        return f"--{key.replace('_', '-')}" if not where else key

    source = sorted({"data", "classes"} & set(options))
    if "task" in options and source:
        raise UsageError(f"{where}{name('task')}: expected no {name('task')} with {name(source[0])} (your data "
                         f"replaces the task), got {name('task')} {options['task']}")
    shorthand = sorted({"cell", "hidden"} & set(options))
    if "layers" in options and shorthand:
        raise UsageError(f"{where}{name(shorthand[0])}: expected no {name('cell')}/{name('hidden')} with "
                         f"{name('layers')} (it names every layer's cell and size), got {name(shorthand[0])} "
                         f"{options[shorthand[0]]}")


def _merge(values: dict, higher: dict) -> None:
    """``values`` updated by the ``higher`` source, whose options also displace the lower ones they
    cannot be combined with (``--cell`` typed over a file's ``layers``, ``--task`` over its ``data``)."""
    for name in higher:
        for displaced in _DISPLACES.get(name, ()):
            if displaced not in higher:
                values.pop(displaced, None)
    values.update(higher)
