"""Random identifiers: unique over many draws, and a forked child never repeats its parent's."""

from __future__ import annotations

import os

from bridge.sip.ids import random_hex
from bridge.sip.transaction import new_branch


def test_identifiers_are_hex_of_the_asked_length_and_do_not_repeat() -> None:
    drawn = [random_hex(5) for _ in range(5000)]  # several refills of the pool
    assert all(len(value) == 10 and int(value, 16) >= 0 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert new_branch().startswith("z9hG4bK")


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    random_hex(4)  # the pool is filled and partly used before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_hex(16)
