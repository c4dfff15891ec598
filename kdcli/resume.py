"""Starting a run in its folder: new, resumed (--resume), started over (--force), kept when finished, or refused.

    check_can_start(config)             # the refusals that need no data: before anything loads or is printed
    state = prepare_run_dir(config)     # in the claimed folder: None (new), a checkpoint to resume, or "done"
    check_same_inputs(run)              # a resumed or kept run trains on the images and cache it started with

--resume reads a run's own options back where not given (recorded_options) and refuses
others given (check_same_options); the options a later stage takes from the stage before
it (--data-dir and --subset: options_of_inputs) are read the same way.
"""

import math
import warnings
from pathlib import Path

from kdcli import KdcliError, count, short
from kdcli.checkpoint import CHECKPOINT, delete_stale_temporaries, load_checkpoint, peek_checkpoint
from kdcli.config import flag
from kdcli.models import canonical_name
from kdcli.records import as_recorded_now, check_record, plain, read_json
from kdcli.runs import DIVERGED, busy_message, check_run_folder, check_sweep_folder, in_use, kdcli_config


def check_can_start(config):
    """What of --out can be refused before any data or cache is loaded: its files, and what a checkpoint to --resume
    records (a refusal then costs nothing, and no warning about the data comes before it). prepare_run_dir checks
    it all again under the folder's lock, which is what counts."""
    out = Path(config.out)
    check_run_folder(out)
    if in_use(out):
        raise KdcliError(busy_message(out))
    check_not_overwriting(config)
    # Before the cache opens: a --resume given another --subset than the run's is refused as that, not as a
    # cache of another length.
    if config.resume and not config.force and (out / CHECKPOINT).is_file():
        check_resumes(config, peek_checkpoint(out / CHECKPOINT), out)
    if getattr(config, "distillation_weight", 0) > 0:
        check_cache_readable(config.cache)


def check_cache_readable(path):
    from kdcli.cache import check_readable  # h5py is only needed by students of a cache

    check_readable(path)


def check_sweep_can_start(out: Path, cache=None):
    """check_can_start for a sweep's own folder (its students' are checked as they are claimed) and the `cache`
    its KD students read (None: baselines alone, which read none)."""
    check_sweep_folder(out)
    if in_use(out):
        raise KdcliError(busy_message(out))
    if cache is not None:
        check_cache_readable(cache)


def check_not_overwriting(config):
    """--out holds a run that only --force replaces (finished or not), or --resume continues or keeps."""
    out = Path(config.out)
    if config.force or config.resume:
        return
    if (out / "summary.json").exists():
        raise KdcliError(f"{out} holds a finished run: pass --force to overwrite it, or choose another --out")
    if (out / CHECKPOINT).exists():
        try:  # an unreadable one keeps this refusal: --force still starts over
            recorded = peek_checkpoint(out / CHECKPOINT).get("config")
        except KdcliError:
            recorded = None
        if recorded:  # a teacher's run, to a student: --resume would only be refused in turn
            check_same_kind(as_recorded_now(recorded), vars(config), out)
        raise KdcliError(f"{out} holds an unfinished run: pass --resume to continue it, or --force to start over")


def prepare_run_dir(config):
    """Ready --out (claimed: claim_folder) for the run: a killed write's temporary files and, with --force, the old
    run deleted, what is left checked against --resume; return the checkpoint to resume from, 'done', or None."""
    out = Path(config.out)
    delete_stale_temporaries(out)  # left by a process killed in write_atomic or save_all_atomic
    if config.force:
        forget_run(out)
    check_not_overwriting(config)  # so what is left in --out is a run to --resume
    if (out / "summary.json").exists():
        check_kept(config, out)
        return "done"
    if not (out / CHECKPOINT).exists():
        return None
    state = load_checkpoint(out / CHECKPOINT)
    check_resumes(config, state, out)
    return state


def check_kept(config, out: Path):
    """--resume keeps the finished run in `out`, but only for the options it was trained with: its checkpoint's, or
    its config.json's where the checkpoint was deleted (to save space)."""
    if (out / CHECKPOINT).exists():
        check_resumes(config, peek_checkpoint(out / CHECKPOINT), out)
    elif state := state_of_config_json(out):
        check_same_options(config, state, out)


def state_of_config_json(out: Path) -> dict | None:
    """For a finished run whose checkpoint was deleted (to save space), or one that diverged before its first: its
    options, as a checkpoint's state holds them, from the config.json it started with; None where kdcli wrote none there."""
    record = kdcli_config(out)
    return {"config": record} if record else None


