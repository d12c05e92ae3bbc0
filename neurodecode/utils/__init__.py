"""Logging, progress bars, argument checks, atomic writes and settings."""

from ._checks import check_option, check_path, check_random_state, ensure_finite, resolve_device
from ._config import KNOWN_CONFIG, get_config, get_config_dir, get_data_dir
from ._docs import docdict, fill_doc
from ._fileio import (
                      atomic_path,
                      atomic_write_bytes,
                      atomic_write_json,
                      atomic_write_text,
                      json_float,
                      to_jsonable,
)
from ._logging import logger, set_log_level, use_log_level, verbose, warn
from ._progress import ProgressBar, progress_disabled
from ._ragged import RaggedData, take_rows
from ._threads import available_cpus, set_torch_threads

__all__ = [
    "KNOWN_CONFIG",
    "ProgressBar",
    "RaggedData",
    "check_option",
    "check_path",
    "ensure_finite",
    "fill_doc",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "available_cpus",
    "check_random_state",
    "docdict",
    "get_config",
    "get_config_dir",
    "get_data_dir",
    "json_float",
    "logger",
    "progress_disabled",
    "resolve_device",
    "set_log_level",
    "set_torch_threads",
    "take_rows",
    "to_jsonable",
    "use_log_level",
    "verbose",
    "warn",
]
