"""The frame worker: the newest camera message waits in a one-slot mailbox, one thread
processes it.

The camera callback must never wait for the model (a frame can take seconds on a CPU), and
frames must never queue without bound: so the callback only leaves its message in the slot,
replacing (and counting as dropped) one that was not taken yet, and a thread of its own
takes the newest message whenever it is free.
"""

import threading
import time


class FrameWorker:
    """Runs ``process(msg, received)`` on the newest offered message, in a thread of its
    own; an exception goes to ``on_error(exc)`` and the thread carries on."""

    def __init__(self, process, on_error, name="sam_ros_worker"):
        self.process, self._on_error, self._name = process, on_error, name
        self._slot_cv = threading.Condition()
        self._slot = None  # (msg, receive time) or None
        self._running = False
        self._thread = None

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        with self._slot_cv:
            self._running = True
            self._slot = None
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def offer(self, msg):
        """Leave ``msg`` for the worker; True when it replaced a message not yet taken."""
        with self._slot_cv:
            replaced = self._slot is not None
            self._slot = (msg, time.perf_counter())
            self._slot_cv.notify()
        return replaced

    def stop(self, timeout=30.0):
        """Stop taking messages and wait for the one in hand; False if it did not end in
        ``timeout`` seconds (the thread is then left to finish by itself)."""
        with self._slot_cv:
            self._running = False
            self._slot = None
            self._slot_cv.notify_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=timeout)
        return not thread.is_alive()

    def _run(self):
        while True:
            with self._slot_cv:
                while self._running and self._slot is None:
                    self._slot_cv.wait()
                if not self._running:
                    return
                msg, received = self._slot
                self._slot = None
            try:
                self.process(msg, received)
            except Exception as exc:  # never let the worker die
                self._on_error(exc)