def check_resumes(config, state: dict, out: Path):
    """--resume: the checkpoint `state` in `out` is of the run `config` describes, and one to continue unless finished."""
    missing = [key for key in ("optimizer", "epoch", "step", "partial", "config") if key not in state]
    if missing and not (out / "summary.json").exists():
        raise KdcliError(f"{out / CHECKPOINT} is not a checkpoint of a run to resume (it lacks {', '.join(missing)}): pass --force to start over, or another --out")
    check_checkpoint_is_the_runs(state, out)
    check_same_options(config, state, out)


def check_checkpoint_is_the_runs(state: dict, out: Path):
    """The checkpoint `state` in `out` is of the run whose config.json is there: one copied in from another run would
    be resumed, or kept, as that run (its options are read back from it), under this run's name and config.json."""
    started = as_recorded_now(kdcli_config(out))
    saved = as_recorded_now(state.get("config") or {})
    differ = options_changed(started, saved)
    if differ:
        said = ", ".join(f"{flag(k)} {plain(saved[k])!r} (config.json: {plain(started[k])!r})" for k in differ)
        raise KdcliError(f"{out / CHECKPOINT} is another run's than its config.json's: {said}; put the run's own checkpoint back, or pass --force to start over")


# --resume and the options a run recorded. The run's own (model, recipe, seed, --subset, ...) are read back where
# not given and refused where given otherwise (check_same_options). The others may change:
# - not read back: where the run is and what to do with it, and how this machine runs it (its defaults fit it);
NOT_READ_BACK = {"out", "resume", "force", "quiet", "device", "compile", "cuda_graphs"}
# - read back, yet free to differ: how a run computes, and where its inputs are (check_same_inputs checks the inputs
#   themselves). A resumed run may move to another device, which changes its precision anyway; --amp too (a bf16
#   run resumed under fp16 starts a fresh loss scale).
MAY_DIFFER = NOT_READ_BACK | {"amp", "eval_every", "save_every", "cache", "data_dir", "download", "allow_partial"}


def recorded_options(out, asked: dict) -> dict:
    """The options the run in `out` started with, as this kdcli names them (but NOT_READ_BACK); {} where no run
    started there. `asked`: the options given now, to refuse a student's read into a teacher's."""
    ckpt = Path(out) / CHECKPOINT
    if ckpt.is_file():
        recorded = peek_checkpoint(ckpt).get("config") or {}
    else:  # a run stopped before its first checkpoint: its config.json (its options, and Run.inputs, which no option is named after)
        recorded = kdcli_config(Path(out))
        if not recorded:
            return {}
    recorded = as_recorded_now(recorded)
    if asked.get("force") and run_kind(recorded) != run_kind(asked):  # make passes --resume always, so --force must replace it
        warnings.warn(f"{out} holds a {run_kind(recorded)}'s run: --force replaces it with a new {run_kind(asked)}'s, of the options "
                      "given and the defaults (none of the run's own apply to it)", stacklevel=2)  # fmt: skip
        return {}
    check_same_kind(recorded, asked, out)
    return {k: v for k, v in recorded.items() if k not in NOT_READ_BACK}


IMAGE_OPTIONS = ("data_dir", "subset")  # which images a stage trains on or labels: said once, to the teacher


def options_of_inputs(options: dict) -> dict:
    """The images (IMAGE_OPTIONS) the stage before recorded: the teacher's run for dump-logits, the cache for a student of
    it; a later stage reads them back where not given. {} where that input cannot be read: the command
    itself then says why."""
    try:
        if "teacher" in options:
            recorded = peek_checkpoint(options["teacher"]).get("config") or {}
        elif options.get("cache") and options.get("distillation_weight", 0) > 0:
            from kdcli.cache import cache_info  # h5py is only needed by students of a cache

            recorded = cache_info(options["cache"])["attrs"].get("config") or {}
        else:
            return {}
    except KdcliError:
        return {}
    return {k: recorded[k] for k in IMAGE_OPTIONS if k in recorded}


def forget_run(out):
    """--force: the run in `out` is to be trained anew (its config.json is rewritten when it starts)."""
    for name in ("summary.json", "metrics.jsonl", CHECKPOINT, DIVERGED):
        (Path(out) / name).unlink(missing_ok=True)


def run_kind(options: dict) -> str:
    return "student" if "cache" in options else "teacher"


