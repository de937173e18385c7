"""The card domain's errors: one small hierarchy that every front end maps.

Each error carries a stable machine-readable ``code`` and a one-line message
that is safe to show an operator: no error message ever contains a PIN, a key
or a password.

Each kind also carries the one table every front end maps it by:
``http_status`` is what the recharge servers answer (a 4xx with
``{"error": code, "message": line}`` for a refused request; 503 for the
kinds that say this server is not fit to answer now, so the client tries
the other one), and ``exit_code`` is what the CLI exits with after printing
the line.  A kind declared anywhere (``nonces.Replayed``, the servers'
``ServerStartError``) states both, and a test walks every subclass to keep
it so.
"""

# test-case-name: tests.cardmgmt.test_errors


class CardError(Exception):
    """Base of every error the card domain raises on purpose."""

    code = "card_error"
    # The HTTP status and the CLI exit code of this kind: see the module docstring.
    http_status = 400
    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: front ends print it as it is.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(CardError):
    """A value given by the operator is malformed (a serial, an amount, a date)."""

    code = "invalid_input"
    http_status = 400
    exit_code = 1


class NotFound(CardError):
    """A named thing (batch, operator, factory, hall, request, card) does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = 1


class AlreadyExists(CardError):
    """Creating something whose name is already taken."""

    code = "already_exists"
    http_status = 409
    exit_code = 1


class AuthenticationFailed(CardError):
    """Unknown operator, wrong password or a disabled account."""

    code = "authentication_failed"
    http_status = 401
    exit_code = 1


class PermissionDenied(CardError):
    """The operator's role does not allow the action, or separation of duties forbids it."""

    code = "permission_denied"
    http_status = 403
    exit_code = 1


class IllegalTransition(CardError):
    """A card state change that the state machine does not allow."""

    code = "illegal_transition"
    http_status = 409
    exit_code = 1


class ConflictError(CardError):
    """The data changed under us (another operator got there first); nothing was changed."""

    code = "conflict"
    http_status = 409
    exit_code = 1


class InsufficientStock(CardError):
    """Not enough cards in stock to satisfy an issue request."""

    code = "insufficient_stock"
    http_status = 409
    exit_code = 1


class FileRejected(CardError):
    """A factory file failed verification or parsing; it was rejected whole."""

    code = "file_rejected"
    http_status = 422
    exit_code = 1


class KeyFileError(CardError):
    """A key file is missing, unreadable, too open, or belongs to another installation."""

    code = "key_error"
    http_status = 503
    exit_code = 1


class FileTooOpen(CardError):
    """A file holding secrets or personal data (an SQLite database) can be read by other users."""

    code = "file_too_open"
    # Like a key file that is too open: this server is not fit to answer until someone fixes it.
    http_status = 503
    exit_code = 1


class SchemaError(CardError):
    """The database is not at the schema revision this code expects."""

    code = "schema_error"
    http_status = 503
    exit_code = 1


def kinds() -> list[type[CardError]]:
    """Every kind of ``CardError`` defined so far (subclasses at any depth), base first."""
    found: list[type[CardError]] = [CardError]
    for kind in found:
        found.extend(k for k in kind.__subclasses__() if k not in found)
    return found
