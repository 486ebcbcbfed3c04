"""The one error type that the CLI turns into a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user or the environment: a file, an argument, a host.

    Library code raises it; only the CLI prints it and exits. Its message must be one line
    that names what was wrong and, where possible, what to do about it.
    """

    exit_code = 2
