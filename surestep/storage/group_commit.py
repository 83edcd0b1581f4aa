"""Group commit: the checkpoints of several runs of one process share one transaction,
and so one fsync (and on PostgreSQL one statement and one round trip).

A thread that has a checkpoint to write and finds no thread committing becomes the
*leader* and commits its write at once (no timer, no wait: a lone run pays nothing
for this). Threads that arrive while a commit is in progress queue their writes and
wait. When the commit ends, the leader hands the lead to the first thread that queued
meanwhile, which commits every queued write in one transaction and then wakes each of
their threads with the outcome of its own write. So under load, batches grow by
themselves to the number of runs that became ready during one commit.

In a batch, each write runs inside its own savepoint: a write that fails (a lease lost
to another worker, a constraint) is rolled back alone and its thread gets the error,
while its neighbours' writes commit. An error that ends the whole transaction (a full
disk, the file locked past the busy timeout) reaches every thread of the batch whose
write was not committed, and each retries on its own.

What a batch is written with is the store's: SQLite runs each write in its savepoint
(``GroupCommit.of_writes``); PostgreSQL writes the whole batch in one statement, and
falls back to one transaction per checkpoint when that statement fails as a whole
(``surestep.storage.postgres_steps``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from surestep.errors import StorageError
from surestep.storage.rows import Cursor

#: A write of one run, given the transaction's cursor.
Write = Callable[[Cursor], None]

#: Runs a function in one committed write transaction (rolled back if it raises).
Committer = Callable[[Write], None]

#: What a thread submits: a write (SQLite) or the values of one (PostgreSQL).
Item = TypeVar("Item")

#: Commits one item alone; raises what its write raised.
CommitOne = Callable[[Item], None]

#: Commits several items together, noting in ``errors`` (same order) the error of each
#: item that was not committed while the others were; raises if none was committed.
#: Returns how many transactions it committed.
CommitMany = Callable[[Sequence[Item], list[BaseException | None]], int]


class _Entry(Generic[Item]):
    """A queued item, and the lock its thread sleeps on until it is woken."""

    __slots__ = ("done", "error", "item", "sleep")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.sleep = threading.Lock()
        self.sleep.acquire()  # released by whoever wakes the thread
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[Item]):
    """Commits items, batching those that arrive while a commit is in progress.

    ``commit_one`` writes a lone item (a thread that found no commit in progress, or a
    batch of one); ``commit_many`` writes a batch of two or more."""

    def __init__(self, commit_one: CommitOne[Item], commit_many: CommitMany[Item]) -> None:
        self._commit_one = commit_one
        self._commit_many = commit_many
        self._lock = threading.Lock()
        self._queue: list[_Entry[Item]] = []  # never holds anything while nobody leads
        self._leading = False
        #: How many transactions committed, and how many items they held (writes /
        #: commits is the mean batch size).
        self.commits = 0
        self.writes = 0

    @staticmethod
    def of_writes(commit: Committer, in_transaction: Callable[[], bool]) -> GroupCommit[Write]:
        """A group commit of writes, each batch one transaction with a savepoint per
        write (SQLite's)."""

        def many(writes: Sequence[Write], errors: list[BaseException | None]) -> int:
            commit(lambda cur: _in_savepoints(cur, writes, errors, in_transaction))
            return 1

        return GroupCommit(commit, many)

    def submit(self, item: Item) -> None:
        """Commit ``item``; raise what its write raised."""
        with self._lock:
            if not self._leading:
                self._leading = True
                entry = None
            else:
                entry = _Entry(item)
                self._queue.append(entry)
        if entry is None:
            try:
                self._commit_one(item)
                self.commits += 1
                self.writes += 1
            finally:
                self._hand_over()
            return
        entry.sleep.acquire()
        if not entry.done:  # handed the lead
            self._lead()
        if entry.error is not None:
            raise entry.error

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self.commits += self._commit_batch(batch)
            self.writes += len(batch)
        except BaseException as exc:  # the transaction failed as a whole
            for entry in batch:
                if entry.error is None:
                    entry.error = _own_copy(exc)
        finally:
            self._hand_over()
            for entry in batch:
                entry.done = True
                if entry.sleep.locked():
                    entry.sleep.release()

    def _commit_batch(self, batch: list[_Entry[Item]]) -> int:
        if len(batch) == 1:  # an error rolls back the transaction: nothing else is in it
            self._commit_one(batch[0].item)
            return 1
        errors: list[BaseException | None] = [None] * len(batch)
        try:
            return self._commit_many([entry.item for entry in batch], errors)
        finally:  # the errors noted before a failure of the whole are each entry's own
            for entry, error in zip(batch, errors, strict=True):
                entry.error = error

    def _hand_over(self) -> None:
        """Give the lead to the first thread that queued during the commit, if any."""
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
        if successor is not None:
            successor.sleep.release()


def _in_savepoints(
    cur: Cursor,
    writes: Sequence[Write],
    errors: list[BaseException | None],
    in_transaction: Callable[[], bool],
) -> None:
    """Run each write inside a savepoint: released when the write succeeded, rolled back
    (its error noted for its own thread) when it failed."""
    for i, write in enumerate(writes):
        cur.execute("SAVEPOINT surestep_write")
        try:
            write(cur)
        except Exception as exc:
            if not in_transaction():
                raise  # the error ended the transaction: the whole batch fails
            cur.execute("ROLLBACK TO surestep_write")
            errors[i] = exc
        cur.execute("RELEASE surestep_write")


def _own_copy(exc: BaseException) -> BaseException:
    """The batch's error for one thread to raise: a storage error is copied, so that
    threads raising it at once do not share (and extend) one traceback."""
    if isinstance(exc, StorageError):
        return StorageError(str(exc), transient=exc.transient)
    return exc
