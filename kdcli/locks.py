"""File locks: one kdcli at a time writes in a run folder (runs.claim_folder) or a cache (cache.write_lock).

    lock_or_refuse(fd, busy)   # an exclusive lock on the open file fd, or KdcliError(busy)
    is_locked(lock_path)       # whether a process holds that lock now ("in use", "being written")
"""

import fcntl
import functools
import os
import warnings

from kdcli import KdcliError


def lock_or_refuse(fd: int, busy: str):
    """Take an exclusive flock on the open file `fd`, or raise KdcliError(busy) while another process holds
    it. The kernel drops the lock when its holder dies, however it dies; on NFS, a flock on a regular file
    is seen by every client. Where the filesystem cannot lock at all, a warning says so and work goes on."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise KdcliError(busy) from None
    except OSError as e:  # e.g. ENOLCK, or ENOSYS on a filesystem without locks
        warn_cannot_lock(e.strerror or str(e))


def is_locked(lock_path) -> bool:
    """Whether a process holds the lock lock_or_refuse takes on the file `lock_path` now."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with a writer's exclusive lock only
        return False
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without locks: nothing can be told
        return False
    finally:
        os.close(fd)


@functools.cache  # once per process, not once per folder of a sweep
def warn_cannot_lock(reason: str):
    warnings.warn(f"cannot lock files on this filesystem ({reason}): a second kdcli writing into the same --out would not be refused", stacklevel=2)
