"""The `recjobs` command: a thin face over the jobs. Every RecJobsError becomes one line."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path

import click

from . import settings as settings_module
from .errors import RecJobsError, storage_message

log = logging.getLogger("recjobs")


def settings_options(names=None):
    """click options for the named settings (all by default), with the settings' help."""

    def decorate(command):
        for name, (default, help_text) in reversed(settings_module.setting_help().items()):
            if names is not None and name not in names:
                continue
            kind = click.Path(path_type=Path) if isinstance(default, Path) else type(default)
            command = click.option(
                f"--{name.replace('_', '-')}",
                name,
                type=kind,
                default=None,
                help=f"{help_text} [default: {default}; env RECJOBS_{name.upper()}]",
            )(command)
        return command

    return decorate


def build_settings(values: dict):
    return settings_module.from_env(**{k: v for k, v in values.items() if k in settings_module.setting_help()})


def one_line_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RecJobsError as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:
            # a full disk, an unwritable folder, a file that is not a recjobs database, a locked database
            if isinstance(e, (OSError, sqlite3.Error)) or is_database_error(e):
                raise click.ClickException(storage_message(e, kwargs.get("db"))) from None
            raise

    return wrapper


def is_database_error(error: Exception) -> bool:
    """SQLAlchemy's wrapper of a driver error; only imported when a command used SQLAlchemy (the
    cold-start command does not: its import is most of that command's time)."""
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_errors is not None and isinstance(error, sqlalchemy_errors.DBAPIError)


def echo_result(result, as_json: bool):
    data = dataclasses.asdict(result)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log detail (DEBUG).")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
