"""
### movie_recs_cold_start

On demand: recommend `k` movies to a new user from the movies they like (`liked`, MovieLens
movie ids), with the published model and no retraining. The request and the answer are
stored in `cold_start_requests` and `cold_start_recommendations`; the task's XCom holds the
request id, the method and the recommended movies.

Trigger it with params, e.g. `{"liked": [296, 318, 593], "k": 10}`. Bad params fail the task
at once (no retry); a missing published run or a busy database is retried.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from movie_recs_common import configured_settings


@dag(
    dag_id="movie_recs_cold_start",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "execution_timeout": dt.timedelta(minutes=10)},
    params={
        "liked": Param(
            type="array",
            items={"type": "integer", "minimum": 1},
            minItems=1,
            description="MovieLens ids of movies the new user likes, e.g. [296, 318, 593].",
        ),
        "k": Param(10, type="integer", minimum=1, description="How many movies to recommend."),
    },
    tags=["movie-recs", "on-demand"],
    doc_md=__doc__,
)
def movie_recs_cold_start():
    @task(multiple_outputs=False)
    def cold_start() -> dict:
        import dataclasses

        from airflow.sdk.exceptions import AirflowFailException

        from recjobs.errors import ConfigError
        from recjobs.jobs import cold_start as job

        params = get_current_context()["params"]
        try:
            return dataclasses.asdict(job.cold_start(configured_settings(), params["liked"], params["k"]))
        except ConfigError as e:  # bad params: a retry would fail the same way
            raise AirflowFailException(str(e)) from None

    cold_start()


dag = movie_recs_cold_start()

if __name__ == "__main__":
    dag.test()
