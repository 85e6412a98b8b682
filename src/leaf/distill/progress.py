"""Training logs as numbers on one line (``step 10/63  loss 0.0256  grad_norm 1.31 ...``)
instead of the dict of formatted strings ``transformers`` prints, with the same progress bar."""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

_SHORT = {"learning_rate": "lr", "train_runtime": "runtime_s",
          "train_samples_per_second": "samples/s", "train_steps_per_second": "steps/s"}


def format_logs(logs: dict[str, Any], step: int, max_steps: int) -> str:
    """``step 10/63  loss 0.02557  lr 8.654e-05 ...``: numbers at 4 significant digits."""
    parts = [f"step {step}/{max_steps}"]
    for key, value in logs.items():
        if key == "total_flos":
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{_SHORT.get(key, key)} {shown}")
    return "  ".join(parts)


class NumberProgressCallback(ProgressCallback):
    """transformers' progress bar; each log written as one line of numbers above it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_logs(logs, state.global_step, state.max_steps))


class NumberPrinterCallback(PrinterCallback):
    """With ``disable_tqdm``: the logs printed as one line of numbers each."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(format_logs(logs, state.global_step, state.max_steps))


def plain_logs(trainer) -> None:
    """Swap the trainer's log printers for the ones above (the bar stays as it is)."""
    for old, new in ((ProgressCallback, NumberProgressCallback),
                     (PrinterCallback, NumberPrinterCallback)):
        if trainer.pop_callback(old) is not None:
            trainer.add_callback(new)
