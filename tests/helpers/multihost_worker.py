"""``python -m bobjax.main`` as one process of a multi-process test (see multihost.py).

With ``BOBJAX_TEST_KILL_AT_SAVE=N`` in its environment, the process SIGKILLs itself as soon as its checkpoint of
step N is on disk: a host lost mid-stage, at a moment the test knows.
"""

import os
import signal

from absl import app

from bobjax import main
from bobjax.training import loop

_KILL_AT = os.environ.get("BOBJAX_TEST_KILL_AT_SAVE")

if _KILL_AT:
    _save = loop.Checkpoints.save

    def _save_then_die(self, step, *args, **kwargs):
        _save(self, step, *args, **kwargs)
        if step == int(_KILL_AT):
            self._manager.wait_until_finished()
            os.kill(os.getpid(), signal.SIGKILL)

    loop.Checkpoints.save = _save_then_die

if __name__ == "__main__":
    app.run(main.main)