def cli(verbose, quiet):
    """Batch movie recommendations: implicit ALS on MovieLens, published to SQLite."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def job_docstring(module: str, function: str) -> str:
    """A job's docstring, read from its source without importing it (imports cost every command)."""
    import ast

    tree = ast.parse((Path(__file__).parent / f"{module.replace('.', '/')}.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    return ast.get_docstring(node) or ""


class JobCommand(click.Command):
    """A step command whose help is its job function's docstring, read when shown."""

    def __init__(self, *args, job: tuple[str, str], **kwargs):
        self.job = job
        super().__init__(*args, **kwargs)

    @property
    def help(self) -> str:
        return job_docstring(*self.job)

    @help.setter
    def help(self, _value) -> None:
        pass


@cli.command(cls=JobCommand, job=("pipeline", "run"))
@settings_options()
@click.option("--run-id", default=None, help="Id of the new run [default: the UTC time].")
@click.option("--full", is_flag=True, help="Make it a full night (as --full-evaluation true).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def run(run_id, full, as_json, **values):
    from .storage.runs import RUN_STEPS, lower_priority

    settings = build_settings(values)
    if full:
        settings = settings.replace(full_evaluation=True)
    lower_priority(settings)  # a batch process; before numpy's import, so its threads inherit it
    from .pipeline import run as run_pipeline

    result = run_pipeline(settings, run_id)
    if as_json:
        return echo_result(result, True)
    e, p = result.evaluate, result.precompute
    click.echo(f"run {result.run_id}: {p.status} ({p.reason}) in {result.seconds:.1f}s")
    night = "a full night" if e.full_evaluation else "a usual night (the reference recipe on full nights)"
    click.echo(f"  {e.n_users_evaluated} test users, {night}; Recall@10 and NDCG@10 with 95% bootstrap intervals:")
    baselines = (("reference", "reference_"),) if e.full_evaluation else ()
    baselines += (("popularity", "popularity_"), ("recent", "recent_popularity_"))
    for label, prefix in (("model", ""), *baselines):
        (r, (r_lo, r_hi)), (n, (n_lo, n_hi)) = (
            (getattr(e, f"{prefix}{m}"), getattr(e, f"{prefix}{m}_ci")) for m in ("recall_at_10", "ndcg_at_10")
        )
        click.echo(f"  {label:<10} {r:.4f} [{r_lo:.4f}, {r_hi:.4f}]  {n:.4f} [{n_lo:.4f}, {n_hi:.4f}]")
    click.echo(f"  report     {e.report_path}")
    for step in RUN_STEPS:
        click.echo(f"  {step:<10} {getattr(result, step).seconds:7.2f}s")
    click.echo(f"  {p.n_recommendations} recommendations for {p.n_users} users in {p.db_path}")


# step command -> (module, job function); each command's help is its job's docstring
STEP_JOBS = {
    "load": ("jobs.load", "load"),
    "split": ("jobs.split", "split"),
    "train": ("jobs.train", "train"),
    "evaluate": ("jobs.evaluate", "evaluate"),
    "precompute": ("jobs.precompute", "precompute"),
    "evaluate-cold-start": ("jobs.cold_start_eval", "evaluate_cold_start"),
}


def step_command(name: str, module: str, function: str):
    starts_a_run = name == "load"

    @cli.command(name=name, cls=JobCommand, job=(module, function))
    @settings_options()
    @click.option(
        "--run-id",
        default=None,
        help="The run to work on [default: " + ("a new id from the UTC time]" if starts_a_run else "the newest run]"),
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @one_line_errors
    def command(run_id, as_json, **values):
        from .storage import runs

        settings = build_settings(values)
        if run_id is None:
            run_id = runs.new_run_id() if starts_a_run else runs.latest_id(settings)
            if run_id is None:
                raise RecJobsError(f"no run in {settings.db}; run `recjobs load` first")
        runs.lower_priority(settings)  # before the job's imports: threads started later inherit it
        job = getattr(importlib.import_module(f"recjobs.{module}"), function)
        with runs.run_lock(settings, run_id), runs.failure_recorded(settings, run_id, function):
            result = job(settings, run_id)
        echo_result(result, as_json)

    return command


for _name, (_module, _function) in STEP_JOBS.items():
    step_command(_name, _module, _function)


@cli.command("score-shard", cls=JobCommand, job=("jobs.score_shard", "score_shard"))
@settings_options()
@click.option("--shard", type=int, required=True, help="Which user range: 0 to score_shards - 1.")
@click.option("--run-id", default=None, help="The run to work on [default: the newest run].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def score_shard_command(shard, run_id, as_json, **values):
    from .jobs.score_shard import score_shard
    from .storage import runs

    settings = build_settings(values)
    run_id = run_id or runs.latest_id(settings)
    if run_id is None:
        raise RecJobsError(f"no run in {settings.db}; run `recjobs load` first")
    runs.lower_priority(settings)
    # no run lock: shards of one run are scored side by side; they write only their staging files
    with runs.failure_recorded(settings, run_id, "score_shard"):
        echo_result(score_shard(settings, run_id, shard), as_json)


@cli.command()
@settings_options(settings_module.PATH_SETTINGS)
@click.option("--to", "to_run_id", default=None, help="Run to serve [default: the previous published run].")
@one_line_errors
def rollback(to_run_id, **values):
    """Serve an earlier published run again (the last few are kept)."""
    from .storage.publish import rollback as do_rollback

    result = do_rollback(build_settings(values), to_run_id)
    click.echo(f"now serving {result.to_run_id} (was {result.from_run_id})")


@cli.command()
@settings_options(["db"])
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@one_line_errors
def status(as_json, **values):
    """Show the published run: its id, when it was published, its metrics and counts."""
    from .storage.publish import published_run

    run = published_run(build_settings(values))
    if as_json:
        return click.echo(json.dumps(run, indent=2, default=str))
    click.echo(
        f"published run {run['run_id']} (served since {run['served_since']}): {run['n_recommendations']} "
        f"recommendations for {run['n_users']} users, {run['n_items']} movies; "
        f"Recall@10 {run['recall_at_10']:.4f}, NDCG@10 {run['ndcg_at_10']:.4f} "
        f"(popularity {run['popularity_recall_at_10']:.4f})"
    )
    blend = json.loads(run["params_json"]).get("blend")
    if blend:
        click.echo(
            f"blend: trend_weight {blend['trend_weight']:g}, trend_days {blend['trend_days']:g}, blend_weight "
            f"{blend['blend_weight']:g}, sequence_weight {blend['sequence_weight']:g} ({blend['source']}); "
            f"gated on {run['gate_protocol']}"
        )
    if run["n_refreshes"]:
        click.echo(
            f"refreshed {run['n_refreshes']} times since the publish, the last at {run['last_refreshed_at']}; "
            f"{run['n_refreshed_users']} users' lists remade"
        )
    if run["rules_json"]:
        rules = json.loads(run["rules_json"])
        click.echo(f"rules in force: {rules.get('file', '?')} (sha256 {str(rules.get('sha256', '?'))[:12]})")


@cli.command("fetch-data")
@settings_options(["data_dir"])
@click.option("--url", default=None, help="Where to download ml-latest-small.zip from [default: GroupLens].")
@click.option(
    "--from",
    "source_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Copy from a local ml-latest-small folder instead of downloading.",
)
@one_line_errors
def fetch_data(url, source_dir, **values):
    """Download MovieLens ml-latest-small into --data-dir and check its SHA-256 sums."""
    from .jobs.fetch import ML_LATEST_SMALL_URL
    from .jobs.fetch import fetch_data as do_fetch

    settings = build_settings(values)
    result = do_fetch(settings.data_dir, url or ML_LATEST_SMALL_URL, source_dir)
    click.echo(f"{len(result.files)} checked files in {result.data_dir} (from {result.source})")


@cli.command()
@click.option("--users", type=int, required=True, help="Users (each rates at least 20 movies).")
@click.option("--movies", type=int, required=True, help="Movies in the catalogue.")
@click.option("--ratings", type=int, required=True, help="Ratings in all.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed: the same seed, the same files.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Folder to write the CSVs to.")
@click.option(
    "--hits",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of the series that are hits, rated mostly in the weeks after their release (0: no time dynamics).",
)
@click.option("--days", type=int, default=None, help="Length of the timeline from 1996-01-01 [default: to 2023-10-01].")
@one_line_errors
def synth(users, movies, ratings, seed, out_dir, hits, days):
    """Write a synthetic MovieLens-layout data set of any size (long tails, tastes, sessions, hits)."""
    from .jobs.synth import FULL_TIMELINE_DAYS
    from .jobs.synth import synth as do_synth

    result = do_synth(users, movies, ratings, seed, out_dir, hits, days or FULL_TIMELINE_DAYS)
    click.echo(
        f"{result.n_ratings} ratings of {result.n_users} users on {result.n_movies} movies "
        f"({result.n_tags} tags) in {result.out_dir} in {result.seconds:.1f}s"
    )


@cli.command(cls=JobCommand, job=("jobs.refresh", "refresh"))
@settings_options(["data_dir", "db", "artifacts", "rules"])
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def refresh(as_json, **values):
    from .jobs.refresh import refresh as do_refresh

    echo_result(do_refresh(build_settings(values)), as_json)


@cli.command("cold-start")
@settings_options(["db", "artifacts"])
@click.option(
    "--liked",
    required=True,
    help="Comma-separated MovieLens ids of movies the new user likes, e.g. 296,318,593 (1-100 ids).",
)
@click.option("--k", "k", default="10", show_default=True, help="How many movies to recommend (1-100).")
@click.option(
    "--user-id", default=None, help="The asking user's id, if they have one: the movies they hid are left out."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def cold_start_command(liked, k, user_id, as_json, **values):
    """Recommend movies to a new user from a few liked ones, with the published model (no retraining)."""
    from .jobs.cold_start import check_k, check_user_id, cold_start, parse_liked

    liked_ids, k = parse_liked(liked), check_k(k)  # bad input fails before anything is opened
    user_id = check_user_id(user_id)
    result = cold_start(build_settings(values), liked_ids, k, user_id)
    if as_json:
        return echo_result(result, True)
    click.echo(
        f"request {result.request_id}: {len(result.recommendations)} movies by {result.method} "
        f"from run {result.run_id} in {result.seconds * 1000:.1f} ms"
    )
    if result.unknown_ids:
        click.echo(f"  not known to the model (ignored): {', '.join(map(str, result.unknown_ids))}")
    for rank, movie in enumerate(result.recommendations, start=1):
        click.echo(f"  {rank:>3}. {movie.movie_id:>7}  {movie.score:9.4f}  {movie.title or '(no title)'}")


@cli.command()
@settings_options(["db", "artifacts", "serve_workers"])
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--reporting",
    is_flag=True,
    help="Analysts' profile: arbitrary read-only SQL (time-limited), facets, the metrics dashboard.",
)
@one_line_errors
def serve(host, port, reporting, **values):
    """Serve the published database read-only with datasette (JSON API, reports, dashboard)."""
    from .serving.serve import serve as do_serve

    do_serve(build_settings(values), host=host, port=port, reporting=reporting)


@cli.command()
@settings_options()
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for tune.json and tune.md [default: <artifacts>/tune-<UTC time>].",
)
@click.option(
    "--passes", type=click.IntRange(1, 10), default=2, show_default=True, help="Rounds of one-setting-at-a-time search."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def tune(output, passes, as_json, **values):
    """Search model settings on the validation items only (fit on the train part); the test items are not read."""
    from .jobs.tune import tune as do_tune

    echo_result(do_tune(build_settings(values), output, passes=passes), as_json)


@cli.command(cls=JobCommand, job=("jobs.backtest", "backtest"))
@settings_options()
@click.option(
    "--nights",
    type=click.IntRange(1, 1000),
    default=48,
    show_default=True,
    help="Nights (02:30 UTC) to replay, spread over the --period of the ratings' timeline.",
)
@click.option(
    "--period",
    default="0.75,1",
    show_default=True,
    help="The part of the timeline the nights are spread over, as shares of the ratings made: FROM,TO.",
)
@click.option("--no-peers", is_flag=True, help="Leave out the peers (EASE, item-kNN): quicker.")
@click.option(
    "--window-days",
    type=click.FloatRange(1, 365),
    default=30.0,
    show_default=True,
    help="Each night is scored on the positives of the following days.",
)
@click.option(
    "--recent-days",
    type=click.FloatRange(1, 3650),
    default=30.0,
    show_default=True,
    help="The recent-popularity baseline counts the positives of the days before each night.",
)
@click.option(
    "--refresh-days",
    type=click.FloatRange(0, 365),
    default=1.0,
    show_default=True,
    help="Also replay a refresh between nights: each user's ratings of these days after the night, "
    "the earlier half folded in, scored on the later half (0: off).",
)
@click.option(
    "--new-movies-days",
    type=click.FloatRange(0, 3650),
    default=60.0,
    show_default=True,
    help="Also replay the new-movies protocol: the movies first rated in these days before each night held "
    "out, ranked by content scores against genre popularity (0: off).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for metrics.json and report.md [default: <artifacts>/backtest-<UTC time>].",
)
@click.option("--run-id", default=None, help="Also store the figures in this run's run_metrics (segment backtest).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@one_line_errors
def backtest(
    nights, period, no_peers, window_days, recent_days, refresh_days, new_movies_days, output, run_id, as_json, **values
):
    from .jobs.backtest import backtest as do_backtest

    try:
        shares = tuple(float(x) for x in period.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 2:
        raise click.BadParameter(f"{period!r}; expected two shares FROM,TO such as 0.3,0.9", param_hint="--period")
    result = do_backtest(
        build_settings(values),
        output,
        nights=nights,
        window_days=window_days,
        recent_days=recent_days,
        run_id=run_id,
        period=shares,
        peers_too=not no_peers,
        refresh_days=refresh_days,
        new_movies_days=new_movies_days,
    )
    if as_json:
        return echo_result(result, True)
    click.echo(
        f"{result.n_user_nights} user-nights over {len(result.cutoffs)} nights "
        f"({result.cutoffs[0]} to {result.cutoffs[-1]}); Recall@10 [95% CI]:"
    )
    for name, value in result.recall_at_10.items():
        low, high = result.recall_at_10_ci[name]
        gain = result.recall_gain.get(name)
        paired = f"  gain of the method {gain[0]:+.4f} [{gain[1]:+.4f}, {gain[2]:+.4f}]" if gain else ""
        ndcg = result.ndcg_at_10[name]
        click.echo(f"  {name:<18} {value:.4f} [{low:.4f}, {high:.4f}]  NDCG@10 {ndcg:.4f}{paired}")
    click.echo(f"  report {Path(result.output_dir) / 'report.md'}")


def main():
    cli(prog_name="recjobs")


if __name__ == "__main__":
    main()
