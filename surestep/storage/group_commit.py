"""Group commit: the checkpoints of several runs of one process share one transaction,
and so one fsync.

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
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from surestep.errors import StorageError
from surestep.storage.rows import Cursor

#: A write of one run, given the transaction's cursor.
Write = Callable[[Cursor], None]

#: Runs a function in one committed write transaction (rolled back if it raises).
Committer = Callable[[Write], None]


class _Entry:
    """A queued write, and the lock its thread sleeps on until it is woken."""

    __slots__ = ("done", "error", "sleep", "write")

    def __init__(self, write: Write) -> None:
        self.write = write
        self.sleep = threading.Lock()
        self.sleep.acquire()  # released by whoever wakes the thread
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Commits writes, batching those that arrive while a commit is in progress."""

    def __init__(self, commit: Committer, in_transaction: Callable[[], bool]) -> None:
        self._commit = commit
        self._in_transaction = in_transaction
        self._lock = threading.Lock()
        self._queue: list[_Entry] = []  # never holds anything while nobody leads
        self._leading = False
        #: How many transactions committed, and how many writes they held (writes /
        #: commits is the mean batch size).
        self.commits = 0
        self.writes = 0

    def submit(self, write: Write) -> None:
        """Run ``write`` in a committed transaction; raise what it raised."""
        with self._lock:
            if not self._leading:
                self._leading = True
                entry = None
            else:
                entry = _Entry(write)
                self._queue.append(entry)
        if entry is None:
            try:
                self._commit(write)
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
            self._commit(lambda cur: _in_savepoints(cur, batch, self._in_transaction))
            self.commits += 1
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

    def _hand_over(self) -> None:
        """Give the lead to the first thread that queued during the commit, if any."""
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
        if successor is not None:
            successor.sleep.release()


def _in_savepoints(cur: Cursor, batch: list[_Entry], in_transaction: Callable[[], bool]) -> None:
    """Run each write inside a savepoint: released when the write succeeded, rolled back
    (its error kept for its own thread) when it failed."""
    if len(batch) == 1:
        batch[0].write(cur)  # an error rolls back the transaction: nothing else is in it
        return
    for entry in batch:
        cur.execute("SAVEPOINT surestep_write")
        try:
            entry.write(cur)
        except Exception as exc:
            if not in_transaction():
                raise  # the error ended the transaction: the whole batch fails
            cur.execute("ROLLBACK TO surestep_write")
            entry.error = exc
        cur.execute("RELEASE surestep_write")


def _own_copy(exc: BaseException) -> BaseException:
    """The batch's error for one thread to raise: a storage error is copied, so that
    threads raising it at once do not share (and extend) one traceback."""
    if isinstance(exc, StorageError):
        return StorageError(str(exc), transient=exc.transient)
    return exc