def check_same_kind(saved: dict, now: dict, out):
    """A student never continues a teacher's run, nor the reverse (options recorded and asked for, as dicts)."""
    was, now = run_kind(saved), run_kind(now)
    if was != now:
        raise KdcliError(f"{out} holds a {was}'s run, not a {now}'s: pass another --out, or --force to start over")


RESUME_REMEDY = "give the run's own (--resume takes them where left out), --force to start over, or another --out"


def check_same_options(config, state, out, remedy=RESUME_REMEDY):
    """The run in `out` (its checkpoint's `state`) is the run `config` describes: a teacher's or a student's, of
    the same model, with the same options (the CLI fills in those not given from the run: recorded_options)."""
    saved = as_recorded_now(state.get("config", {}))
    check_same_kind(saved, vars(config), out)
    if canonical_name(state.get("model_name", config.model)) != config.model:
        raise KdcliError(f"{out} holds a {state['model_name']}, not a {config.model} (--model); {remedy}")
    check_options_kept(vars(config), saved, out, remedy)


def options_changed(now: dict, saved: dict) -> list:
    """The options of `saved` (a run's, as recorded) that `now` gives otherwise, but those that MAY_DIFFER."""
    return [k for k in saved if k not in MAY_DIFFER and k in now and plain(now[k]) != plain(saved[k])]


def check_options_kept(asked: dict, saved: dict, out, remedy=RESUME_REMEDY):
    """The options `asked` (all of a config, or those typed) keep those the run in `out` trained with (`saved`), but MAY_DIFFER."""
    changed = [f"{flag(k)} {plain(asked[k])!r} (run has {plain(saved[k])!r})" for k in options_changed(asked, saved)]
    if changed:
        raise KdcliError(f"{out} was trained with other options: {', '.join(changed)}; {remedy}")


CACHE_IDENTITY = ("cache_teacher_sha256", "cache_seed", "cache_epochs")  # what a resumed student's cache must still be


def check_same_inputs(run):
    """A resumed or kept run must train on the images, and read the cache, it started with: otherwise it
    mixes two datasets, or two teachers (or two sets of views), in one run, or reports an old teacher's."""
    recorded = run.dir / "config.json"
    was = check_record(read_json(recorded), recorded) if recorded.exists() else {}

    def changed(keys):
        return [f"{k.removeprefix('cache_')} {short(was[k])} (now {short(run.inputs[k])})" for k in keys if k in was and k in run.inputs and was[k] != run.inputs[k]]

    if images := changed(["train_fingerprint"]):
        raise _other_images(run.dir, images[0])
    grew = was.get("allow_partial") and run.inputs.get("cache_epochs", 0) > was.get("cache_epochs", math.inf)
    if grew and not changed(["cache_teacher_sha256", "cache_seed"]):  # the same teacher and views, finished since
        raise KdcliError(
            f"{run.dir} was trained with --allow-partial while {run.config.cache} had {count(was['cache_epochs'], 'complete epoch')}; it now "
            f"has {run.inputs['cache_epochs']}, and a student replays cached epoch e mod E: --force to train it again on all of them"
        )
    if cache := changed(CACHE_IDENTITY):
        if was.get("cache") == str(run.config.cache):  # the path it trained from: made again since (make logits after a new teacher), or another folder's
            raise KdcliError(
                f"{run.dir} was trained from another cache than the one now at {run.config.cache} ({', '.join(cache)}): it was made again "
                "since, or that path names another file from this folder; pass the one it trained from, or --force to train it again"
            )
        raise KdcliError(
            f"{run.dir} was trained from another cache than {run.config.cache} ({', '.join(cache)}); "
            "pass that cache, or --force to train it again"
        )


def check_resumed_on_its_images(config, data):
    """For a student resumed or kept: check_same_inputs' check of its images, made before its cache is checked against
    them. Else a run resumed in another folder, whose recorded --data-dir (relative) names another data/ there, was
    told that its cache does not fit these images: advice that made a cache of the wrong ones."""
    recorded = Path(config.out) / "config.json"
    if not config.resume or config.force or not recorded.is_file():
        return
    was = read_json(recorded).get("train_fingerprint")
    if was is not None and was != data.fingerprint:
        raise _other_images(config.out, f"train_fingerprint {short(was)} (now {short(data.fingerprint)})")


def _other_images(run_dir, change: str) -> KdcliError:
    return KdcliError(f"{run_dir} was trained on other images, not the training images given now ({change}); "
                      "pass its --data-dir and --subset, or --force to start over")  # fmt: skip
