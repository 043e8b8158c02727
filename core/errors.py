"""Errors a user can cause. Their messages are written for users: the CLI prints them on one
line and exits with status 2; the app shows them with ``st.error``."""


class UserError(ValueError):
    """Bad input from a user: a value, a name, a file. Never a bug in our code."""


class DataUnavailableError(UserError):
    """A data set's files are missing and cannot be downloaded here."""


class CheckpointError(UserError):
    """A checkpoint that is refused: wrong format, unsafe, or not matching the model."""


class ImageError(UserError):
    """An image file that cannot be used as a forget image."""
