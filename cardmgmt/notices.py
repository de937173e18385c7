"""The SMS notice (短信告知) a customer gets once the marketing system has the money: its words, in one place.

Mandarin, the customers' language.  A notice says what was credited (or,
for a reversal, taken back), the balance the marketing system reported
right after, and the reference to quote to customer service.  It never
carries a PIN (the card system has none to give) nor the holder's full name:
only the masked name (张*明) and the account number's last four digits,
because a text can be read by whoever holds the phone.
"""

# test-case-name: tests.marketing_iface.test_sms

from cardmgmt.money import format_fen

SIGNATURE = "【电费充值】"

RECHARGE = "{sig}尊敬的{name}用户，您尾号{tail}的电费账户已充值{amount}元，{balance}。充值流水号{ref}。"
REVERSAL = "{sig}尊敬的{name}用户，您尾号{tail}的电费账户的充值（流水号{original}）已冲正，扣回{amount}元，{balance}。冲正流水号{ref}。"


def _balance(fen: int) -> str:
    """当前余额12.50元, or 当前欠费46.20元 for arrears."""
    return f"当前余额{format_fen(fen)}元" if fen >= 0 else f"当前欠费{format_fen(-fen)}元"


def notice_text(*, ref: str, account_no: str, amount: int, balance: int, masked_name: str,
                reverses: str | None = None) -> str:
    """The text of the notice of one posting (``amount`` in fen; a reversal's is negative)."""
    fields = dict(sig=SIGNATURE, name=masked_name, tail=account_no[-4:], amount=format_fen(abs(amount)),
                  balance=_balance(balance), ref=ref)
    if reverses is None:
        return RECHARGE.format(**fields)
    return REVERSAL.format(original=reverses, **fields)
