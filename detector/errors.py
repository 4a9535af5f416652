"""The two kinds of failure a user can see, mapped to the contract's exit codes.

Anything the user can fix by changing their input (arguments, config, model bundle,
data folder) is a `UsageError` (exit 2, one line, no traceback). Anything that goes wrong
while running with good input is a `RuntimeFailure` (exit 1).
"""


class UsageError(Exception):
    """Bad usage, invalid config, invalid model bundle or bad input data: exit 2."""

    exit_code = 2


class RuntimeFailure(Exception):
    """A failure at run time with valid input: exit 1."""

    exit_code = 1


def need_train_extra(command: str) -> None:
    """Commands that need TensorFlow say so in one line when it is missing (exit 2)."""
    import importlib.util

    missing = [m for m in ("tensorflow", "keras", "tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"`ad-detector {command}` needs the training extra ({', '.join(missing)} missing): pip install 'ad-detector[train]'")
