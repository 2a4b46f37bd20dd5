"""``adapters.files.gc_pause``: the cyclic collector is paused for a chunk and restored after, counted across
overlapping pauses, and left as the embedding program set it."""

from __future__ import annotations

import gc
import threading

import pytest

from adapters.files.gc_pause import gc_paused


def test_paused_for_the_block_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a chunk fails")
    assert gc.isenabled()


def test_overlapping_pauses_restore_once_the_last_ends() -> None:
    entered, release = threading.Event(), threading.Event()

    def other_import() -> None:
        with gc_paused():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other_import)
    with gc_paused():
        thread.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other import's chunk is still being applied
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_collector_disabled_by_the_program_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
