"""The filter between a stage child's output and the parent's log (Airflow's task log)."""

from __future__ import annotations

from pipeline.orchestration.child_output import ChildOutputFilter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_records_always_pass_and_bar_frames_pass_once_per_interval() -> None:
    clock = FakeClock()
    output = ChildOutputFilter(progress_every_s=30, clock=clock)
    record = "18:15:54 INFO mmsr_model.training: epoch 1: {'train_loss': 8.46, 'val_ndcg_at_10': 0.03}"
    frames = [
        "train mmsr:   0%|          | 0/20 [00:00<?, ?epoch/s]\n",
        "epoch 1:  40%|████      | 37/92 [00:05<00:07,  7.1batch/s, loss=8.1]\n",
        "\x1b[Aevaluate: 100%|██████████| 3/3 [00:00<00:00, 9.8batch/s]\x1b[A\n",
    ]
    assert output.relay(frames[0]) == frames[0].strip()  # the first frame shows the stage started
    clock.now = 10
    assert [output.relay(f) for f in frames[1:]] == [None, None]
    assert output.relay(record + "\n") == record
    clock.now = 41
    assert output.relay(frames[2]) == "evaluate: 100%|██████████| 3/3 [00:00<00:00, 9.8batch/s]"
    assert output.relay(frames[1]) is None


def test_cursor_escapes_and_blank_redraws_are_dropped_and_text_is_kept() -> None:
    output = ChildOutputFilter()
    assert output.relay("\x1b[A\n") is None
    assert output.relay("        \n") is None
    assert output.relay("Traceback (most recent call last):\n") == "Traceback (most recent call last):"
    assert output.relay("WARNING 42% of items have no image\n") == "WARNING 42% of items have no image"
