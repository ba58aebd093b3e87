"""Test-wide settings: offline, no analytics, deterministic and small."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

# Tests run tiny models: a second thread buys nothing there and, on a shared 2-core machine,
# makes every small forward wait for a descheduled thread.
torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread_again():
    """Stages run in-process pin ``backbone.threads`` (default 2) for the rest of the process; the
    next test gets one thread again, so that two test workers do not share a core with three threads."""
    yield
    if torch.get_num_threads() != 1:
        from kmx_eval.device import pin_threads

        pin_threads(1)
