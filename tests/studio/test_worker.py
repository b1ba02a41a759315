"""The inference workers: jobs run on the worker's own thread with its torch thread count; the lanes' workers
share the cores (a job takes the default divided by the lanes busy, and gives a core back at its progress
reports while another lane runs); an exception in a job reaches the caller."""

from __future__ import annotations

import threading

import pytest
import torch

from studio.worker import THREADS_ENV, InferenceWorker


def test_a_job_runs_on_the_workers_thread_with_its_threads():
    worker = InferenceWorker(threads=1, name="test-fixed")
    try:
        name, threads = worker.run(lambda: (threading.current_thread().name, torch.get_num_threads()))
        assert name == "test-fixed" and threads == 1
        with pytest.raises(ValueError, match="bad job"):
            worker.run(lambda: (_ for _ in ()).throw(ValueError("bad job")))
        assert worker.run(lambda: 7) == 7  # the worker lives on after a failed job
    finally:
        worker.close()


def test_the_lanes_share_the_cores_while_both_are_busy(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    long, short = InferenceWorker(name="test-long"), InferenceWorker(name="test-short")
    started, short_started, rebalanced, short_done = (threading.Event() for _ in range(4))
    seen: dict[str, int] = {}

    def long_job() -> None:
        seen["long alone"] = torch.get_num_threads()
        started.set()
        short_started.wait(10)  # the short lane runs a job meanwhile
        long.rebalance()  # a progress report
        seen["long beside short"] = torch.get_num_threads()
        rebalanced.set()
        short_done.wait(10)
        long.rebalance()
        seen["long alone again"] = torch.get_num_threads()

    def short_job() -> None:
        seen["short"] = torch.get_num_threads()
        short_started.set()
        rebalanced.wait(10)

    try:
        future = long.submit(long_job)
        assert started.wait(10)
        short.run(short_job)
        short_done.set()
        future.result(10)
    finally:
        long.close(), short.close()
    assert seen == {"long alone": 2, "short": 1, "long beside short": 1, "long alone again": 2}


def test_a_one_variant_job_decodes_with_one_thread(monkeypatch):
    """An edit (one variant) decodes a token at a time: the runner limits its job to SINGLE_VARIANT_THREADS;
    the next job gets the share again."""
    from studio.runner import SINGLE_VARIANT_THREADS

    monkeypatch.setenv(THREADS_ENV, "2")
    worker = InferenceWorker(name="test-limit")
    try:
        def limited() -> int:
            worker.rebalance(SINGLE_VARIANT_THREADS)
            worker.rebalance()  # a progress report keeps the limit
            return torch.get_num_threads()

        assert worker.run(limited) == SINGLE_VARIANT_THREADS == 1
        assert worker.run(torch.get_num_threads) == 2
    finally:
        worker.close()
