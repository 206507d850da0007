"""Airflow's hostname_callable for the cluster test's Celery workers (tests/test_airflow_cluster.py).

Both workers run on this machine, so the machine's name alone could not tell their task
instances apart: each worker's RECJOBS_TEST_WORKER is added to it.
"""

import os
import socket


def worker_hostname() -> str:
    return f"{socket.getfqdn()}/{os.environ.get('RECJOBS_TEST_WORKER', 'unknown')}"
