"""The model card ``mrirecon train CONFIG.yaml`` writes beside ``model.pt``.

In the schema of the shipped cards (``mrirecon/weights/*.yaml``): ``model`` (what loading needs),
``description``, ``data`` (the folders and how much of them was used), ``training`` (the command,
the config file and the resolved config, steps, wall time, versions), ``training_range`` measured
from the training data actually used (:meth:`training_range` of the training set: k-space
matrices, coils and accelerations for MRI; image grid, views, beam and detectors for CT), which
``mrirecon run`` compares every input with (:mod:`mrirecon.pipeline.model_range`), and
``known_failures``. A card with ``model`` only made ``run`` check nothing: a model trained at
32 x 32 with 2 coils at 4x ran on 48 x 40 at 8x without a word.

A trainer that writes over an earlier card (``train modl / varnet / prior / denoiser / gmm /
perceptual / radial``) follows
:func:`rebuilt_card`: a rebuild keeps
only the descriptive sections of the old card (:data:`DESCRIPTIVE`), and only when it describes
the same model and recipe; its run record and its metrics belong to other weights and are
dropped (``make weights`` kept the shipped cards' steps, wall time, validation curve and held-out
scores over newly trained weights). The CT trainers (``ct_staged.save``, ``ct_primal_dual.save``)
write every section from the run and read nothing of an earlier card but the ``--init`` run's
record (``training.first_run``, the history of these very weights): the same outcome.
"""

from __future__ import annotations

import math
import platform
import shlex
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from mrirecon.core.config import to_dict
from mrirecon.threads import env_int


def card_command(path: str, overrides: Iterable[str], resume: bool,
                 threads: int | None = None, world: int = 1, local: int = 1) -> str:
    """The ``mrirecon train`` command line of a run of ``path`` with ``--set`` ``overrides``
    (``threads``: the CPU threads it ran on, as ``--threads``). A run of ``world`` > 1
    processes (``local`` per node) is recorded as its ``torchrun`` launch: its global batch is
    ``world x optim.batch_size``, so the plain command trained another model."""
    words = ["mrirecon", "train", str(path)]
    if world > 1:
        nodes = [f"--nnodes={world // local}"] if world > local else []
        words = ["torchrun", *nodes, f"--nproc-per-node={local}", "-m", *words]
    if threads is not None:
        words += ["--threads", str(int(threads))]
    for o in overrides:
        words += ["--set", str(o)]
    if resume:
        words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)


def _data_entry(folder: str, dataset, modality: str) -> dict:
    files = dataset.source_files()
    entry = {"folder": str(Path(folder).resolve())}
    if modality == "ct":
        entry.update({"files": len([f for f in files if f.name.startswith("observation_")]),
                      "images": len(dataset)})
    else:
        entry.update({"volumes": len(files), "slices": len(dataset)})
    return entry


def training_card(cfg, train_set, val_set, *, source: str, overrides: Iterable[str] = (),
                  resume: bool = False, steps: int = 0, seconds: float = 0.0,
                  resumed_at: int | None = None, device: str = "cpu",
                  history: Iterable[Mapping] = (), world: int = 1) -> dict:
    """The card's sections besides ``model`` (passed to :func:`~mrirecon.training.run.save_model`
    as ``extra``) for a run of ``cfg`` that trained on ``train_set`` (and validated on
    ``val_set`` when ``val_every > 0``). ``history``: the trainer's logged rows; their
    validation curve is summarised in ``training.validation`` (:func:`validation_summary`), and
    a run that made the model worse (:func:`validation_problem`) gets a ``known_failures``
    note."""
    d = cfg.data
    data = {"train": _data_entry(d.train, train_set, d.modality)}
    if cfg.val_every > 0:
        data["val"] = _data_entry(d.val, val_set, d.modality)
    if d.modality == "ct":
        full = train_set.files.geometry.num_views
        data["views"] = (f"about {d.ct_views} of {full} views kept (every "
                         f"{train_set.factor}th)" if d.ct_views else f"all {full} views") + (
            f", dose lowered to {d.ct_photons:g} photons per bin" if d.ct_photons else "")
    else:
        m = d.mask
        data["masks"] = (f"{m.type}, accelerations {', '.join(map(str, m.accelerations))} (centre "
                         f"fractions {', '.join(map(str, m.center_fractions))}); "
                         f"{d.maps} coil maps")
    from mrirecon.training.validate import inert_settings

    self_supervised = getattr(cfg.loss, "ssdu", None) is not None
    threads = torch.get_num_threads()
    local = env_int("LOCAL_WORLD_SIZE", world)  # processes per node (torchrun sets it)
    training = {
        "command": card_command(source, overrides, resume, threads, world, local),
        "config_file": str(source),
        "config": to_dict(cfg),
        "steps": int(steps),
        "wall_time_s": round(float(seconds), 1),
        "hardware": f"{platform.machine()}, device {device}, {threads} thread(s)" + (
            f" per process, {world} processes (global batch {world * cfg.optim.batch_size})"
            if world > 1 else ""),
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
        "loss": "self-supervised (loss.ssdu)" if self_supervised else "supervised",
    }
    if resumed_at is not None:
        training["resumed_at_step"] = int(resumed_at)
    warnings = inert_settings(cfg)
    if warnings:
        training["config_warnings"] = warnings
    summary = validation_summary(history)
    if summary.get("psnr"):  # the bar: the same validation slices without a model
        from mrirecon.training.validation import input_baseline

        summary["baseline"] = input_baseline(val_set, d.modality)
    if summary:
        training["validation"] = summary
    problem = validation_problem(summary, cfg.optim.lr)
    return {
        "description": f"{cfg.model.name} trained by mrirecon train {source} (see training)",
        "data": data,
        "training": training,
        "training_range": train_set.training_range(),
        "known_failures": [
            "Trained by mrirecon train on the files of data.train only (see data and "
            "training_range): other matrices, coil counts, accelerations (CT: views, beam, "
            "detectors) are outside its training range and mrirecon run warns; not scored on "
            "held-out data unless a section below says so."] + ([problem] if problem else []),
    }


