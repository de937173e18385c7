"""The words of every hotline prompt, Mandarin first and English second, and of the number sounds.

``CATALOGUE`` maps each prompt id of ``ivr.dialog.Prompt`` to its text in
each language; ``voice_prompts.build`` renders them to sound files named by
id, and ``voice_prompts.check`` proves that none is missing.

The texts are promises to the caller, so they say only what is true at the
moment they are played: ``service-unavailable`` (played before any commit)
says the card was not used; ``result-unknown`` (a commit that got no
answer) says the result is not confirmed and never that the card was not
used; ``recharge-cancelled`` follows a declined quote, when no commit was sent.
The dialplan says ``service-unavailable`` when the dialog is lost mid-call
only if no commit was sent in the call (``system-error`` otherwise).

``NUMBER_SOUNDS`` are the ``digits/...`` files that Asterisk's ``SAY DIGITS``
and ``SAY NUMBER`` play for each language, by the names ``main/say.c`` uses:
English (``ast_say_number_full_en``) needs 0-19, the tens, ``hundred``,
``thousand``, ``million``; Mandarin (``ast_say_number_full_zh``, chosen for
language ``zh``) needs 0-9, the tens (``digits/10`` is 十, ``digits/20`` is
二十 ...), ``hundred`` (百), ``thousand`` (千), ``wan`` (万) and ``yi`` (亿);
both say ``minus`` for negative numbers.
"""

# test-case-name: tests.voice_prompts.test_catalogue

LANGS = ("zh", "en")

