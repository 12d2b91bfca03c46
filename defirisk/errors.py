"""Exception types shared across packages. CLI maps InputError to exit code 2."""


class DefiriskError(Exception):
    """Base class for errors defirisk reports to the user."""


class InputError(DefiriskError, ValueError):
    """Bad user input: a file, row, field, address or protocol that is wrong. Message names it."""


class ChainError(DefiriskError):
    """A chain could not be read as expected (unreachable, wrong chain id, no code at an address)."""


class ConvergenceError(DefiriskError, ArithmeticError):
    """A numerical procedure did not converge within its limits."""