def validation_summary(history: Iterable[Mapping]) -> dict:
    """``{metric: {first, best, last: {step, value}}}`` of the ``val_PSNR`` / ``val_SSIM`` of
    the logged rows ``history`` (a NaN score is never the best); ``{}`` without validation
    (self-supervised runs validate their loss, ``val_ssdu_loss``: not summarised)."""
    out = {}
    for name in ("psnr", "ssim"):
        key = f"val_{name.upper()}"
        points = [{"step": int(r["step"]), "value": float(r[key])} for r in history if key in r]
        if points:
            best = max(points, key=lambda p: p["value"] if math.isfinite(p["value"]) else -math.inf)
            out[name] = {"first": points[0], "best": best, "last": points[-1]}
    return out


#: How far the last validation PSNR must fall below the first to be called worse: validation
#: scores of a run that is not diverging move by a few hundredths of a dB (an SSDU MoDL: 20.81 ->
#: 20.78 dB), and the warning printed both as "20.8 dB < 20.8 dB" and advised a lower rate.
WORSE_MARGIN_DB = 0.1


def validation_problem(summary: Mapping, lr: float) -> str | None:
    """A line when the last validation PSNR of ``summary`` (:func:`validation_summary`) is not
    finite, below 0 dB (worse than an all-zero image: its error is the target's own energy,
    at most its maximum squared), more than :data:`WORSE_MARGIN_DB` below the first
    validation's, or no higher than the model-free ``baseline`` (zero-filled / FBP on the same
    slices, when recorded); else ``None``."""
    psnr = summary.get("psnr") if summary else None
    if not psnr:
        return None
    first, last = psnr["first"], psnr["last"]
    if not math.isfinite(last["value"]) or last["value"] < 0:
        worse = f"{last['value']:.3g} dB < 0 dB (an all-zero image scores more)"
    elif last["step"] > first["step"] and last["value"] < first["value"] - WORSE_MARGIN_DB:
        worse = f"{last['value']:.4g} dB < {first['value']:.4g} dB at step {first['step']}"
    elif (base := summary.get("baseline")) and last["value"] <= base["PSNR"]:
        return (f"the model is no better than its input: final val PSNR (step {last['step']}) "
                f"{last['value']:.4g} dB <= {base['PSNR']:.4g} dB of {base['method']} on the same "
                "validation slices; train longer (optim.max_steps), check the data, or use a "
                "classical method")
    else:
        return None
    return (f"training diverged or made the model worse: final val PSNR (step {last['step']}) "
            f"{worse}; lower optim.lr (now {lr:g})")


# ---- the card of a rebuild: what an earlier card beside the output keeps ----------------------

#: Sections of an earlier card that a rebuild of the same model keeps: written by hand, they
#: describe the recipe, the model's design, its range and where it fails. Every other section
#: (``training``, ``metrics_held_out``, ``validation_split``, tuning and inference grids, ...)
#: records a run or scores the weights the earlier card described, and is dropped.
DESCRIPTIVE = ("kind", "description", "full_geometry", "normalisation", "data", "overridable",
               "training_range", "known_failures")

#: Key order of a written card (other sections follow in the order they come).
_ORDER = ("kind", "model", "overridable", "description", "full_geometry", "normalisation", "data",
          "training", "training_range", "known_failures", "rebuilt")

