"""Every text the console shows, in one catalogue: Mandarin first (the default), English second.

``text(lang, key)`` looks a key up; a key missing from the catalogue shows
as itself rather than failing the page (a test keeps the catalogue
complete for every key the templates and pages name).  The domain's own
one-line messages (``CardError``) are English, as on the command line; the
console puts a line of the operator's language before them, chosen by the
error's kind.
"""

# test-case-name: tests.console.test_i18n

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

CATALOGUE: dict[str, tuple[str, str]] = {
    "console": ("充值卡管理控制台", "Recharge-card console"),
    "lang.switch": ("English", "中文"),
    "signed_in_as": ("当前操作员", "Signed in as"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "operator": ("操作员", "Operator"),
    "password": ("密码", "Password"),
    "new_password": ("新密码", "New password"),
    "new_password_hint": ("仅当管理员给了您临时密码时填写", "Only if an administrator gave you a temporary password"),
    "download_csv": ("下载 CSV", "Download CSV"),
    "none": ("（无）", "(none)"),
    "yes": ("是", "yes"),
    "older": ("更早的记录", "Older entries"),
    "newest": ("最新记录", "Newest entries"),
    "show": ("显示", "Show"),
    "from": ("从", "From"),
    "to": ("至", "To"),
    "approve": ("批准", "Approve"),
    "reject": ("驳回", "Reject"),
    "comment": ("意见", "Comment"),
    "decision": ("审核", "Decision"),
    # Pages
    "page.requests": ("领卡申请", "Issue requests"),
    "page.stock": ("库存", "Stock"),
    "page.halls": ("营业厅", "Halls"),
    "page.audit": ("操作日志", "Operation log"),
    "page.health": ("系统状态", "System health"),
    "page.reports": ("报表", "Reports"),
    "page.reversals": ("冲正审核", "Reversals"),
    "page.signin": ("登录", "Sign in"),
    "page.error": ("出错了", "Something was refused"),
    "table.pending": ("待审核的申请", "Pending requests"),
    "table.history": ("全部申请", "All requests"),
    "table.by_hall": ("各营业厅库存（按状态）", "Stock by hall and state"),
    "table.by_state": ("全部卡（按状态）", "All cards by state"),
    "table.halls": ("营业厅层级（含下级汇总）", "Hall hierarchy (rolled up)"),
    "table.log": ("操作日志", "Operation log"),
    "table.servers": ("充值服务器（双机热备）", "Recharge servers (hot-standby pair)"),
    "table.outbox": ("营销系统待入账", "Outbox to the marketing system"),
    "table.lockouts": ("因输错卡密被锁定", "Locked out after wrong PINs"),
    "table.recharges": ("每日充值", "Recharges by day"),
    "table.recharges_by_channel": ("每日充值（按渠道）", "Recharges by day and channel"),
    "table.sales": ("每日售卡", "Sales by day"),
    "table.reversals": ("每日冲正（已批准）", "Reversals by day (approved)"),
    "table.stock_value": ("卡面值（按存放地点和状态）", "Card value by place and state"),
    "chart.recharges_by_day": ("每日充值金额（元）", "Recharges per day (yuan)"),
    "chart.sales_by_day": ("每日售卡金额（元）", "Sales per day (yuan)"),
    "chart.reversals_by_day": ("每日冲正金额（元）", "Reversals per day (yuan)"),
    "chart.unsold_value_by_place": ("各地点未售卡金额（元，在库与已出库）", "Unsold value by place (yuan, in stock and issued)"),
    "table.reversals_pending": ("待审核的冲正", "Reversals waiting for a decision"),
    "table.reversals_decided": ("最近审核的冲正", "Reversals decided last"),
    "chart.cards_by_state": ("各状态卡数", "Cards by state"),
    "chart.stock_value_by_hall": ("各营业厅未售库存金额（元）", "Unsold stock value by hall (yuan)"),
    # Columns
    "col.id": ("编号", "ID"),
    "col.face_value": ("面值（元）", "Face value (yuan)"),
    "col.quantity": ("数量", "Quantity"),
    "col.hall": ("营业厅", "Hall"),
    "col.requested_by": ("申请人", "Requested by"),
    "col.requested_at": ("申请时间（UTC）", "Requested at (UTC)"),
    "col.reason": ("事由", "Reason"),
    "col.status": ("状态", "Status"),
    "col.decided_by": ("审核人", "Decided by"),
    "col.comment": ("审核意见", "Comment"),
    "col.collected_by": ("领卡人", "Collected by"),
    "col.expired": ("已过期", "Expired"),
    "col.total": ("合计", "Total"),
    "col.state": ("状态", "State"),
    "col.cards": ("卡数", "Cards"),
    "col.code": ("代码", "Code"),
    "col.name": ("名称", "Name"),
    "col.level": ("级别", "Level"),
    "col.parent": ("上级", "Parent"),
    "col.unsold_cards": ("未售卡数", "Unsold cards"),
    "col.unsold_value": ("未售金额（元）", "Unsold value (yuan)"),
    "col.sold_cards": ("已售卡数", "Sold cards"),
    "col.sold_value": ("销售金额（元）", "Sales (yuan)"),
    "col.seq": ("序号", "No."),
    "col.at": ("时间（UTC）", "Time (UTC)"),
    "col.operator": ("操作员", "Operator"),
    "col.action": ("操作", "Action"),
    "col.object": ("对象", "Object"),
    "col.before": ("变更前", "Before"),
    "col.after": ("变更后", "After"),
    "col.server": ("服务器", "Server"),
    "col.address": ("地址", "Address"),
    "col.role": ("角色", "Role"),
    "col.heartbeat_age": ("距上次心跳（秒）", "Since last heartbeat (s)"),
    "col.holds_lease": ("持有任务租约", "Holds the jobs lease"),
    "col.lease_token": ("租约令牌", "Lease token"),
    "col.outbox_pending": ("待入账笔数", "Pending postings"),
    "col.oldest_pending": ("最早待入账（UTC）", "Oldest pending (UTC)"),
    "col.outbox_rejected": ("被拒待处理", "Rejected, waiting for a person"),
    "col.kind": ("类型", "Kind"),
    "col.value": ("号码", "Number"),
    "col.failures": ("错误次数", "Wrong PINs"),
    "col.last_failure": ("最近一次（UTC）", "Last (UTC)"),
    "col.lapses_at": ("解锁时间（UTC）", "Lapses at (UTC)"),
    "col.day": ("营业日", "Business day"),
    "col.recharges": ("充值笔数", "Recharges"),
    "col.amount": ("金额（元）", "Amount (yuan)"),
    "col.channel": ("渠道", "Channel"),
    "col.sales": ("销售笔数", "Sales"),
    "col.reversals": ("冲正笔数", "Reversals"),
    "col.posted": ("已入账", "Posted"),
    "col.place": ("存放地点", "Place"),
    "col.total_value": ("金额（元）", "Value (yuan)"),
    "col.recharge_ref": ("原充值流水号", "Recharge reference"),
    "col.account": ("户号", "Account"),
    "col.filed_by": ("提交人", "Filed by"),
    "col.filed_at": ("提交时间（UTC）", "Filed at (UTC)"),
    "col.decided_at": ("审核时间（UTC）", "Decided at (UTC)"),
    "col.post_status": ("入账状态", "Posting"),
    # Values
    "state.ordered": ("已订制", "ordered"),
    "state.produced": ("已生产", "produced"),
    "state.in_stock": ("在库", "in stock"),
    "state.issued": ("已出库", "issued"),
    "state.sold": ("已售", "sold"),
    "state.redeemed": ("已充值", "redeemed"),
    "state.voided": ("已作废", "voided"),
    "state.frozen": ("已冻结", "frozen"),
    "level.city": ("市公司", "city"),
    "level.county": ("县公司", "county"),
    "level.hall": ("营业厅", "hall"),
    "role.leader": ("主用", "leader"),
    "role.standby": ("备用", "standby"),
    "role.stopped": ("已停止", "stopped"),
    "role.down": ("无响应", "down"),
    "role.admin": ("卡管理员", "card administrator"),
    "role.finance": ("财务", "finance"),
    "role.auditor": ("审计", "auditor"),
    "lockout.caller": ("来电号码", "caller number"),
    "lockout.account": ("户号（未显示号码的来电）", "account (withheld numbers)"),
    "why_not.own": ("本人提交的申请，不能由本人审核", "Filed by you: someone else must decide it"),
    "why_not.role": ("您的角色不能审核申请", "Your role cannot decide requests"),
    "why_not.decided": ("已审核", "Already decided"),
    "why_not_reversal.own": ("本人提交的冲正，不能由本人审核", "Filed by you: someone else must decide it"),
    "why_not_reversal.role": ("您的角色不能审核冲正", "Your role cannot decide reversals"),
    "why_not_reversal.decided": ("已审核", "Already decided"),
    "reversal.approved": ("已批准", "approved"),
    "reversal.rejected": ("已驳回", "rejected"),
    "reversal.pending": ("待审核", "pending"),
    # The log's verdict
    "verdict.ok": ("操作日志完整", "The operation log is intact"),
    "verdict.tampered": ("操作日志被篡改！", "The operation log was tampered with!"),
    "verdict.entries": ("条记录，最新", "entries, head"),
    "verdict.run": ("校验整个操作日志（audit verify）", "Verify the whole operation log (audit verify)"),
    "verdict.not_for_role": ("您的角色不能校验操作日志", "Your role cannot verify the operation log"),
    "outbox.empty": ("营销系统入账无积压", "Nothing waits to be posted to the marketing system"),
    "servers.none": ("尚无充值服务器上报心跳", "No recharge server has reported yet"),
    # Outcomes
    "done.approved": ("已批准申请", "Approved request"),
    "done.rejected": ("已驳回申请", "Rejected request"),
    "done.reversal_approved": ("已批准冲正", "Approved reversal"),
    "done.reversal_rejected": ("已驳回冲正", "Rejected reversal"),
    "done.signed_out": ("您已退出", "You have signed out"),
    # Refusals, by kind; the domain's own line follows
    "error.authentication_failed": ("登录失败或会话已失效，请重新登录", "Not signed in, or the session has ended: please sign in"),
    "error.permission_denied": ("无权执行此操作，未做任何更改", "Not allowed; nothing was changed"),
    "error.not_found": ("找不到该对象，未做任何更改", "Not found; nothing was changed"),
    "error.illegal_transition": ("当前状态不允许此操作，未做任何更改", "Not possible in its present state; nothing was changed"),
    "error.conflict": ("已被他人更改，未做任何更改", "Someone else changed it first; nothing was changed"),
    "error.invalid_input": ("输入有误，未做任何更改", "The input is not valid; nothing was changed"),
    "error.card_error": ("操作被拒绝，未做任何更改", "Refused; nothing was changed"),
    "error.csrf": ("表单已过期或并非本控制台发出，未做任何更改", "The form is stale or was not sent by this console; nothing was changed"),
    "error.not_found_page": ("没有这个页面", "There is no such page"),
    "error.too_large": ("提交的内容过大", "What was sent is too large"),
    "error.database": ("数据库暂时无法响应，未做任何更改", "The database could not answer; nothing was changed"),
    "error.internal": ("内部错误，未做任何更改", "Internal error; nothing was changed"),
    "error.method": ("不支持此请求方式", "This request method is not supported here"),
}


def pick(query_lang: str | None, cookie_lang: str | None) -> str:
    """The language of this request: ``?lang=`` first, then the cookie, then Mandarin."""
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGUAGES:
            return candidate  # type: ignore[return-value]
    return DEFAULT


def text(lang: str, key: str) -> str:
    entry = CATALOGUE.get(key)
    if entry is None:
        return key
    return entry[LANGUAGES.index(lang) if lang in LANGUAGES else 0]


def error_lead(lang: str, code: str) -> str:
    """The operator's-language line shown before a refused action's own message, by the error's kind."""
    key = f"error.{code}"
    return text(lang, key if key in CATALOGUE else "error.card_error")
