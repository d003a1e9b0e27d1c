"""The one exception type a user can cause."""


class ChannelcutError(Exception):
    """A problem with the user's input: the message says which file, what is wrong, what to do.

    The CLI prints it as one line and exits non-zero; the RKNN facade logs it as an `E` line and
    returns a non-zero code. Anything else that escapes is a bug in channelcut.
    """


class VerificationError(ChannelcutError):
    """The cut model's outputs differ from the original's: an internal error, nothing written."""
