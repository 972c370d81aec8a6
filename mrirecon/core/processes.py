"""Whether a process of this machine still runs, by its PID: the one test the run folder's
leftovers are judged by (``.NAME.old-PID`` folders, a killed run's matplotlib folder), on POSIX
and on Windows, where ``os.kill(pid, 0)`` is no such test."""

from __future__ import annotations

import functools
import os
import sys


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine; one of another user counts). On Windows
    from ``OpenProcess`` / ``GetExitCodeProcess`` (:func:`_alive_windows`): ``os.kill(pid, 0)``
    there sends CTRL_C_EVENT and never raises ``ProcessLookupError``, so every process counted
    as alive and ``.NAME.old-PID`` folders were never removed."""
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


#: Win32: OpenProcess access right, GetExitCodeProcess' code of a running process, the error of
#: a process that exists but is another user's (any other error: no such process).
PROCESS_QUERY_LIMITED_INFORMATION, STILL_ACTIVE, ERROR_ACCESS_DENIED = 0x1000, 259, 5


@functools.lru_cache(maxsize=1)
def _kernel32():
    """Windows' kernel32 through ctypes, its process calls typed (handles are pointers)."""
    import ctypes

    k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    k.OpenProcess.restype = ctypes.c_void_p
    k.OpenProcess.argtypes = (ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong)
    k.GetExitCodeProcess.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong))
    k.CloseHandle.argtypes = (ctypes.c_void_p,)
    return k


def _alive_windows(pid: int) -> bool:
    """Whether process ``pid`` runs, asked of Windows: a process that opens and has not exited
    (exit code ``STILL_ACTIVE``), or one refused to this user (``ERROR_ACCESS_DENIED``). A
    process whose handle is still open elsewhere but that has exited counts as ended."""
    import ctypes

    if not 0 < pid <= 0xFFFFFFFF:  # a DWORD
        return False
    k = _kernel32()
    handle = k.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return ctypes.get_last_error() == ERROR_ACCESS_DENIED  # type: ignore[attr-defined]
    try:
        code = ctypes.c_ulong()
        if not k.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell: kept
        return code.value == STILL_ACTIVE
    finally:
        k.CloseHandle(handle)
