"""Logging, progress bars, argument checks, atomic writes and settings."""

from ._checks import _check_option, _check_path, _ensure_finite, check_random_state, resolve_device
from ._config import KNOWN_CONFIG, get_config, get_data_dir
from ._fileio import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from ._logging import logger, set_log_level, use_log_level, verbose, warn
from ._progress import ProgressBar
from ._threads import available_cpus, set_torch_threads

__all__ = [
    "KNOWN_CONFIG",
    "ProgressBar",
    "_check_option",
    "_check_path",
    "_ensure_finite",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "available_cpus",
    "check_random_state",
    "get_config",
    "get_data_dir",
    "logger",
    "resolve_device",
    "set_log_level",
    "set_torch_threads",
    "use_log_level",
    "verbose",
    "warn",
]