#: The first words of the known failure a rebuild adds (a later rebuild replaces it).
REBUILT_NOTE = "Rebuilt by "


def earlier_card(out: str | Path) -> dict | None:
    """The card beside ``out`` (``<stem>.yaml``) as it is before a run writes over it, with the
    SHA-256 of the weights it describes (``<stem>.pt``, ``None`` when absent): ``{"card": ...,
    "sha256": ...}``, or ``None`` when there is no readable card. Read once at the start of a
    run: the run's own saves replace both files."""
    import yaml

    from mrirecon.core.yaml_loader import load_card_yaml

    from mrirecon.io.atomic import file_sha256

    path = Path(out).with_suffix(".yaml")
    if not path.is_file():
        return None
    try:
        card = load_card_yaml(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    if not isinstance(card, dict):
        return None
    pt = Path(out).with_suffix(".pt")
    return {"card": card, "sha256": file_sha256(pt) if pt.is_file() else None}


def _command_options(command: str) -> dict[str, str]:
    """``{"seed": "0", "widths": "320 368", "prefetch": "True"}`` of a ``mrirecon train KIND
    --opt value ...`` command line (a bare ``--flag`` is ``"True"``, ``--no-flag`` ``"False"``;
    ``--out`` and ``--threads`` left out)."""
    opts, key = {}, None
    for word in shlex.split(command):
        if word.startswith("--"):
            key = word[2:].replace("-", "_")
            opts[key] = ""
        elif key is not None:
            opts[key] = f"{opts[key]} {word}".strip()
    for key in [k for k, v in opts.items() if v == ""]:
        flag = key[3:] if key.startswith("no_") else key
        opts[flag] = str(flag == key)
        if flag != key:
            del opts[key]
    return {k: v for k, v in opts.items() if k not in ("out", "threads")}


def option_words(value) -> str:
    """``value`` as a command line gives it after its option (a tuple its items;
    :func:`trainer_command` writes them so; a flag as ``True`` /
    ``False``, as :func:`_command_options` reads it)."""
    if isinstance(value, bool):
        return str(value)
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


#: Options whose values name the same training data: ``workers`` 0 and 1 draw the one sample
#: stream of ``train modl`` / ``varnet`` (2 or more draw one each: other data)
SAME_DATA = {"workers": lambda v: str(max(1, int(float(v))))}


def _same_value(text: str, value, key: str = "") -> bool:
    """The words ``text`` of a command line say ``value`` (``1e-3`` is ``0.001``)."""
    if key in SAME_DATA:
        try:
            return SAME_DATA[key](text) == SAME_DATA[key](value)
        except (TypeError, ValueError):
            return False
    words, values = text.split(), option_words(value).split()
    if len(words) != len(values):
        return False
    for w, v in zip(words, values):
        try:
            if float(w) != float(v):
                return False
        except ValueError:
            if w != v:
                return False
    return True


def _same_run(old: Mapping, fresh: Mapping, recipe: Mapping | None, defaults: Mapping) -> bool:
    """``old`` describes the model of ``fresh`` and the recipe that trained it: the same name,
    every parameter of the run the same (the old card may list more: inference settings the run
    does not set), the same training range where the run measures one and, given ``recipe``
    (the options of ``fresh``'s ``training.command`` that descriptive text may state: data,
    seed, sizes; not the budget), the same options in the old card's command (an option it
    omits had its default in ``defaults``; cards of ``train gmm`` recorded it as
    ``data.command``)."""
    model, new = old.get("model"), fresh.get("model") or {}
    if not isinstance(model, dict) or model.get("name") != new.get("name"):
        return False
    params = model.get("params") or {}
    if not isinstance(params, dict) or any(
            k not in params or params[k] != v for k, v in (new.get("params") or {}).items()):
        return False
    if "training_range" in fresh and old.get("training_range") not in (None, fresh["training_range"]):
        return False
    if recipe is None:
        return True
    training = old.get("training") if isinstance(old.get("training"), dict) else {}
    command, now = training.get("command"), fresh["training"]["command"]
    if command is None and isinstance(old.get("data"), dict):
        command = old["data"].get("command")  # where cards of train gmm recorded it before
    if not isinstance(command, str) or command.split(" --")[0] != now.split(" --")[0]:
        return False  # no command, or another trainer's
    given = _command_options(command)
    for key, value in recipe.items():
        if key in given:
            if not _same_value(given[key], value, key):
                return False
        elif key not in defaults or not _same_value(option_words(defaults[key]), value, key):
            return False
    return True


def rebuilt_card(fresh: Mapping, earlier: Mapping | None, *, who: str,
                 defaults: Mapping | None = None, recipe: Mapping | None = None,
                 recipe_defaults: Mapping | None = None) -> dict:
    """The card a training run writes: ``fresh`` (what the run knows: ``model``, its
    ``training`` record, a measured ``training_range``, ...) always wins; an ``earlier`` card
    (:func:`earlier_card`) of the same model, training range and ``recipe`` (the run's options
    besides its budget; ``recipe_defaults``: the trainer's defaults, for options an older
    command omits) gives its :data:`DESCRIPTIVE`
    sections the run does not write (its ``model.params`` that the run does not set stay too);
    ``defaults`` (the recipe's generic text) fill what neither has. The rest of the earlier
    card is dropped, and a kept card says so: a ``rebuilt`` section (what was kept and dropped,
    the SHA-256 of the weights the kept text was written for) and a first known failure
    warning that figures in the kept text are those weights'. ``who``: what wrote it
    (``mrirecon train modl``)."""
    old = dict((earlier or {}).get("card") or {})
    if not _same_run(old, fresh, recipe, recipe_defaults or {}):
        old = {}
    card = dict(defaults or {})
    kept = [k for k in DESCRIPTIVE if k in old and k not in fresh]
    card.update({k: old[k] for k in kept})
    card.update(fresh)
    params = dict(fresh["model"].get("params") or {})
    kept_params = [k for k in (old.get("model") or {}).get("params") or {} if k not in params]
    if old:  # the earlier card's other parameters (inference settings) stay
        card["model"] = {**fresh["model"], "params": {**old["model"]["params"], **params}}
    if kept or kept_params:
        kept += [f"model.params.{k}" for k in kept_params]
        previous = old.get("rebuilt") if isinstance(old.get("rebuilt"), dict) else {}
        written_for = previous.get("kept_text_written_for_sha256", (earlier or {}).get("sha256"))
        dropped = [k for k in old if k not in DESCRIPTIVE and k not in ("model", "rebuilt")]
        date = time.strftime("%Y-%m-%d")
        card["rebuilt"] = {"by": who, "date": date, "kept": kept,
                           "dropped": dropped, "kept_text_written_for_sha256": written_for}
        failures = card.get("known_failures", [])
        failures = [f for f in (failures if isinstance(failures, list) else [failures])
                    if not (isinstance(f, str) and f.startswith(REBUILT_NOTE))]
        weights = f"sha256 {written_for[:12]}" if written_for else "no .pt beside it"
        card["known_failures"] = [
            f"{REBUILT_NOTE}{who} on {date} over the card of earlier weights ({weights}): "
            f"{', '.join(kept)} were kept from it, so any figure in them was measured on those "
            f"weights, not on these; its run record and metrics ({', '.join(dropped) or 'none'}) "
            "were dropped (see rebuilt).", *failures]
    order = [k for k in _ORDER if k in card] + [k for k in card if k not in _ORDER]
    return {k: card[k] for k in order}


def option_defaults(fn) -> dict:
    """``{option: default}`` of the training function ``fn`` (``mrirecon train KIND``): what an
    option that a card's command or a trainer's ``args`` omit was."""
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def trainer_card(fn, fresh: Mapping, earlier: Mapping | None, args: Mapping,
                 budget: Iterable[str] = (), defaults: Mapping | None = None) -> dict:
    """:func:`rebuilt_card` of a run of the training function ``fn`` (``mrirecon train KIND``,
    named by ``fresh``'s ``training.command``) with the options ``args``: its recipe is every
    option but ``budget`` (steps, time, validation cadence, workers, threads: they change how
    long and how fast, not what a card's text describes), an option an older command omits
    having ``fn``'s default (:func:`option_defaults`)."""
    skip = {"threads", "log", *budget}
    return rebuilt_card(fresh, earlier, who=fresh["training"]["command"].split(" --")[0],
                        defaults=defaults, recipe={k: v for k, v in args.items() if k not in skip},
                        recipe_defaults=option_defaults(fn))


def trainer_command(kind: str, out: Path, args: dict) -> str:
    """The ``mrirecon train KIND`` command line of a run with keyword arguments ``args`` (for its
    card); ``True`` becomes a bare flag, ``False`` ``--no-FLAG``, a tuple its items."""
    def option(k, v) -> str:
        flag = k.replace("_", "-")
        if isinstance(v, bool):
            return f"--{flag}" if v else f"--no-{flag}"
        return f"--{flag} {option_words(v)}"

    # an unset option (None: the trainer's rule) is left out: "--lr-drop-step None" was refused
    return f"mrirecon train {kind} --out {out} " + " ".join(option(k, v) for k, v in args.items()
                                                            if v is not None)
