"""The card domain's errors: one small hierarchy that every front end maps.

Each error carries a stable machine-readable ``code`` and a one-line message
that is safe to show an operator: no error message ever contains a PIN, a key
or a password.  The CLI turns any ``CardError`` into that line and a non-zero
exit code; the recharge servers will turn it into an HTTP 4xx with the code.
"""

# test-case-name: tests.cardmgmt.test_errors


class CardError(Exception):
    """Base of every error the card domain raises on purpose."""

    code = "card_error"

    def __init__(self, message: str) -> None:
        # One line, always: front ends print it as it is.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(CardError):
    """A value given by the operator is malformed (a serial, an amount, a date)."""

    code = "invalid_input"


class NotFound(CardError):
    """A named thing (batch, operator, factory, hall, request, card) does not exist."""

    code = "not_found"


class AlreadyExists(CardError):
    """Creating something whose name is already taken."""

    code = "already_exists"


class AuthenticationFailed(CardError):
    """Unknown operator, wrong password or a disabled account."""

    code = "authentication_failed"


class PermissionDenied(CardError):
    """The operator's role does not allow the action, or separation of duties forbids it."""

    code = "permission_denied"


class IllegalTransition(CardError):
    """A card state change that the state machine does not allow."""

    code = "illegal_transition"


class ConflictError(CardError):
    """The data changed under us (another operator got there first); nothing was changed."""

    code = "conflict"


class InsufficientStock(CardError):
    """Not enough cards in stock to satisfy an issue request."""

    code = "insufficient_stock"


class FileRejected(CardError):
    """A factory file failed verification or parsing; it was rejected whole."""

    code = "file_rejected"


class KeyFileError(CardError):
    """A key file is missing, unreadable, too open, or belongs to another installation."""

    code = "key_error"


class FileTooOpen(CardError):
    """A file holding secrets or personal data (an SQLite database) can be read by other users."""

    code = "file_too_open"


class SchemaError(CardError):
    """The database is not at the schema revision this code expects."""

    code = "schema_error"
