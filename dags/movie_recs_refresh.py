"""
### movie_recs_refresh

Between nights: remakes the lists of the users the new files of `incoming/` concern (new
ratings, `hidden*.csv` "not interested"), against the published run, and applies the business
rules (`RECJOBS_RULES`). Each run is one `recjobs refresh`: known users are folded into the
published model with their whole history, new users get the cold-start answer, and the users'
rows are replaced in one transaction (`refreshed_at` says when). A run with nothing new writes
nothing; one that meets a publish skips with one log line, and the next applies the same files.

Runs every minute by default: the setting `refresh_schedule` (`RECJOBS_REFRESH_SCHEDULE`, a cron
expression, read when the DAG file is parsed; a schedule cannot be a run param). Param:
`data_dir`. Lists keep the published run's length (its `k`). Paused when first created, like
every DAG here: unpause it to start.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task

from movie_recs_common import configured_settings, setting_params


@dag(
    dag_id="movie_recs_refresh",
    schedule=configured_settings().refresh_schedule,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=10),
    default_args={"retries": 0, "execution_timeout": dt.timedelta(minutes=10)},  # the next run is the retry
    params=setting_params(("data_dir",)),
    tags=["movie-recs", "refresh"],
    doc_md=__doc__,
)
def movie_recs_refresh():
    @task(multiple_outputs=False)
    def refresh() -> dict:
        import dataclasses

        from airflow.sdk.exceptions import AirflowFailException

        from recjobs.errors import ConfigError, DataError
        from recjobs.jobs.refresh import refresh as do_refresh

        try:
            return dataclasses.asdict(do_refresh(configured_settings(**get_current_context()["params"])))
        except (ConfigError, DataError) as e:  # a bad file or rules: say so, at once
            raise AirflowFailException(str(e)) from None

    refresh()


dag = movie_recs_refresh()

if __name__ == "__main__":
    dag.test()