CATALOGUE: dict[str, dict[str, str]] = {
    # --- welcome and account -------------------------------------------------------------
    "welcome": {
        "zh": "您好，欢迎致电电费充值卡充值热线。普通话服务请按1，人工服务请随时按0。For English, press 2.",
        "en": "Welcome to the electricity recharge card hotline. For Mandarin, press 1. For English, press 2. "
              "For an agent, press 0 at any time.",
    },
    "enter-account": {
        "zh": "请输入您的十位电费户号，以井号键结束。返回上一步请按星号键。",
        "en": "Please enter your ten-digit electricity account number, followed by the hash key. "
              "To go back, press star.",
    },
    "invalid-account": {
        "zh": "户号应为十位数字。",
        "en": "The account number must have ten digits.",
    },
    "you-entered": {
        "zh": "您输入的户号是",
        "en": "You entered the account number",
    },
    "confirm-account": {
        "zh": "确认请按1，重新输入请按2。",
        "en": "If this is correct, press 1. To enter it again, press 2.",
    },
    "unknown-account": {
        "zh": "对不起，没有找到这个户号，请核对后重新输入。",
        "en": "Sorry, we could not find this account number. Please check it and enter it again.",
    },
    "account-found": {
        "zh": "已查到您的户号。",
        "en": "We have found your account.",
    },
    "account-arrears": {
        "zh": "您目前欠费",
        "en": "Your account is in arrears by",
    },
    "account-balance": {
        "zh": "您目前的余额是",
        "en": "Your current balance is",
    },
    # --- card ----------------------------------------------------------------------------
    "enter-pin": {
        "zh": "请刮开充值卡背面的密码区，输入十八位卡密，以井号键结束。返回上一步请按星号键。",
        "en": "Please scratch the panel on the back of your card and enter the eighteen-digit PIN, "
              "followed by the hash key. To go back, press star.",
    },
    "invalid-pin": {
        "zh": "卡密应为十八位数字。",
        "en": "The PIN must have eighteen digits.",
    },
    "wrong-pin": {
        "zh": "对不起，卡密不正确。",
        "en": "Sorry, that PIN is not correct.",
    },
    "attempts-left": {
        "zh": "剩余可尝试次数为",
        "en": "Attempts remaining:",
    },
    "card-used": {
        "zh": "这张充值卡已经使用过，不能再次充值。",
        "en": "This card has already been used and cannot be used again.",
    },
    "card-voided": {
        "zh": "这张充值卡已经作废，不能使用。",
        "en": "This card has been voided and cannot be used.",
    },
    "card-frozen": {
        "zh": "这张充值卡已被冻结，请到营业厅咨询。",
        "en": "This card is frozen. Please ask at a business hall.",
    },
    "card-expired": {
        "zh": "这张充值卡已经过期。",
        "en": "This card has expired.",
    },
    "card-not-issued": {
        "zh": "这张充值卡尚未发售，请到营业厅咨询。",
        "en": "This card has not been released for sale. Please ask at a business hall.",
    },
    "card-not-sold": {
        "zh": "这张充值卡尚未售出，不能充值。请持购卡凭证到售卡营业厅咨询。",
        "en": "This card has not been sold yet and cannot be used. "
              "Please take your receipt to the business hall that sold it.",
    },
    "card-held": {
        "zh": "这张充值卡正在另一通电话中使用，请几分钟后再试。",
        "en": "This card is being used in another call. Please try again in a few minutes.",
    },
    "locked-out": {
        "zh": "卡密错误次数过多，电话充值已暂停。请二十四小时后再试，或到营业厅办理。",
        "en": "There have been too many wrong PINs, so phone recharge is paused. "
              "Please try again after twenty-four hours, or visit a business hall.",
    },
    "hold-expired": {
        "zh": "确认等待时间已过，本次充值没有完成，请重新输入卡密。",
        "en": "The time to confirm has run out and the recharge was not made. Please enter the PIN again.",
    },
    # --- recharge ------------------------------------------------------------------------
    "card-value": {
        "zh": "这张充值卡的面值是",
        "en": "The value of this card is",
    },
    "confirm-recharge": {
        "zh": "确认充值请按1，取消请按2。",
        "en": "To credit this card to your account, press 1. To cancel, press 2.",
    },
    "recharge-cancelled": {
        "zh": "本次充值已取消，您的充值卡没有被使用。",
        "en": "The recharge has been cancelled. Your card has not been used.",
    },
    "please-wait": {
        "zh": "正在为您充值，请稍候。",
        "en": "Recharging your account, please wait.",
    },
    "recharge-ok": {
        "zh": "充值成功，充值金额为",
        "en": "Your recharge was successful. The amount credited is",
    },
    "recharge-ref": {
        "zh": "充值流水号为",
        "en": "Your recharge reference number is",
    },
    "another-card": {
        "zh": "继续用另一张充值卡充值请按1，结束请按2。",
        "en": "To recharge with another card, press 1. To finish, press 2.",
    },
    # --- trouble and goodbye --------------------------------------------------------------
    "no-input": {
        "zh": "对不起，我们没有收到您的输入。",
        "en": "Sorry, we did not receive your entry.",
    },
    "invalid-choice": {
        "zh": "对不起，您的选择无效。",
        "en": "Sorry, that is not a valid choice.",
    },
    "too-many-tries": {
        "zh": "对不起，您的尝试次数已超过限制。",
        "en": "Sorry, there have been too many attempts.",
    },
    "service-unavailable": {
        "zh": "对不起，系统暂时无法办理充值。您的充值卡没有被使用，请稍后再拨。",
        "en": "Sorry, recharging is not available at the moment. Your card has not been used. "
              "Please call again later.",
    },
    "result-unknown": {
        "zh": "对不起，我们暂时无法确认本次充值的结果。请保留您的充值卡，稍后再拨打本热线查询。",
        "en": "Sorry, we cannot confirm the result of this recharge at the moment. "
              "Please keep your card and call this hotline again later to check.",
    },
    "system-error": {
        "zh": "对不起，系统暂时无法继续为您服务，请稍后再拨。",
        "en": "Sorry, we cannot continue with your call at the moment. Please call again later.",
    },
    "transfer-agent": {
        "zh": "正在为您转接人工服务，请稍候。",
        "en": "Please hold while we transfer you to an agent.",
    },
    "agents-busy": {
        "zh": "对不起，人工坐席暂时无人接听，请稍后再拨。",
        "en": "Sorry, no agent is free to take your call at the moment. Please call again later.",
    },
    "goodbye": {
        "zh": "感谢您的来电，再见。",
        "en": "Thank you for calling. Goodbye.",
    },
    # --- units after an amount (see ivr.agi_channel.amount_parts) -------------------------
    "currency-yuan": {"zh": "元", "en": "yuan"},
    "currency-jiao": {"zh": "角", "en": "jiao"},
    "currency-fen": {"zh": "分", "en": "fen"},
}

_ZH_DIGITS = "零一二三四五六七八九"
_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

NUMBER_SOUNDS: dict[str, dict[str, str]] = {
    "zh": {
        **{f"digits/{n}": _ZH_DIGITS[n] for n in range(10)},
        "digits/10": "十",
        **{f"digits/{n * 10}": _ZH_DIGITS[n] + "十" for n in range(2, 10)},
        "digits/hundred": "百",
        "digits/thousand": "千",
        "digits/wan": "万",
        "digits/yi": "亿",
        "digits/minus": "负",
    },
    "en": {
        **{f"digits/{n}": word for n, word in enumerate(_EN_ONES)},
        **{f"digits/{(n + 2) * 10}": word for n, word in enumerate(_EN_TENS)},
        "digits/hundred": "hundred",
        "digits/thousand": "thousand",
        "digits/million": "million",
        "digits/minus": "minus",
    },
}


def text(prompt_id: str, lang: str) -> str:
    """The words of one prompt (or number sound) in one language; ``KeyError`` if there are none."""
    if prompt_id.startswith("digits/"):
        return NUMBER_SOUNDS[lang][prompt_id]
    return CATALOGUE[prompt_id][lang]
