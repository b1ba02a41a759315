"""The inference workers: each job runs on a thread of its own with the worker's torch thread count, set for that
thread alone (other threads keep theirs, and its OpenMP team ends with it); the lanes' workers share the cores (a job takes the default divided by the lanes busy, and gives a core back at its progress
reports while another lane runs, or while a program renders beside it); an exception in a job reaches the caller."""

from __future__ import annotations

import threading

import pytest
import torch

from studio.worker import THREADS_ENV, InferenceWorker, taking_a_core


def test_a_job_runs_on_a_thread_of_its_own_with_the_workers_threads():
    worker = InferenceWorker(threads=1, name="test-fixed")
    try:
        name, threads = worker.run(lambda: (threading.current_thread().name, torch.get_num_threads()))
        assert name == "test-fixed-job" and threads == 1
        assert worker.run(lambda: threading.current_thread()) is not worker.run(lambda: threading.current_thread())
        with pytest.raises(ValueError, match="bad job"):
            worker.run(lambda: (_ for _ in ()).throw(ValueError("bad job")))
        assert worker.run(lambda: 7) == 7  # the worker lives on after a failed job
    finally:
        worker.close()


def _fresh_thread_threads() -> int:
    """The torch threads a thread started now has after its first parallel op."""
    out: list[int] = []
    t = threading.Thread(target=lambda: (torch.zeros(1 << 16).exp_(), out.append(torch.get_num_threads())))
    t.start(), t.join()
    return out[0]


def test_a_jobs_thread_count_stays_in_its_thread():
    """torch.set_num_threads would become every later thread's count (a server thread running one big op would
    then keep a team of that size, and the decoder's team would stop spinning): the job's count is its own."""
    before = _fresh_thread_threads()
    worker = InferenceWorker(threads=before + 1, name="test-own")
    try:
        assert worker.run(torch.get_num_threads) == before + 1
    finally:
        worker.close()
    assert _fresh_thread_threads() == before


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


def test_a_program_beside_generation_takes_a_core_while_it_runs(monkeypatch):
    """FluidSynth rendering an edit's kept parts (`taking_a_core`): the job's next progress report gives a core to
    it, the first report after it ends takes the core back."""
    monkeypatch.setenv(THREADS_ENV, "2")
    worker = InferenceWorker(name="test-beside")
    seen = []

    def job() -> None:
        seen.append(torch.get_num_threads())
        with taking_a_core():
            worker.rebalance()
            seen.append(torch.get_num_threads())
        worker.rebalance()
        seen.append(torch.get_num_threads())

    try:
        worker.run(job)
    finally:
        worker.close()
    assert seen == [2, 1, 2]
