"""The library's errors for "what you gave or set up is wrong", all under one base class.

`BertFastError` means the message names the problem and what to do about it: the CLI prints it as one line (with
`-v`, the traceback too). Any other exception out of the library is a bug and keeps its traceback. Each subclass
also derives from the built-in error a caller would expect (ValueError for a bad value, OSError for a failed
write), so code that catches those keeps working.
"""

from __future__ import annotations


class BertFastError(Exception):
    """Something the user gave or set up is wrong; the message says what."""


class InputError(BertFastError, ValueError):
    """A batch the model cannot encode as given."""


class ConfigError(BertFastError, ValueError):
    """A model configuration that cannot describe a working encoder."""


class SettingError(BertFastError, ValueError):
    """A run setting (flag, config file, override) that is unknown, of the wrong type, or does not fit the
    others."""


class ConfigFileError(SettingError):
    """A run's config file or `--set` override that names an unknown setting or holds a value of the wrong type."""


class CheckpointError(BertFastError, RuntimeError):
    """A checkpoint folder that is missing files, unreadable, or does not fit the model."""


class CheckpointWriteError(BertFastError, OSError):
    """A checkpoint that could not be written (disk full, permissions); the previous ones are intact."""


class TokenizerError(BertFastError, ValueError):
    """A tokenizer folder or vocabulary that cannot be used."""


class CorpusError(BertFastError, ValueError):
    """A pretraining corpus that is missing, empty or unreadable."""


class DataError(BertFastError, ValueError):
    """Data files (example stores, fine-tuning splits) that cannot be used as given."""


class ResumeError(BertFastError, ValueError):
    """A run that cannot continue from its checkpoint with the settings given."""


class RunFolderError(BertFastError, FileExistsError):
    """An output folder that already holds another run's results (nothing was overwritten)."""


class DeviceError(BertFastError, RuntimeError):
    """A device or implementation this machine cannot provide (CUDA without a GPU, kernels on the CPU)."""


class MissingDependencyError(BertFastError, ImportError):
    """An optional package a command needs is not installed; the message gives the install command."""


class RunInterrupted(BertFastError):
    """A run stopped by Ctrl-C; the message says which checkpoint is the last and how to continue."""
